"""Loader throughput: dosage one-hots delivered as float16 torch tensors, per CPU-second, vs GenVarLoader.

Every reader delivers the same micro-batches (32 people of one gene, (32, 49152, 4) float16 tensors in the
main process), through a torch DataLoader with 0, 1 and 2 worker processes (fork; a fresh loader per pass, so
workers start per pass). Ours is `performer_store.loader.BatchLoader`: a worker reads a block (4 micro-batches
of a gene) at a time, 2 blocks ahead; GenVarLoader's DataLoader reads micro-batches, 4 ahead per worker:

- `stored`: `GeneReader(read_path="stored")`, a fresh reader per pass: it decodes each stored chunk of
  `dosage_onehot_delta` its batches touch (once: each chunk's one-hots at the gene's variant positions are
  kept in the reader's cache; a block's chunks are decoded together), as in the first epoch of `pstore
  train`. `stored*` (0 workers only) has read the plan once before timing, as a process that keeps its
  reader across epochs does (`pstore train`'s workers are persistent) while the chunks' one-hots fit
  `loader.CHUNK_CACHE_BYTES`.
- `expand`: `GeneReader(read_path="expand")`, the reference and per-person changes derived from the
  variant table, a fresh reader per pass, so every process builds the compact form of each gene it meets;
  `expand*` (0 workers only) has built them (and read each gene's targets and reference) before timing.
- Both are expanded by `BatchLoader`'s `Expander` in the main process (what `Batch.to("cpu")` does): a few
  recycled buffers, rewritten only where the gene's people differ while the gene stays the same.
- `gvl`: GenVarLoader (`pip install -e '.[bench]'`) reading the two haplotypes of the same windows and
  people (its rust kernels serial, `parallel=False`: with fork workers its multithreaded kernels hang in
  the child, and serial reads cost fewer CPU-seconds), then the dosage one-hot by a lookup table in
  numpy: the two haplotypes' bytes of a position form one 16-bit index into a 65,536-row table of
  ready-made float16 rows, (one-hot(hap1) + one-hot(hap2)) / 2, N 0.25. `gvl-out` writes the lookup into
  two alternating preallocated output buffers (no page faults for fresh 12.6 MB outputs), the baseline's
  best case. `gvl-threads` (0 workers) is GenVarLoader's default, its rust kernels multithreaded.

Three orders of reading: `epoch`, the training plan of fold 0 (`loader.epoch_blocks` +
`loader.micro_batches`: each gene's train people drawn in blocks of 128, blocks of all genes shuffled,
micro-batches of 32); `epoch-chunked`, the same with people drawn chunk by chunk (what `pstore train` uses
with the stored path, so a micro-batch touches two or three stored chunks); and `sequential`, all people of
each gene in store order, 32 at a time (aligned with the stored 32-person chunks).

Goals (the issue's): the stored path at least GenVarLoader's rate, the expansion path twice it. The
comparison takes, per plan, the best windows/CPU-s over worker counts: of `stored` (never `stored*`, which
reads nothing), of `expand` and `expand*`, and of all GenVarLoader variants (`gvl`, `gvl-out`, `gvl-threads`).

CPU time: `time.process_time()` of this process (all its threads) plus `resource.getrusage(RUSAGE_CHILDREN)`
(user + system) of the DataLoader workers, which count once they have exited and been waited for: a
non-persistent DataLoader joins them when its last batch is out, and the run waits for
`multiprocessing.active_children()` to be empty before reading the counters. Worker start-up (fork) and
shutdown are included, as they are every epoch. Torch runs with `--torch-threads` (default 1) intra-op
threads in the main process; DataLoader workers always use 1. Wall-clock windows/s are printed beside. Each
reader runs `--repeats` passes (default 3), in rounds over all readers of a plan and worker count, and the
pass of median CPU time counts (this machine's rates move by 10-30% between passes).

GenVarLoader needs bi-allelic, non-symbolic records (it refuses the demo VCF: multi-allelic sites, a
symbolic `<DEL>`), so its input is `bcftools norm -m- | bcftools view -v snps`: the method's definition
(SNVs only, multi-allelic sites used per ALT), i.e. the variants the store encodes. Correctness is checked
in the same run: the readers' one-hots of `--check-people` people of every gene against
`Store.dosage_onehot`, position by position.

    python benchmarks/loader.py [--store demo/whole_blood.zarr] [--cohort demo/cohort] [--workers 0,1,2]
                                [--plans epoch,epoch-chunked,sequential] [--check-people 128] [--torch-threads 1] [--repeats 3]

Without `--store`, the store is built from `--cohort` (or from a simulated demo cohort) in a temporary
directory; without `--cohort`, the inputs are found from the store's provenance (checksums compared).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import multiprocessing
import os
import resource
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

os.environ.setdefault("TQDM_DISABLE", "1")  # GenVarLoader's progress bars

import numcodecs
import numpy as np
import torch

from performer_store import loader, schemas
from performer_store.encode import changed_positions, channels_at, onehots_at
from performer_store.expander import BUFFERS, Expander
from performer_store.store import Store

MICRO_BATCH = 32
BLOCK = 128


# --- inputs -------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cohort_inputs(store: Store, cohort: Path | None) -> tuple[Path, Path]:
    """(FASTA, VCF) the store was built from: from `--cohort`, or from its provenance when they still match."""
    if cohort is not None:
        return cohort / "reference.fa", cohort / "genotypes.vcf.gz"
    inputs = store.attrs["provenance"]["inputs"]
    paths = []
    for name in ("fasta", "vcf"):
        path = Path(inputs[name]["path"])
        if not path.is_file() or sha256(path) != inputs[name]["checksum"]:
            raise SystemExit(f"store {store.path}: its {name} {path} is missing or changed since the build; pass --cohort DIR")
        paths.append(path)
    return paths[0], paths[1]


def prepare_store(args: argparse.Namespace, work: Path) -> tuple[Store, Path, Path]:
    """The store to read and its FASTA and VCF, simulating and building what was not given."""
    if args.store is not None:
        store = Store(args.store)
        return (store, *cohort_inputs(store, args.cohort))
    from performer_store.build import BuildConfig, build_store

    cohort = args.cohort
    if cohort is None:
        from performer_store.simulate import simulate_cohort

        cohort = work / "cohort"
        print(f"simulating the demo cohort (seed 1) in {cohort}", flush=True)
        simulate_cohort(cohort, individuals=670, genes=24, seed=1, multiallelic=True, indels=True)
    config = BuildConfig(store=work / "store.zarr", fasta=cohort / "reference.fa", vcf=cohort / "genotypes.vcf.gz",
                         gtf=cohort / "annotation.gtf.gz", expression=cohort / "expression.bed.gz", tissue="whole_blood",
                         workers=2, progress=False)
    print(f"building the store in {config.store}", flush=True)
    build_store(config)
    return Store(config.store), config.fasta, config.vcf


def write_gvl(store: Store, fasta: Path, vcf: Path, work: Path) -> tuple[Path, int, float, str]:
    """A GenVarLoader dataset of the store's windows and people from the VCF's SNVs.

    Returns its path, the SNV rows, the seconds taken and what GenVarLoader said of the VCF as it is (a copy
    is offered first: GenVarLoader writes its own index beside the VCF).
    """
    import genvarloader as gvl
    import polars as pl

    genes = store.genes
    bed = pl.DataFrame({"chrom": list(genes.gene_contig), "chromStart": genes.gene_window_start.astype(np.int64).tolist(),
                        "chromEnd": genes.gene_window_stop.astype(np.int64).tolist(), "name": list(genes.gene_id)})
    samples = [str(s) for s in store.sample_id]
    as_is = work / "as_is" / vcf.name
    as_is.parent.mkdir()
    for suffix in ("", ".tbi", ".csi"):
        if Path(f"{vcf}{suffix}").is_file():
            shutil.copy(f"{vcf}{suffix}", f"{as_is}{suffix}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            gvl.write(work / "as_is.gvl", bed, as_is, samples=samples)
        verdict = "accepted"
    except ValueError as error:
        verdict = "refused: " + " ".join(str(error).split())
    started = time.perf_counter()
    snvs = work / "snvs.vcf.gz"
    subprocess.run(f"bcftools norm -m- -Ou {vcf} | bcftools view -v snps -Oz -o {snvs} && bcftools index -f -t {snvs}",
                   shell=True, check=True, capture_output=True)
    rows = int(subprocess.run(["bcftools", "index", "-n", str(snvs)], check=True, capture_output=True, text=True).stdout)
    path = work / "windows.gvl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # polars' StringCache inside gvl.write
        gvl.write(path, bed, snvs, samples=samples, overwrite=True)
    return path, rows, time.perf_counter() - started, verdict


# --- GenVarLoader as a reader -------------------------------------------------------------------------


def _pair_table() -> np.ndarray:
    """(65,536,) uint64: for the bytes b1 | b2 << 8 of two haplotypes, the 4 float16 of their dosage one-hot."""
    code = np.full(256, 4, dtype=np.intp)
    for i, base in enumerate(b"ACGT"):
        code[base] = code[base + 32] = i
    onehot = np.full((5, 4), 0.25, dtype=np.float32)
    onehot[:4] = np.eye(4)
    pair = ((onehot[:, None] + onehot[None]) / 2).reshape(25, 4).astype(np.float16).view(np.uint64).ravel()
    byte = np.arange(65536)
    return pair[code[byte & 0xFF] * 5 + code[byte >> 8]]


PAIR_TABLE = _pair_table()


def dosage_from_haplotypes(haplotypes: np.ndarray, out: np.ndarray | None = None) -> torch.Tensor:
    """(B, 2, L) S1 haplotypes to (B, L, 4) float16 dosage one-hots, one table lookup per position (into the
    first B rows of `out`, a (rows, L) uint64 buffer, when given)."""
    raw = haplotypes.view(np.uint8)
    index = raw[:, 0].astype(np.uint16) | (raw[:, 1].astype(np.uint16) << 8)
    words = PAIR_TABLE.take(index, mode="clip", out=None if out is None else out[: len(index)])
    return torch.from_numpy(words.view(np.float16).reshape(*index.shape, 4))


class GvlBatches(torch.utils.data.Dataset):
    """The same micro-batches read by GenVarLoader: region of the gene, people by name; the one-hots written
    into `outputs` alternating preallocated buffers when asked (the consumer holds one while the next is made)."""

    def __init__(self, dataset, store: Store, batches: list[loader.MicroBatch], outputs: int = 0):
        self.dataset = dataset
        self.batches = batches
        self.region = {g: i for i, g in enumerate(dataset.regions["name"].to_list())}
        by_name = {name: i for i, name in enumerate(dataset.samples)}
        self.person = np.array([by_name[str(s)] for s in store.sample_id], dtype=np.int64)
        length = int(dataset.regions["chromEnd"][0] - dataset.regions["chromStart"][0])
        self.outputs = [np.empty((MICRO_BATCH, length), np.uint64) for _ in range(outputs)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> torch.Tensor:
        batch = self.batches[index]
        out = self.outputs[index % len(self.outputs)] if self.outputs else None
        return dosage_from_haplotypes(self.dataset[self.region[batch.gene_id], self.person[batch.rows]][0], out)


def open_gvl(path: Path, fasta: Path, parallel: bool | str):
    """A GenVarLoader dataset yielding fixed-length haplotypes on the forward strand."""
    import genvarloader as gvl

    dataset = gvl.Dataset.open(path, reference=fasta, rc_neg=False).with_seqs("haplotypes")
    return dataset.with_len(int(dataset.regions["chromEnd"][0] - dataset.regions["chromStart"][0])).with_settings(parallel=parallel)


# --- timing -------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed pass."""

    plan: str
    reader: str
    workers: int
    windows: int
    wall: float
    cpu: float


def ours(store: Store, read_path: str, batches: list[loader.MicroBatch], workers: int, warm: bool = False) -> Callable[[], Iterator[torch.Tensor]]:
    """A pass of a fresh GeneReader; when `warm`, one that has read every batch of the plan once before."""
    reader = loader.GeneReader(store.path, read_path=read_path)
    if warm:
        for batch in batches:
            reader.read(batch)
    return lambda: (onehot for _, onehot, _ in loader.iterate(reader, batches, workers, "cpu"))


def gvl_pass(dataset, store: Store, batches: list[loader.MicroBatch], workers: int, outputs: int = 0) -> Callable[[], Iterator[torch.Tensor]]:
    """A pass of GenVarLoader through a DataLoader configured like `loader.BatchLoader`."""
    data = torch.utils.data.DataLoader(GvlBatches(dataset, store, batches, outputs), batch_size=None, shuffle=False,
                                       num_workers=workers, persistent_workers=False, prefetch_factor=4 if workers else None)
    return lambda: iter(data)


def timed(plan: str, reader: str, workers: int, make: Callable[[], Iterator[torch.Tensor]], expected: int) -> Run:
    """Windows, wall seconds and CPU seconds (this process + its exited workers) of one pass."""
    gc.collect()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, wall = time.process_time(), time.perf_counter()
    windows = 0
    for onehot in make():
        assert onehot.dtype == torch.float16 and onehot.ndim == 3
        windows += onehot.shape[0]
    deadline = time.perf_counter() + 30
    while multiprocessing.active_children() and time.perf_counter() < deadline:  # joins exited workers: their CPU counts
        time.sleep(0.01)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    assert windows == expected, (reader, windows, expected)
    return Run(plan, reader, workers, windows, wall, cpu)


def median_run(passes: list[Run]) -> Run:
    """The pass of median CPU time (machines are noisy; rounds interleave the readers)."""
    return sorted(passes, key=lambda r: r.cpu)[len(passes) // 2]


def plans(store: Store, names: list[str]) -> dict[str, list[loader.MicroBatch]]:
    """Micro-batches of the training epoch (fold 0, epoch 0) and of a sequential pass over every person."""
    genes = list(store.genes.index)
    out = {}
    train = {g: loader.split_rows(store, g, 0, "train") for g in genes}
    seed = int(store.attrs.get("seed", 0))
    for name, chunk in (("epoch", None), ("epoch-chunked", schemas.PEOPLE_PER_CHUNK)):
        if name in names:
            out[name] = loader.micro_batches(loader.epoch_blocks(train, 0, seed, BLOCK, chunk), MICRO_BATCH)
    if "sequential" in names:
        out["sequential"] = loader.evaluation_batches({g: np.arange(len(store.sample_id)) for g in genes}, MICRO_BATCH)
    return out


# --- correctness and where the time goes --------------------------------------------------------------


def check(store: Store, gvl_dataset, people: int) -> list[str]:
    """Each reader's one-hots of the first `people` people (a seeded random sample) of every gene vs the store."""
    genes = list(store.genes.index)
    rows = np.arange(min(people, len(store.sample_id)))
    batches = loader.evaluation_batches({g: rows for g in genes}, MICRO_BATCH)
    readers: dict[str, Callable[[loader.MicroBatch], torch.Tensor]] = {}
    for path in loader.READ_PATHS:
        reader = loader.GeneReader(store.path, read_path=path)
        readers[path] = lambda b, r=reader: r.read(b).to("cpu")[0]
    if gvl_dataset is not None:
        gvl_batches = GvlBatches(gvl_dataset, store, [])
        readers["gvl"] = lambda b: gvl_batches.dataset[gvl_batches.region[b.gene_id], gvl_batches.person[b.rows]][0]
    equal = dict.fromkeys(readers, 0)
    differing: dict[str, list[str]] = {name: [] for name in readers}
    for batch in batches:
        truth = store.dosage_onehot(batch.gene_id, slice(int(batch.rows[0]), int(batch.rows[-1]) + 1))
        for name, read in readers.items():
            got = read(batch)
            got = dosage_from_haplotypes(got).numpy() if name == "gvl" else got.numpy()
            same = (got == truth).all(axis=(1, 2))
            equal[name] += int(same.sum())
            if not same.all():
                where = np.argwhere((got != truth).any(axis=2))
                differing[name] += [f"{batch.gene_id} person {batch.rows[i]} position {p}" for i, p in where[:3]]
    total = len(genes) * len(rows)
    lines = [f"check: {len(genes)} genes x {len(rows)} people = {total} windows vs Store.dosage_onehot, position by position: "
             + ", ".join(f"{name} {n}/{total} equal" for name, n in equal.items())]
    lines += [f"  {name} differs at e.g. {'; '.join(d[:3])}" for name, d in differing.items() if d]
    return lines


def per_batch(function: Callable[[], object], repeats: int = 10) -> float:
    """CPU milliseconds of one call (after one untimed call)."""
    function()
    started = time.process_time()
    for _ in range(repeats):
        function()
    return (time.process_time() - started) / repeats * 1000


def block_reads(store: Store, batches: dict[str, list[loader.MicroBatch]], repeats: int) -> list[str]:
    """First-pass windows/CPU-s of the stored path in this process, a block at a time (`GeneReader.read_together`,
    what `BatchLoader` does) against micro-batch by micro-batch (`GeneReader.read`), in alternating rounds."""
    def one_pass(plan: list[loader.MicroBatch], together: bool) -> float:
        reader, expander = loader.GeneReader(store.path, read_path="stored"), Expander()
        started = time.process_time()
        held = None  # the consumer holds the last batch while the next is built, as a training loop does
        for item in loader.work_items(plan) if together else [(b,) for b in plan]:
            for batch in reader.read_together(item) if together else [reader.read(item[0])]:
                held = batch.to("cpu", expander)[0]
        del held
        return sum(len(b.rows) for b in plan) / (time.process_time() - started)

    lines = ["stored, first pass in this process: a block's chunks decoded together vs micro-batch by micro-batch (windows/CPU-s, median)"]
    for name, plan in batches.items():
        rates = np.array([[one_pass(plan, together) for together in (True, False)] for _ in range(repeats)])
        together, single = np.median(rates, axis=0)
        lines.append(f"  {name:<14} by block {together:8,.0f}   by micro-batch {single:8,.0f}   = {together / single:.2f}x")
    return lines


def breakdown(store: Store, gvl_dataset) -> list[str]:
    """CPU ms per 32-window micro-batch of each step (in this process, warm caches, the same batch again and
    again: the cache-friendliest case), on the sequential plan's 2nd batch of a gene."""
    genes = list(store.genes.index)
    gene_id = genes[len(genes) // 2]
    rows = np.arange(MICRO_BATCH, 2 * MICRO_BATCH)
    micro = loader.MicroBatch(gene_id, rows, True, 1)
    delta = store.gene(gene_id)["dosage_onehot_delta"]
    stored = loader.GeneReader(store.path, read_path="stored")
    files, reference = stored.chunk_files(gene_id), stored.small(gene_id)[1]
    scratch = files.buffer()
    block = files.read(1, scratch).copy()
    expanding = loader.GeneReader(store.path, read_path="expand")
    started = time.process_time()
    compact = expanding.compact(gene_id)
    compact_ms = (time.process_time() - started) * 1000
    batch = expanding.read(micro)
    cycle = [expanding.read(loader.MicroBatch(g, rows, True, 1)) for g in genes[: BUFFERS + 1]]
    recycled, cycling, fresh = Expander(), Expander(), Expander(buffers=0)
    held: list[torch.Tensor] = []
    positions, reference_at = stored.positions(gene_id), reference.reshape(-1)[stored.flat(gene_id)]

    def at_positions() -> torch.Tensor:
        """What `GeneReader.chunk_onehots` does after the decode."""
        return torch.from_numpy(channels_at(block, positions)) + reference_at

    def switching() -> None:
        """More genes in turn than the expander keeps buffers, the consumer holding the last batch: every call
        rewrites a whole buffer."""
        for b in cycle:
            held[:] = [b.to("cpu", cycling)[0]]

    steps = [
        ("stored: zarr read of chunk 1 (people 32-63) by slice", lambda: delta[rows[0] : rows[-1] + 1], 1),
        ("stored: chunks.ChunkFiles.read of the same chunk (file + zstd into a reused buffer)", lambda: files.read(1, scratch), 1),
        ("stored: the chunk's one-hots at the gene's variant positions (encode.channels_at + the reference)", at_positions, 1),
        ("stored: the same by scanning the chunk for changed positions (encode.changed_positions + onehots_at)", lambda: onehots_at(block, reference.numpy(), changed_positions(block)), 1),
        ("stored: GeneReader.read, the chunk's one-hots cached (a chunk's second batch)", lambda: stored.read(micro), 1),
        ("expand: GeneReader.read (the gene's compact form cached)", lambda: expanding.read(micro), 1),
        ("expand: Expander, a recycled buffer of the same gene (scatter of changes only)", lambda: batch.to("cpu", recycled), 1),
        (f"expand: Expander, {BUFFERS + 1} genes in turn (whole reference copy + scatter)", switching, BUFFERS + 1),
        ("expand: into a fresh tensor each time (Expander(buffers=0))", lambda: batch.to("cpu", fresh), 1),
    ]
    if gvl_dataset is not None:
        batches = GvlBatches(gvl_dataset, store, [micro])
        haplotypes = batches.dataset[batches.region[gene_id], batches.person[rows]][0]
        out = np.empty((MICRO_BATCH, haplotypes.shape[-1]), np.uint64)
        steps += [("gvl: haplotypes (serial kernels)", lambda: batches.dataset[batches.region[gene_id], batches.person[rows]], 1),
                  ("gvl: lookup-table dosage one-hot", lambda: dosage_from_haplotypes(haplotypes), 1),
                  ("gvl: lookup-table dosage one-hot into a reused buffer", lambda: dosage_from_haplotypes(haplotypes, out), 1),
                  ("gvl: both (one micro-batch)", lambda: batches[0], 1)]
    lines = [f"where the time goes (gene {gene_id}, people 32-63, this process, {torch.get_num_threads()} torch thread(s)): CPU ms per micro-batch of 32"]
    for name, function, calls in steps:
        ms = per_batch(function) / calls
        lines.append(f"  {name:<100} {ms:7.2f} ms = {MICRO_BATCH / ms * 1000:9,.0f} windows/CPU-s")
    once = f"expand: compact form of one gene (once per process and gene; x{len(genes)} genes, {compact[1].numel()} changed indices)"
    lines.append(f"  {once:<100} {compact_ms:7.2f} ms")
    return lines + chunk_sizes(block, positions)


def chunk_sizes(block: np.ndarray, positions: np.ndarray) -> list[str]:
    """Decode + gather at the variant positions per window of the same 32 people's differences stored as chunks
    of 32, 16 and 8 people (zstd 5, as the store): what smaller chunks would cost a reader."""
    zstd = numcodecs.Zstd(level=5)
    lines = ["stored chunks of fewer people (the same 32 people re-encoded): decode + encode.channels_at, CPU us per window"]
    for people in (32, 16, 8):
        frames = [zstd.encode(np.ascontiguousarray(block[i : i + people])) for i in range(0, len(block), people)]
        out = np.empty((people, *block.shape[1:]), block.dtype)

        def read_all() -> None:
            for frame in frames:
                channels_at(zstd.decode(frame, out=out), positions)

        us = per_batch(read_all) * 1000 / len(block)
        lines.append(f"  {people:>2} people per chunk: {sum(map(len, frames)) / len(block):6.0f} B per window, {us:6.1f} us per window")
    return lines


def goals(runs: list[Run], plan_names: list[str]) -> list[str]:
    """The issue's goals per plan: best windows/CPU-s over workers of `stored` (cold only), of `expand` and
    `expand*`, against the best of every GenVarLoader variant."""
    def best(plan: str, names: tuple[str, ...]) -> Run:
        return max((r for r in runs if r.plan == plan and r.reader in names), key=lambda r: r.windows / r.cpu)

    lines = []
    for plan in plan_names:
        base = best(plan, ("gvl", "gvl-out", "gvl-threads"))
        for names, goal in ((("stored",), 1.0), (("expand", "expand*"), 2.0)):
            ours_best = best(plan, names)
            ratio = base.cpu / base.windows * ours_best.windows / ours_best.cpu
            lines.append(f"goal, {plan}: {names[0]} >= {goal:g}x GenVarLoader: {ours_best.reader} ({ours_best.workers} workers) "
                         f"{ours_best.windows / ours_best.cpu:,.0f} vs {base.reader} ({base.workers} workers) "
                         f"{base.windows / base.cpu:,.0f} windows/CPU-s = {ratio:.2f}x ({'met' if ratio >= goal else 'not met'})")
    return lines


# --- main ---------------------------------------------------------------------------------------------


def main() -> None:
    """Prepare the store and GenVarLoader's dataset, check correctness, time every reader, print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="An existing store (default: build one in a temporary directory).")
    parser.add_argument("--cohort", type=Path, help="The store's `pstore simulate` directory (default: from the store's provenance).")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts, comma-separated.")
    parser.add_argument("--plans", default="epoch,epoch-chunked,sequential", help="Orders of reading: epoch, epoch-chunked, sequential.")
    parser.add_argument("--check-people", type=int, default=128, help="People per gene whose one-hots are compared with the store.")
    parser.add_argument("--torch-threads", type=int, default=1, help="Intra-op threads of torch in the main process.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed passes per reader (in rounds over all readers); the median counts.")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    workers = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="pstore-bench-loader-"))
    try:
        store, fasta, vcf = prepare_store(args, work)
        genes = list(store.genes.index)
        print(f"store {store.path}: {len(store.sample_id)} people x {len(genes)} genes x {store.window} bp; "
              f"{sum(store.gene(g)['variant_position'].shape[0] for g in genes)} SNV rows in the windows")
        gvl_serial = gvl_threads = None
        try:
            import genvarloader  # noqa: F401
            from loguru import logger

            logger.disable("genvarloader")
            logger.disable("genoray")
            gvl_path, snv_rows, seconds, verdict = write_gvl(store, fasta, vcf, work)
            gvl_serial, gvl_threads = open_gvl(gvl_path, fasta, False), open_gvl(gvl_path, fasta, "auto")
            print(f"GenVarLoader {genvarloader.__version__}: the VCF as it is: {verdict}")
            print(f"GenVarLoader input: bcftools norm -m- | view -v snps ({snv_rows} SNV rows) + gvl.write "
                  f"(one-off; numba kernels compile on first use and stay cached on disk): {seconds:.1f} s")
        except ImportError as error:
            print(f"GenVarLoader not run: {error}; install it with pip install -e '.[bench]'")
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"GenVarLoader not run: its input could not be prepared ({error}); bcftools is needed (make sysdeps)")

        for line in check(store, gvl_serial, args.check_people):
            print(line, flush=True)

        batches = plans(store, args.plans.split(","))
        for plan, plan_batches in batches.items():  # untimed warm-up: imports, codecs, numba
            list(ours(store, "stored", plan_batches[:2], 0)())
            list(ours(store, "expand", plan_batches[:2], 0)())
            if gvl_serial is not None:
                list(gvl_pass(gvl_serial, store, plan_batches[:2], 0)())
                list(gvl_pass(gvl_threads, store, plan_batches[:2], 0)())
        runs: list[Run] = []
        for plan, plan_batches in batches.items():
            expected = sum(len(b.rows) for b in plan_batches)
            print(f"plan {plan}: {len(plan_batches)} micro-batches, {expected} windows", flush=True)
            for n in workers:
                configs = [("stored", lambda: ours(store, "stored", plan_batches, n)),
                           ("expand", lambda: ours(store, "expand", plan_batches, n))]
                if n == 0:
                    configs += [("stored*", lambda: ours(store, "stored", plan_batches, 0, warm=True)),
                                ("expand*", lambda: ours(store, "expand", plan_batches, 0, warm=True))]
                if gvl_serial is not None:
                    configs.append(("gvl", lambda: gvl_pass(gvl_serial, store, plan_batches, n)))
                    if n == 0:
                        configs += [("gvl-out", lambda: gvl_pass(gvl_serial, store, plan_batches, 0, outputs=2)),
                                    ("gvl-threads", lambda: gvl_pass(gvl_threads, store, plan_batches, 0))]
                rounds = [[timed(plan, name, n, make(), expected) for name, make in configs] for _ in range(args.repeats)]
                for passes in zip(*rounds):
                    runs.append(median_run(list(passes)))
                    run = runs[-1]
                    print(f"  {run.reader:<12} workers {n}: {run.windows / run.wall:8,.0f} windows/s wall, "
                          f"{run.windows / run.cpu:8,.0f} windows/CPU-s (median of {len(passes)})", flush=True)

        gvl_rate = {(r.plan, r.workers): r for r in runs if r.reader == "gvl"}
        print()
        print(f"{'plan':<14}{'reader':<13}{'workers':>7}{'windows':>9}{'wall s':>8}{'windows/s':>11}{'CPU s':>8}"
              f"{'windows/CPU-s':>15}{'x gvl CPU':>11}{'x gvl wall':>11}")
        for run in runs:
            base = gvl_rate.get((run.plan, run.workers))
            ratios = f"{base.cpu / run.cpu:>11.2f}{base.wall / run.wall:>11.2f}" if base else f"{'n/a':>11}{'n/a':>11}"
            print(f"{run.plan:<14}{run.reader:<13}{run.workers:>7}{run.windows:>9}{run.wall:>8.1f}{run.windows / run.wall:>11,.0f}"
                  f"{run.cpu:>8.1f}{run.windows / run.cpu:>15,.0f}{ratios}")
        if gvl_rate:
            for line in goals(runs, list(batches)):
                print(line)
        print()
        for line in block_reads(store, batches, args.repeats):
            print(line, flush=True)
        print()
        for line in breakdown(store, gvl_serial):
            print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
