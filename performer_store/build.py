"""`pstore build`: inputs -> per-gene arrays -> atomic publish into the store, parallel over genes with Dask."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import zarr

from . import __version__, schemas
from .encode import base_codes, dosage_changes, haplotype_carriers, minor_allele_frequency, onehot, scatter_changes
from .inputs import (
    Expression,
    Gene,
    InputError,
    Reference,
    VariantSource,
    check_vcf_file,
    contig_alias,
    match_samples,
    read_expression,
    read_gtf_genes,
    read_mean_expression,
    read_sample_map,
    select_genes,
    strip_version,
)
from .parallel import connected, map_tasks
from .store import (
    EMPTIED,
    GENE_INDEX,
    clear_staging,
    check_format,
    complete_gene_ids,
    create_array,
    gene_path,
    publish,
    staging_path,
    store_lock,
    write_array,
)

SHOWN_IDS = 5  # gene IDs a warning names before "and N more"
N_GROUPS = 10  # the method's people are cut into 10 disjoint test sets; folds 0-2 use the first three
FINGERPRINT_BYTES = 8 << 20


@dataclass(frozen=True)
class BuildConfig:
    """Everything `pstore build` was asked to do."""

    store: Path
    fasta: Path
    vcf: Path
    gtf: Path
    expression: Path
    tissue: str
    genes: tuple[str, ...] = ()
    window: int = 49_152
    seed: int = 0
    sample_map: Path | None = None
    mean_expression: Path | None = None  # TSV gene_id -> mean expression (raw scale), kept as a gene attribute
    skip_ref_mismatch: bool = False
    workers: int = 1
    scheduler: str | None = None
    force: bool = False
    progress: bool = True
    command_line: str = ""


@dataclass(frozen=True)
class GeneTask:
    """One gene's work, small enough to ship to a Dask worker."""

    gene: Gene
    fasta_contig: str
    vcf_contig: str
    targets: np.ndarray
    samples: tuple[str, ...]
    store: Path
    fasta: Path
    vcf: Path
    window: int
    skip_ref_mismatch: bool
    mean_expression: float | None = None


@dataclass
class BuildReport:
    """What a build did: people matched and left out, genes built and skipped, what the VCF held."""

    store: Path
    n_people: int
    samples: dict
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # warnings: genes the default build left out, one line per reason
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


# --- people: order and splits --------------------------------------------------------------------------


def store_order(people: Sequence[str], seed: int) -> np.ndarray:
    """People in a seeded random order, so that the people sharing a chunk are a random set."""
    rng = np.random.default_rng([seed, 1])
    return np.asarray(sorted(people), dtype=object)[rng.permutation(len(people))]


def people_splits(people: np.ndarray, seed: int) -> np.ndarray:
    """(folds, people) split codes: 10 seeded groups; fold k tests group k, tunes on group k+1, trains on the rest."""
    rng = np.random.default_rng([seed, 2])
    ranked = np.empty(len(people), dtype=np.int64)
    ranked[np.argsort(people, kind="stable")] = rng.permutation(len(people))
    group = ranked * N_GROUPS // max(len(people), 1)
    splits = np.full((schemas.N_FOLDS, len(people)), schemas.SPLIT_CODES["train"], dtype=np.int8)
    for fold in range(schemas.N_FOLDS):
        splits[fold, group == fold] = schemas.SPLIT_CODES["test"]
        splits[fold, group == (fold + 1) % N_GROUPS] = schemas.SPLIT_CODES["tune"]
    return splits


# --- planning ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The people of the store (in store order) and one task per requested gene."""

    people: np.ndarray
    samples_report: dict
    tasks: list[GeneTask]
    left_out: list[str]  # warnings: genes the default build left out, one line per reason


def plan_build(config: BuildConfig) -> Plan:
    """Read and cross-check the inputs; fail early, before anything is written."""
    reference = Reference(config.fasta)
    check_vcf_file(config.vcf)
    vcf = VariantSource(config.vcf)
    expression = read_expression(config.expression)
    mapping = read_sample_map(config.sample_map) if config.sample_map else None
    matched = match_samples(expression, vcf.samples, config.vcf, mapping)
    if len(matched) < N_GROUPS:
        raise InputError(f"only {len(matched)} people have both genotypes (VCF {config.vcf}) and expression (BED {config.expression}); 3 folds of 80/10/10 need at least {N_GROUPS}")
    people = store_order(list(matched), config.seed)
    gtf = read_gtf_genes(config.gtf)
    requested, not_in_gtf = (config.genes, []) if config.genes else _expression_genes(expression, gtf, config)
    genes, not_in_fasta = _in_fasta(select_genes(gtf, requested, config.gtf), reference, config)
    columns = [matched[p] for p in people]
    means = read_mean_expression(config.mean_expression) if config.mean_expression else {}
    tasks = [_gene_task(config, gene, reference, vcf, expression, columns, people, means) for gene in genes]
    tasks, not_in_vcf = _covered_by_vcf(tasks, vcf, config)
    report = {
        "vcf_samples": len(vcf.samples),
        "expression_samples": len(expression.samples),
        "matched": len(people),
        "vcf_only": sorted(set(vcf.samples) - set(matched))[:20],
        "n_vcf_only": len(set(vcf.samples) - set(matched)),
        "expression_only": sorted(set(expression.samples) - set(matched.values()))[:20],
        "n_expression_only": len(set(expression.samples) - set(matched.values())),
    }
    return Plan(people, report, tasks, not_in_gtf + not_in_fasta + not_in_vcf)


def _left_out_on_contigs(contigs: list[str], which: str, fix: str) -> list[str]:
    """The warning on genes left out for their contig (one contig name per gene), counted per contig; none if none."""
    per_contig = ", ".join(f"{contig} ({n})" for contig, n in Counter(contigs).items())
    return [f"left out {len(contigs)} genes on contigs {which}: {per_contig}; {fix}"] if contigs else []


def _in_fasta(genes: list[Gene], reference: Reference, config: BuildConfig) -> tuple[list[Gene], list[str]]:
    """Genes on contigs the FASTA has; the others (chrM, alt contigs of another release) are left out with a
    warning, or refused when asked for by name or when no gene is left (contig naming or genome build differ)."""
    found, missing = [], []
    for gene in genes:
        (found if contig_alias(gene.contig, reference.lengths) else missing).append(gene)
    if missing and (config.genes or not found):
        reference.contig(missing[0].contig, f"gene {missing[0].gene_id} in GTF {config.gtf}")  # raises, naming the fix
    return found, _left_out_on_contigs([g.contig for g in missing], f"FASTA {config.fasta} lacks",
                                       "build them with a FASTA of the same genome build that has those contigs")


def _covered_by_vcf(tasks: list[GeneTask], vcf: VariantSource, config: BuildConfig) -> tuple[list[GeneTask], list[str]]:
    """Genes on contigs the VCF has records for; the others (a per-chromosome VCF) are left out with a warning
    counting them per contig, or refused when asked for by name (all-reference windows would pass for real data)."""
    covered, missing = [], []
    for task in tasks:
        (covered if vcf.has_records(task.vcf_contig) else missing).append(task)
    fix = "give a VCF that covers it (`bcftools concat` the per-chromosome files)"
    if missing and (config.genes or not covered):
        task = missing[0]
        raise InputError(f"VCF {config.vcf}: has no records on contig {task.vcf_contig} (gene {task.gene.gene_id}); {fix}"
                         + (", or leave the gene out" if config.genes else ""))
    return covered, _left_out_on_contigs([t.vcf_contig for t in missing], "the VCF has no records on",
                                         "build them from a VCF that covers those contigs")


def _expression_genes(expression: Expression, gtf: pd.DataFrame, config: BuildConfig) -> tuple[list[str], list[str]]:
    """All genes of the expression BED that the GTF knows (the default gene list), and the warning on the others
    (another GENCODE release, retired genes); an error when the GTF knows none."""
    known = {strip_version(g) for g in gtf.index}
    missing = [gene for gene in expression.gene_rows if strip_version(gene) not in known]
    found = [gene for gene in expression.gene_rows if strip_version(gene) in known]
    shown = ", ".join(missing[:SHOWN_IDS]) + (f" and {len(missing) - SHOWN_IDS} more" if len(missing) > SHOWN_IDS else "")
    fix = "use the GTF the expression was quantified with (GTEx v8: GENCODE v26)"
    if not found:
        raise InputError(f"GTF {config.gtf}: has none of the {len(missing)} genes of expression BED {config.expression} ({shown}); {fix}")
    return found, [f"left out {len(missing)} genes of expression BED {config.expression} that GTF {config.gtf} lacks: {shown}; {fix}"] * bool(missing)


def _gene_task(config: BuildConfig, gene: Gene, reference: Reference, vcf: VariantSource, expression: Expression,
               columns: list[str], people: np.ndarray, means: dict[str, float]) -> GeneTask:
    """Resolve a gene's contig names and targets (a window running off a contig end is padded with N)."""
    what = f"gene {gene.gene_id} in GTF {config.gtf}"
    fasta_contig = reference.contig(gene.contig, what)
    return GeneTask(
        gene=gene,
        fasta_contig=fasta_contig,
        vcf_contig=vcf.contig(gene.contig, what, reference),
        targets=expression.targets(gene.gene_id, columns),
        samples=tuple(people),
        store=config.store,
        fasta=config.fasta,
        vcf=config.vcf,
        window=config.window,
        skip_ref_mismatch=config.skip_ref_mismatch,
        mean_expression=means.get(strip_version(gene.gene_id)),
    )


# --- one gene ------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _open_reference(path: Path, pid: int) -> Reference:
    """One open FASTA per process (keyed by pid: a forked worker must not share its parent's file offsets)."""
    return Reference(path)


@lru_cache(maxsize=8)
def _open_variants(path: Path, samples: tuple[str, ...], pid: int) -> VariantSource:
    """One open VCF per process and people list (keyed by pid, as above)."""
    return VariantSource(path, samples)


def build_gene(task: GeneTask) -> dict[str, int]:
    """Encode one gene and publish it into the store; returns its counts."""
    gene, width = task.gene, task.window
    start, stop = gene.window(width)
    reference = _open_reference(task.fasta, os.getpid())
    reference_onehot = onehot(reference.fetch(task.fasta_contig, start, stop))
    variants = _open_variants(task.vcf, task.samples, os.getpid()).window(
        task.vcf_contig, start, stop, reference, task.fasta_contig, task.skip_ref_mismatch
    )
    offsets = variants.position.astype(np.int64) - 1 - start
    carriers = haplotype_carriers(variants.call_genotype, offsets)
    alt_codes = base_codes(variants.allele[:, 1]) if len(offsets) else np.zeros(0, np.int8)
    counts = {**variants.counts, "variants": len(offsets), "nan_targets": int(np.isnan(task.targets).sum())}

    staging = staging_path(task.store, gene.gene_id)
    group = zarr.open_group(str(staging), mode="w")
    spec = schemas.GENE.array
    write_array(group, spec("reference_onehot"), reference_onehot)
    write_array(group, spec("target"), task.targets.astype(np.float32))
    write_array(group, spec("variant_position"), variants.position)
    write_array(group, spec("variant_allele"), variants.allele)
    write_array(group, spec("variant_id"), variants.variant_id)
    write_array(group, spec("variant_maf"), minor_allele_frequency(variants.call_genotype))
    write_array(group, spec("call_genotype"), variants.call_genotype)
    delta = create_array(group, spec("dosage_onehot_delta"), (len(task.samples), width, 4))
    flat, changes = dosage_changes(reference_onehot, offsets, alt_codes, carriers)
    buffer = np.zeros((schemas.PEOPLE_PER_CHUNK, width, 4), dtype=np.float16)
    for first in range(0, len(task.samples), schemas.PEOPLE_PER_CHUNK):
        block = changes[first : first + schemas.PEOPLE_PER_CHUNK]
        delta[first : first + len(block)] = scatter_changes(buffer[: len(block)], flat, block)
        scatter_changes(buffer, flat, np.zeros_like(changes[:1]))
    group.attrs.update(
        gene_id=gene.gene_id, gene_name=gene.gene_name, gene_type=gene.gene_type, contig=task.fasta_contig,
        strand=gene.strand, tss=gene.tss, window_start=start, window_stop=stop, counts=counts,
        mean_expression=task.mean_expression,
    )
    group.attrs["complete"] = True  # written last: the gene counts only once everything above is on disk
    publish(staging, gene_path(task.store, gene.gene_id))
    return counts


# --- the store as a whole ------------------------------------------------------------------------------


def check_store_path(path: Path) -> None:
    """The store path must be a directory we can create or write, and not some other file or folder."""
    if path.exists() and not path.is_dir():
        raise InputError(f"store {path}: is a file; give a directory path such as {path}.zarr")
    parent = path if path.exists() else path.parent
    while not parent.exists():
        parent = parent.parent
    try:
        descriptor, probe = tempfile.mkstemp(dir=parent, prefix=".pstore-write-test")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"store {path}: cannot write in {parent} ({error.strerror}); choose another --store") from None
    if path.is_dir() and has_contents(path) and not (path / "zarr.json").is_file():
        raise InputError(f"store {path}: exists and is not a Zarr store; choose a new path or empty it")


def has_contents(path: Path) -> bool:
    """Whether a directory holds anything but a staging directory (all a killed `--force` emptying may leave)."""
    return any(entry.name != schemas.STAGING_DIR for entry in path.iterdir())


def only_store_entries(path: Path) -> bool:
    """Whether a directory with a root zarr.json holds only what a build writes at the root (a killed build may leave
    its root without the format attribute, which is written last)."""
    names = {"zarr.json", schemas.STAGING_DIR, schemas.GENES_GROUP, *(spec.name for spec in schemas.ROOT.arrays)}
    return (path / "zarr.json").is_file() and all(entry.name in names for entry in path.iterdir())


def fingerprint(path: Path) -> dict:
    """Path, size and sha256 (of the whole file, or of its size, first and last 8 MiB when larger than 64 MiB)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= 8 * FINGERPRINT_BYTES:
            method = "sha256"
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        else:
            method = "sha256(size, first 8 MiB, last 8 MiB)"
            digest.update(str(size).encode() + handle.read(FINGERPRINT_BYTES))
            handle.seek(size - FINGERPRINT_BYTES)
            digest.update(handle.read())
    return {"path": str(path.resolve()), "size": size, "checksum": digest.hexdigest(), "checksum_method": method}


def _inputs(config: BuildConfig) -> dict:
    """Fingerprints of every input file, by role."""
    roles = {"fasta": config.fasta, "vcf": config.vcf, "gtf": config.gtf, "expression": config.expression}
    if config.sample_map:
        roles["sample_map"] = config.sample_map
    if config.mean_expression:
        roles["mean_expression"] = config.mean_expression
    return {role: fingerprint(path) for role, path in roles.items()}


def cohort_digest(inputs: dict, people: np.ndarray, splits: np.ndarray) -> str:
    """What runs are tied to: the inputs' checksums, the people and their splits. A store rebuilt from the same
    inputs and seed gets the same digest, so its runs stay its own (HOP/HOGP, not cross-cohort)."""
    digest = hashlib.sha256(json.dumps({role: found["checksum"] for role, found in sorted(inputs.items())}).encode())
    digest.update("\0".join(map(str, people)).encode())
    digest.update(np.ascontiguousarray(splits, dtype=np.int8).tobytes())
    return f"cohort:{digest.hexdigest()[:32]}"


def prepare_root(config: BuildConfig, plan: Plan) -> None:
    """Create the root (people, splits, attributes) or check an existing one was built from the same inputs."""
    root_meta = config.store / "zarr.json"
    inputs = _inputs(config)
    if root_meta.is_file():
        root = zarr.open_group(str(config.store), mode="r")
        if schemas.FORMAT_ATTRIBUTE in root.attrs:
            _check_same_build(config, plan, root, inputs)
            return
        if complete_gene_ids(config.store) and schemas.EMPTYING_ATTRIBUTE not in root.attrs:
            raise InputError(f"store {config.store}: has genes but no root attributes; rebuild it with --force")
    _empty(config.store)  # a new store, or a root whose creation was interrupted: start it again
    root = zarr.open_group(str(config.store), mode="w-")  # not "w": it deletes the directory, and with it the lock
    splits = people_splits(plan.people, config.seed)
    write_array(root, schemas.ROOT.array("sample_id"), plan.people.astype(str))
    write_array(root, schemas.ROOT.array("sample_split"), splits)
    root.create_group(schemas.GENES_GROUP, attributes={"description": "One group per gene, named by gene_id."})
    write_gene_index(config.store)
    root.attrs.update(
        tissue=config.tissue, window=config.window, bases=schemas.BASES, split_codes=schemas.SPLIT_CODES,
        seed=config.seed, samples=plan.samples_report,
        provenance={
            "inputs": inputs, "cohort": cohort_digest(inputs, plan.people, splits),
            "tool": f"performer-store {__version__}", "command_line": config.command_line,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "zarr": zarr.__version__,
        },
    )
    root.attrs[schemas.FORMAT_ATTRIBUTE] = schemas.FORMAT_VERSION  # written last: marks the root complete


def _check_same_build(config: BuildConfig, plan: Plan, root: zarr.Group, inputs: dict) -> None:
    """An existing store only takes more genes when it was built from the same inputs and settings."""
    check_format(root, config.store)
    recorded = root.attrs["provenance"]["inputs"]
    for role, now in inputs.items():
        before = recorded.get(role, {})
        if before.get("checksum") != now["checksum"]:
            raise InputError(
                f"store {config.store}: was built from another {role} ({before.get('path', 'none')}); "
                f"use --force to rebuild it from {now['path']}, or choose another --store"
            )
    for key, value in (("window", config.window), ("tissue", config.tissue), ("seed", config.seed)):
        if root.attrs[key] != value:
            raise InputError(f"store {config.store}: was built with {key} {root.attrs[key]!r}, not {value!r}; use --force or another --store")
    if list(root["sample_id"][:]) != list(plan.people):
        raise InputError(f"store {config.store}: holds other people than these inputs give; use --force or another --store")


def write_gene_index(store: Path) -> None:
    """Rewrite the root gene index from the complete gene groups on disk."""
    groups = [zarr.open_group(str(gene_path(store, g)), mode="r") for g in complete_gene_ids(store)]
    attrs = [dict(g.attrs) for g in groups]
    columns = {
        "gene_id": [a["gene_id"] for a in attrs],
        "gene_name": [a["gene_name"] for a in attrs],
        "gene_type": [a["gene_type"] for a in attrs],
        "gene_contig": [a["contig"] for a in attrs],
        "gene_strand": [a["strand"] for a in attrs],
        "gene_tss": [a["tss"] for a in attrs],
        "gene_window_start": [a["window_start"] for a in attrs],
        "gene_window_stop": [a["window_stop"] for a in attrs],
        "gene_n_variants": [g["variant_position"].shape[0] for g in groups],
    }
    staging = staging_path(store, GENE_INDEX)
    group = zarr.open_group(str(staging), mode="w")
    for name, values in columns.items():
        spec = schemas.ROOT.array(name)
        write_array(group, spec, np.asarray(values, dtype=str if spec.dtype == "str" else spec.dtype))
    for name in columns:  # each array replaced atomically; a kill in between is repaired by the next build
        publish(staging / name, store / name)
    shutil.rmtree(staging)


def build_store(config: BuildConfig) -> BuildReport:
    """Build (or complete) a store: plan, create the root, encode missing genes, rewrite the gene index."""
    started = time.perf_counter()
    check_store_path(config.store)
    plan = plan_build(config)
    if config.force:
        _check_removable(config.store)
    with connected(config.scheduler) as scheduler, store_lock(config.store):  # a bad --scheduler is refused before anything is written
        if config.force:
            _empty(config.store)
        prepare_root(config, plan)
        done = set(complete_gene_ids(config.store))
        todo = [t for t in plan.tasks if t.gene.gene_id not in done]
        report = BuildReport(config.store, len(plan.people), plan.samples_report,
                             skipped=[t.gene.gene_id for t in plan.tasks if t.gene.gene_id in done], left_out=plan.left_out)
        try:
            results = map_tasks(build_gene, todo, workers=config.workers, scheduler=scheduler, progress=config.progress)
        finally:
            write_gene_index(config.store)  # genes published before an error stay listed: the store stays valid
        report.built = [t.gene.gene_id for t in todo]
        for counts in results:
            for key, value in counts.items():
                report.counts[key] = report.counts.get(key, 0) + value
        shutil.rmtree(config.store / schemas.STAGING_DIR, ignore_errors=True)
    report.seconds = time.perf_counter() - started
    return report


def _check_removable(path: Path) -> None:
    """--force deletes a store's contents: refuse anything that is not a store."""
    if path.is_dir() and has_contents(path) and not only_store_entries(path):
        root_meta = path / "zarr.json"
        text = root_meta.read_text() if root_meta.is_file() else ""
        if schemas.FORMAT_ATTRIBUTE not in text and schemas.EMPTYING_ATTRIBUTE not in text:
            raise InputError(f"store {path}: --force would delete it, but it is not a performer-store store; remove it yourself")


def _empty(path: Path) -> None:
    """Delete a store's contents (the directory itself stays: it holds the lock). The root is first marked as being
    emptied, everything else is moved whole into the staging directory and the root's zarr.json goes last, so a killed
    `--force` leaves a store that the next build empties again."""
    root_meta, trash = path / "zarr.json", staging_path(path, EMPTIED)
    trash.mkdir(parents=True)
    if root_meta.is_file():  # first, in one step: the store is no longer complete, and only a store being emptied
        marked = trash / "marked-zarr.json"  # no store entry has this name
        marked.write_text(json.dumps({**json.loads(root_meta.read_text()), "attributes": {schemas.EMPTYING_ATTRIBUTE: True}}))
        os.replace(marked, root_meta)
    for entry in path.iterdir():
        if entry.name not in (schemas.STAGING_DIR, "zarr.json"):
            os.rename(entry, trash / entry.name)
    (path / "zarr.json").unlink(missing_ok=True)
    clear_staging(path)
