"""How the dosage one-hots of one gene compress and read under candidate Zarr v3 layouts (the store's choice).

Takes a real gene of a built store (its people and variants), writes its dosage one-hots in each layout, and
prints bytes per person-window, write and read rates (windows/s, one process). Reads take whole blocks of
32 people at random offsets (what a loader that reads chunk-aligned blocks does) and 32 random people.

    python benchmarks/store_layout.py --store demo/whole_blood.zarr [--gene ENSG...]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, TransposeCodec, ZstdCodec

from performer_store.encode import add_reference
from performer_store.store import Store, directory_size

LAYOUTS = {  # name: (literal one-hot or difference from the reference, people per chunk, filters, compressor)
    "one-hot, chunk 1 person, zstd 3": ("literal", 1, (), ZstdCodec(level=3)),
    "one-hot, chunk 32 people, zstd 3": ("literal", 32, (), ZstdCodec(level=3)),
    "one-hot, chunk 32 people, transpose people-fastest + zstd 3": ("literal", 32, (TransposeCodec(order=(1, 2, 0)),), ZstdCodec(level=3)),
    "difference, chunk 1 person, zstd 5": ("delta", 1, (), ZstdCodec(level=5)),
    "difference, chunk 32 people, blosc zstd bitshuffle": ("delta", 32, (), BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")),
    "difference, chunk 32 people, transpose people-fastest + zstd 5": ("delta", 32, (TransposeCodec(order=(1, 2, 0)),), ZstdCodec(level=5)),
    "difference, chunk 32 people, zstd 3": ("delta", 32, (), ZstdCodec(level=3)),
    "difference, chunk 32 people, zstd 9": ("delta", 32, (), ZstdCodec(level=9)),
    "difference, chunk 32 people, zstd 5 (the store's layout)": ("delta", 32, (), ZstdCodec(level=5)),
}


def measure(path: Path, data: np.ndarray, reference: np.ndarray, kind: str, people: int, filters, compressor) -> dict:
    """Write all people block by block, then read blocks and random people; sizes and rates."""
    n, width = data.shape[:2]
    array = zarr.create_array(str(path), shape=data.shape, chunks=(people, width, 4), dtype="float16",
                              filters=filters, compressors=compressor, fill_value=0, config={"write_empty_chunks": True})
    started = time.perf_counter()
    for first in range(0, n, 32):
        block = data[first : first + 32]
        array[first : first + 32] = block if kind == "delta" else add_reference(block, reference)
    write = n / (time.perf_counter() - started)
    rng = np.random.default_rng(0)
    started, read = time.perf_counter(), 0
    for _ in range(8):
        first = int(rng.integers(0, n // 32)) * 32
        block = array[first : first + 32]
        if kind == "delta":
            block = add_reference(block, reference)
        read += len(block)
    block_rate = read / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(2):
        rows = np.sort(rng.choice(n, 32, replace=False))
        block = array.get_orthogonal_selection((rows, slice(None), slice(None)))
        if kind == "delta":
            add_reference(block, reference)
    random_rate = 64 / (time.perf_counter() - started)
    return {"bytes": directory_size(path) / n, "write": write, "block_read": block_rate, "random_read": random_rate}


def main() -> None:
    """Print one line per layout."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--gene", help="Gene ID (default: the gene with the median number of variants).")
    args = parser.parse_args()
    store = Store(args.store)
    genes = store.genes.sort_values("gene_n_variants")
    gene = args.gene or genes.index[len(genes) // 2]
    group = store.gene(gene)
    data = group["dosage_onehot_delta"][:]
    reference = group["reference_onehot"][:]
    print(f"gene {gene}: {data.shape[0]} people x {data.shape[1]} bp, {group['variant_position'].shape[0]} SNV rows")
    print(f"{'layout':60s} {'B/window':>9s} {'write/s':>8s} {'block read/s':>13s} {'random read/s':>14s}")
    work = Path(tempfile.mkdtemp(prefix="pstore-layout-"))
    for name, (kind, people, filters, compressor) in LAYOUTS.items():
        result = measure(work / f"{abs(hash(name))}.zarr", data, reference, kind, people, filters, compressor)
        print(f"{name:60s} {result['bytes']:9,.0f} {result['write']:8,.0f} {result['block_read']:13,.0f} {result['random_read']:14,.0f}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
