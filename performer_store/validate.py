"""`pstore validate` and `pstore info`: check a store against `schemas`, and describe it."""

from __future__ import annotations

import json
import re
from itertools import product
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import zarr
from numcodecs import Zstd
from zarr.codecs import ZstdCodec

from . import schemas
from .encode import N_VALUE, base_codes, dosage_onehot_delta, haplotype_carriers, minor_allele_frequency
from .results import NOT_RUN
from .store import EMPTIED, GENE_INDEX, RETIRED, Store, complete_gene_ids, directory_size, is_complete


LETTERS = schemas.BASES + "N?"
"""Base codes (`encode.base_codes`, `_reference_codes`) as letters: 4 is N or another letter, -1 neither base nor N."""

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
"""The first bytes of a zstd frame (RFC 8878)."""


def _zstd_frame_length(chunk: Path) -> int | None:
    """Bytes of the one zstd frame a chunk file starts with, from its frame and block headers alone (None: not a
    whole frame, e.g. truncated); reads a few bytes per block, decompresses nothing."""
    with open(chunk, "rb") as file:
        header = file.read(6)
        if len(header) < 5 or header[:4] != ZSTD_MAGIC:
            return None
        descriptor = header[4]
        single_segment = bool(descriptor & 0x20)
        content_size_bytes = {0: int(single_segment), 1: 2, 2: 4, 3: 8}[descriptor >> 6]
        offset = 5 + (not single_segment) + {0: 0, 1: 1, 2: 2, 3: 4}[descriptor & 0x03] + content_size_bytes
        while True:
            file.seek(offset)
            block = file.read(3)
            if len(block) < 3:
                return None
            value = int.from_bytes(block, "little")
            kind, size = (value >> 1) & 0x03, value >> 3
            if kind == 3:
                return None
            offset += 3 + (1 if kind == 1 else size)
            if value & 0x01:
                return offset + 4 * bool(descriptor & 0x04)


def _chunk_problem(chunk: Path, decode: bool) -> str | None:
    """What is wrong with one zstd chunk file (None: nothing): missing, not one whole frame, or (decode) not decodable."""
    if not chunk.is_file():
        return "is missing"
    size = chunk.stat().st_size
    if _zstd_frame_length(chunk) != size:
        return f"is truncated or not a zstd frame ({size} bytes)"
    if decode:
        try:
            Zstd().decode(chunk.read_bytes())
        except RuntimeError as error:
            return f"does not decode ({error})"
    return None


def _check_chunks(array: zarr.Array, directory: Path, where: str, decode: bool) -> list[str]:
    """Each chunk file of a fully written zstd array is there and one whole zstd frame (decode: and decodes)."""
    codecs = array.metadata.codecs
    if not codecs or not isinstance(codecs[-1], ZstdCodec):
        return []
    problems = []
    for coords in product(*(range(n) for n in array.cdata_shape)):
        key = array.metadata.encode_chunk_key(coords)
        problem = _chunk_problem(directory / key, decode)
        if problem:
            problems.append(f"{where}/{key}: chunk file {problem}")
    return problems


def _open_array(group: zarr.Group, name: str, where: str) -> tuple[zarr.Array | None, str | None]:
    """An array of a group, or (None, the problem) when it is missing or its zarr.json does not parse."""
    try:
        return group[name], None
    except KeyError:
        return None, f"{where}: array {name} is missing"
    except (ValueError, TypeError) as error:  # JSONDecodeError or metadata zarr cannot read
        return None, f"{where}/{name}/zarr.json: unreadable array metadata ({type(error).__name__}: {error})"


def _check_arrays(group: zarr.Group, spec: schemas.GroupSpec, sizes: dict[str, int], where: str) -> list[str]:
    """Presence, dtype, dimension names and sizes of a group's arrays; fills `sizes` with dims first seen."""
    problems = []
    for array_spec in spec.arrays:
        array, problem = _open_array(group, array_spec.name, where)
        if problem:
            problems.append(problem)
            continue
        if array.dtype != array_spec.numpy_dtype:
            problems.append(f"{where}/{array_spec.name}: dtype {array.dtype}, expected {array_spec.dtype}")
        dims = tuple(array.metadata.dimension_names or ())
        if dims != array_spec.dims:
            problems.append(f"{where}/{array_spec.name}: dimension names {dims}, expected {array_spec.dims}")
            continue
        for dim, size in zip(dims, array.shape):
            expected = sizes.setdefault(dim, size)
            if size != expected:
                problems.append(f"{where}/{array_spec.name}: {dim} has size {size}, expected {expected}")
    missing = [name for name in spec.attributes if name not in group.attrs]
    problems += [f"{where}: attribute {name} is missing" for name in missing]
    return problems


def _check_splits(splits: np.ndarray) -> list[str]:
    """Split codes are known, every fold has train/tune/test people, and test sets are disjoint."""
    problems = []
    codes = set(schemas.SPLIT_CODES.values())
    if not set(np.unique(splits)) <= codes:
        problems.append(f"sample_split: values {sorted(set(np.unique(splits)) - codes)} are not split codes {sorted(codes)}")
    test = splits == schemas.SPLIT_CODES["test"]
    if (test.sum(axis=0) > 1).any():
        problems.append("sample_split: a person is in the test set of more than one fold")
    for fold, row in enumerate(splits):
        for name, code in schemas.SPLIT_CODES.items():
            if not (row == code).any():
                problems.append(f"sample_split: fold {fold} has no {name} people")
    return problems


def _check_gene_values(group: zarr.Group, where: str, deep: bool) -> list[str]:
    """Value rules of a gene: positions inside the window and sorted, calls coded, reference rows a base or N;
    deep: the variant table agrees with the reference and the calls, and the dosage one-hots with all three."""
    problems = []
    attrs = group.attrs
    position = group["variant_position"][:].astype(np.int64)
    start, stop = attrs["window_start"], attrs["window_stop"]
    placed = not len(position) or (position.min() > start and position.max() <= stop and (np.diff(position) >= 0).all())
    if not placed:
        problems.append(f"{where}/variant_position: positions must be sorted and inside ({start}, {stop}] (1-based)")
    calls = group["call_genotype"][:]
    if not set(np.unique(calls)) <= {-2, -1, 0, 1}:
        problems.append(f"{where}/call_genotype: values other than -2, -1, 0, 1")
    reference = group["reference_onehot"][:]
    problems += _check_reference_rows(reference, start, where)
    if deep and not problems:
        problems += _check_delta(group, reference, position - 1 - start, calls, where)
    if deep and placed:
        problems += _check_variant_table(group, reference, position, start, calls, where)
    return problems


def _reference_codes(rows: np.ndarray) -> np.ndarray:
    """Per reference_onehot row: its base code 0-3 (one 1, three 0), 4 for N (0.25 in all four channels), -1 for neither."""
    base = ((rows == 1).sum(axis=-1) == 1) & ((rows == 0).sum(axis=-1) == 3)
    return np.where(base, rows.argmax(axis=-1), np.where((rows == N_VALUE).all(axis=-1), 4, -1))


def _check_reference_rows(reference: np.ndarray, start: int, where: str) -> list[str]:
    """Every reference_onehot row is a base or N."""
    bad = np.flatnonzero(_reference_codes(reference) < 0)
    if not len(bad):
        return []
    return [f"{where}/reference_onehot: {len(bad)} rows are neither a base (one 1, three 0) nor N (0.25 x 4); "
            f"first at position {start + bad[0] + 1}: {reference[bad[0]].astype(np.float32).tolist()}"]


def _check_delta(group: zarr.Group, reference: np.ndarray, offsets: np.ndarray, calls: np.ndarray, where: str) -> list[str]:
    """The stored dosage one-hot differences equal those recomputed from the variant table, a chunk of people at a time."""
    carriers = haplotype_carriers(calls, offsets)
    alt = base_codes(group["variant_allele"][:, 1]) if len(offsets) else np.zeros(0, np.int8)
    delta = group["dosage_onehot_delta"]
    for first in range(0, delta.shape[0], schemas.PEOPLE_PER_CHUNK):
        block = slice(first, first + schemas.PEOPLE_PER_CHUNK)
        expected = dosage_onehot_delta(reference, offsets, alt, carriers[:, block])
        if not np.array_equal(delta[block], expected):
            return [f"{where}/dosage_onehot_delta: people {first}-{first + expected.shape[0] - 1} differ from the variant table"]
    return []


def _check_variant_table(group: zarr.Group, reference: np.ndarray, position: np.ndarray, start: int, calls: np.ndarray,
                         where: str) -> list[str]:
    """Each REF is the reference base at its position (any REF where the reference is N, as the build accepts), and
    variant_maf is the minor-allele frequency of call_genotype as the build computes it."""
    problems = []
    ref = base_codes(group["variant_allele"][:, 0] if len(position) else np.zeros(0, "S1"))
    found = _reference_codes(reference[position - 1 - start])
    wrong = np.flatnonzero((found != ref) & (found != 4))
    if len(wrong):
        i = wrong[0]
        problems.append(f"{where}/variant_allele: the REF of {len(wrong)} rows is not reference_onehot's base at their "
                        f"position; first row {i} at {position[i]}: REF {LETTERS[ref[i]]}, reference {LETTERS[found[i]]}")
    maf, expected = group["variant_maf"][:], minor_allele_frequency(calls)
    wrong = np.flatnonzero(~np.isclose(maf, expected, rtol=1e-6, atol=0, equal_nan=True))
    if len(wrong):
        i = wrong[0]
        problems.append(f"{where}/variant_maf: {len(wrong)} rows disagree with call_genotype (minor-allele frequency "
                        f"among called alleles); first row {i} at {position[i]}: {maf[i]:.6g}, expected {expected[i]:.6g}")
    return problems


def _readable_gene_values(group: zarr.Group, where: str, deep: bool) -> list[str]:
    """`_check_gene_values`, with a chunk that passes the header checks but does not decode as one problem."""
    try:
        return _check_gene_values(group, where, deep)
    except RuntimeError as error:  # zstd: invalid input data
        return [f"{where}: a chunk does not decode ({error}); run `pstore validate --deep` to name its file"]


def _complete_groups(parent: Path, where: str, fix: str, problems: list[str]) -> Iterator[tuple[str, Path, zarr.Group]]:
    """(name, directory, group) of each complete group under a directory; incomplete ones go to `problems`."""
    for directory in sorted(d for d in parent.iterdir() if d.is_dir()) if parent.is_dir() else []:
        here = f"{where}/{directory.name}"
        if is_complete(directory):
            yield here, directory, zarr.open_group(str(directory), mode="r")
        else:
            problems.append(f"{here}: incomplete {fix}")


def _result_specs(attrs: dict, group_name: str) -> tuple[schemas.GroupSpec, ...]:
    """The specs a result group follows: ISM_RESULT for ISM scores, REFERENCE_RESULT for reference-window
    predictions, RESULT (+ ENET_RESULT for linear models,
    + CROSS_RESULT for models of another store, + TRANSFER_RESULT for transferred linear models)."""
    if group_name == schemas.ISM_GROUP:
        return (schemas.ISM_RESULT,)
    if group_name == schemas.REFERENCE_GROUP:
        return (schemas.REFERENCE_RESULT,)
    kind = str(attrs.get("kind"))
    return ((schemas.RESULT,) + (schemas.ENET_RESULT,) * (kind in ("enet", "lasso"))
            + (schemas.CROSS_RESULT,) * ("source_store" in attrs) + (schemas.TRANSFER_RESULT,) * kind.endswith("_transfer"))


def _result_writer(group_name: str, kind: str) -> str:
    """The command that writes a result group of this kind, for the advice to write it again."""
    if group_name == schemas.ISM_GROUP:
        return "pstore ism"
    if group_name == schemas.REFERENCE_GROUP:
        return "pstore evaluate --reference"
    if kind.endswith("_transfer"):
        return "pstore enet --from-store"
    return "pstore enet" if kind in ("enet", "lasso") else "pstore evaluate"


def _check_statuses(group: zarr.Group, here: str) -> list[str]:
    """A result's status per fold agrees with its folds attribute (a chunk that does not decode is one problem)."""
    run = set(group.attrs["folds"])
    try:
        statuses = group["status"][:]
    except RuntimeError as error:  # zstd: invalid input data
        return [f"{here}/status: a chunk does not decode ({error}); run `pstore validate --deep` to name its file"]
    disagree = [f for f, status in enumerate(statuses) if (status == NOT_RUN) == (f in run)]
    return [f"{here}/status: folds {disagree} disagree with the folds attribute {sorted(run)}"] if disagree else []


def _check_results(gene_dir: Path, sizes: dict[str, int], where: str, deep: bool) -> list[str]:
    """A gene's model results, ISM scores and reference predictions: complete, arrays as their specs, chunk
    files whole (deep: decodable), statuses matching folds."""
    problems: list[str] = []
    fix = "(an interrupted write?); run the command that writes it again"
    groups = [(name, here, directory, group) for name in (schemas.RESULTS_GROUP, schemas.ISM_GROUP, schemas.REFERENCE_GROUP)
              for here, directory, group in _complete_groups(gene_dir / name, f"{where}/{name}", fix, problems)]
    for name, here, directory, group in groups:
        specs = _result_specs(dict(group.attrs), name)
        found = [p for spec in specs for p in _check_arrays(group, spec, dict(sizes), here)]
        if not found:
            rewrite = f"delete {directory} and run `{_result_writer(name, str(group.attrs.get('kind')))}` again to write it anew"
            found = [f"{p}; {rewrite}" for spec in specs for array in spec.arrays
                     for p in _check_chunks(group[array.name], directory / array.name, f"{here}/{array.name}", deep)]
        problems += found or _check_statuses(group, here)
    return problems


def validate_store(path: Path, deep: bool = False) -> list[str]:
    """Everything wrong with a store, one line each (empty when it is valid)."""
    store = Store(path)
    sizes: dict[str, int] = {"window": store.window, "bases": 4, "alleles": 2, "ploidy": 2}
    problems = _check_arrays(store.root, schemas.ROOT, sizes, "/")
    if "sample_split" in store.root:
        problems += _check_splits(store.root["sample_split"][:])
    on_disk = set(complete_gene_ids(store.path))
    indexed = set(store.gene_index.index) if not problems else on_disk
    if on_disk != indexed:
        problems.append(f"gene index lists {len(indexed)} genes but {len(on_disk)} are complete on disk; run `pstore build` again to refresh it")
    fix = "(an interrupted build?); run `pstore build` again to finish it"
    for where, directory, group in _complete_groups(store.path / schemas.GENES_GROUP, schemas.GENES_GROUP, fix, problems):
        gene_sizes = {k: v for k, v in sizes.items() if k != "variants"}
        gene_problems = _check_arrays(group, schemas.GENE, gene_sizes, where)
        if not gene_problems:
            rebuild = f"delete {directory} and run `pstore build` again to rebuild the gene"
            gene_problems = [f"{p}; {rebuild}" for spec in schemas.GENE.arrays
                             for p in _check_chunks(group[spec.name], directory / spec.name, f"{where}/{spec.name}", deep)]
        problems += gene_problems or _readable_gene_values(group, where, deep)
        problems += _check_results(directory, gene_sizes, where, deep)
    return problems


STAGED = re.compile(r"(?P<key>.+)\.[0-9a-f]{32}")
"""A staging directory: '<key>.<uuid hex>' (`store.staging_path`)."""

STAGED_RESULT = re.compile(
    rf"(?P<gene>.+)\.(?P<group>{schemas.RESULTS_GROUP}|{schemas.ISM_GROUP}|{schemas.REFERENCE_GROUP})\.(?P<model>.+)")
"""The staging key of a result group: '<gene>.<group>.<model>' (`results._publish_result`)."""

ZARR_PARTIAL = re.compile(r".+\.[0-9a-f]{32}\.partial")
"""A file zarr-python writes before renaming it into place ('<key>.<uuid hex>.partial'); a kill leaves it behind."""


def _staged_writer(entry: Path, group: str) -> str:
    """The command that was writing a staged result group: by its kind when its attributes got written, else by group."""
    try:
        kind = json.loads((entry / "zarr.json").read_text()).get("attributes", {}).get("kind")
    except (OSError, ValueError):
        kind = None
    if kind is None and group == schemas.RESULTS_GROUP:
        return "`pstore enet`, `pstore enet --from-store` or `pstore evaluate`"
    return f"`{_result_writer(group, str(kind))}`"


def _staged(entry: Path) -> str:
    """One line on an entry of the staging directory: what its writer was writing, and the fix."""
    match = STAGED.fullmatch(entry.name)
    key = match["key"] if match else entry.name
    cleared = "(any command that writes this store deletes this), or delete it"
    again = f"run that command again to finish its work {cleared}"
    if key == RETIRED:
        return (f"{entry}: the previous version of a gene's group or gene-index array, moved aside by an interrupted "
                f"replacement; nothing reads it: run the interrupted command again {cleared}")
    if key == EMPTIED:
        return f"{entry}: what an interrupted `pstore build --force` was deleting; nothing reads it: run that build again {cleared}"
    if key == GENE_INDEX:
        return f"{entry}: an unfinished gene index of an interrupted `pstore build`; nothing reads it: {again}"
    result = STAGED_RESULT.fullmatch(key)
    if result:
        return (f"{entry}: an unfinished {result['group']} '{result['model']}' of gene {result['gene']} from an interrupted "
                f"{_staged_writer(entry, result['group'])}; nothing reads it: {again}")
    return f"{entry}: an unfinished gene {key} of an interrupted `pstore build`; nothing reads it: {again}"


def leftovers(path: Path) -> list[str]:
    """What killed writes left in a store, one line each: staging directories (`store.staging_path`) and zarr's
    partial files. They never make the store wrong (groups are read only once renamed into place complete, and the
    next command that writes the store deletes its staging directory), so `pstore validate` warns and still passes."""
    store = Path(path)
    staging = store / schemas.STAGING_DIR
    lines = [_staged(entry) for entry in sorted(staging.iterdir())] if staging.is_dir() else []
    partial = sorted(p for p in store.rglob("*.partial") if ZARR_PARTIAL.fullmatch(p.name) and staging not in p.parents)
    return lines + [f"{p}: a partial file of an interrupted zarr write; nothing reads it: delete it" for p in partial]


def describe_store(path: Path) -> tuple[dict, pd.DataFrame]:
    """Store-wide numbers (people, genes, sizes, compression) and a per-gene table."""
    store = Store(path)
    genes = store.genes
    n_people, window = len(store.sample_id), store.window
    delta_bytes = sum(directory_size(store.path / schemas.GENES_GROUP / g / "dosage_onehot_delta") for g in genes.index)
    raw = n_people * len(genes) * window * 4 * 2
    windows = max(n_people * len(genes), 1)
    counts = [json.loads((store.path / schemas.GENES_GROUP / g / "zarr.json").read_text())["attributes"]["counts"] for g in genes.index]
    table = genes[["gene_id", "gene_name", "gene_contig", "gene_strand", "gene_tss", "gene_n_variants"]].copy()
    table["nan_targets"] = [c["nan_targets"] for c in counts]
    table["indels_skipped"] = [c["indel_alleles"] for c in counts]
    summary = {
        "store": str(store.path),
        "tissue": store.attrs["tissue"],
        "people": n_people,
        "genes": len(genes),
        "window": window,
        "variants per gene (median)": float(genes["gene_n_variants"].median()) if len(genes) else 0.0,
        "size on disk (MB)": round(directory_size(store.path) / 1e6, 2),
        "dosage one-hots, raw float16 (MB)": round(raw / 1e6, 1),
        "dosage one-hots, stored (MB)": round(delta_bytes / 1e6, 2),
        "bytes per person-window": round(delta_bytes / windows, 1),
        "compression ratio": round(raw / max(delta_bytes, 1), 1),
    }
    return summary, table.reset_index(drop=True)

