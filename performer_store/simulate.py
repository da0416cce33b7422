"""Simulated GTEx-like cohorts with ground truth, for tests and benchmarks.

Per gene, one coalescent simulation of its 49,152-bp window (stdpopsim HomSap ``OutOfAfrica_2T12``,
~87% EUR / 13% AFR), a synthetic or real reference with JASPAR motifs planted into a promoter and
enhancers, causal SNVs that create or break those motifs, inverse-normal expression and CAVIAR-like
fine-mapped eQTLs. Internally every position is 0-based and every interval 0-based half-open; files
follow their formats (VCF POS and GTF are 1-based, BED is 0-based half-open).

msprime, stdpopsim and pyjaspar live in the optional ``simulate`` extra: they are imported inside
:func:`simulate_cohort`.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import string
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pysam
from scipy.special import ndtri
from tqdm import tqdm

from .inputs import InputError, make_directory

logger = logging.getLogger(__name__)

WINDOW = 49_152  # default window; --window takes others (e.g. Enformer's full 196,608 bp)
MIN_WINDOW = 8_192  # room for a promoter and distal enhancers
DEMOGRAPHIC_MODEL = "OutOfAfrica_2T12"
AFR_FRACTION = 0.13
EXPRESSION_ONLY_PEOPLE = 2
NO_EXPRESSION_FRACTION = 0.02
JASPAR_RELEASE = "JASPAR2024"
# JASPAR CORE vertebrates: SP1, KLF4, CTCF, YY1, NRF1, ELK1, GABPA, CEBPB, SPI1, GATA1,
# RUNX1, NFKB1, IRF1, STAT1, CREB1, USF1, NFYA, MAX, ETS1, FOS::JUN.
MOTIF_IDS = (
    "MA0079.5", "MA0039.5", "MA0139.2", "MA0095.4", "MA0506.3", "MA0028.3", "MA0062.4",
    "MA0466.4", "MA0080.7", "MA0035.5", "MA0002.3", "MA0105.4", "MA0050.4", "MA0137.4",
    "MA0018.5", "MA0093.4", "MA0060.4", "MA0058.4", "MA0098.4", "MA0099.4",
)  # fmt: skip
MOTIF_PSEUDOCOUNT = 0.25
SYNTHETIC_CONTIGS = ("chr1", "chr2", "chr3")
TELOMERE = 10_000
GC_BEFORE_DEAMINATION = 0.44
CPG_DEAMINATED = 0.8
MIN_ACGT_FRACTION = 0.99
MEAN_EXPRESSION = (2.0, 1.5, 0.5)  # log2 TPM: intercept, per SD of promoter CpG count, noise SD
GENE_SPACING = (60_000, 150_000)
PROMOTER = (-1_000, 300)
DISTAL_FROM, DISTAL_EDGE = 2_000, 1_000  # enhancers 2 kb from the TSS up to 1 kb inside the window edge
MOTIF_MARGIN = 30
PROXIMAL_SPACING = 50
DISTAL_SPACING = 2_000
ELEMENT_GAP = 200
INDEL_LENGTHS = {"insertion": (1, 13), "deletion": (1, 21), "<DEL>": (500, 3_000)}
COMMON_MAF = 0.05
RARE_MAF = 0.005
ZERO_H2_FRACTION = 0.22
MAX_H2 = 0.6
DETECTABLE_Z = 5.0
CREDIBLE_R2 = 0.5
CREDIBLE_MASS = 0.95
WAKEFIELD_PRIOR_VARIANCE = 0.15**2
VERSION_STEP = 3  # cohort k of a split population has gene versions + 3k (ENSG....11 -> ENSG....14)
CHROMATIN_STATES = ("15_Quies", "13_ReprPC", "5_TxWk", "4_Tx", "7_Enh", "1_TssA")  # later paints over

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
BASE_LETTERS = np.array(list("ACGT"), dtype=object)
BASE_CODE = np.full(256, -1, dtype=np.int8)
BASE_CODE[BASES] = np.arange(4)
TRANSITION = np.array([2, 3, 0, 1])  # A<>G, C<>T
TRANSVERSIONS = np.array([[1, 3], [0, 2], [1, 3], [0, 2]])
# Unphased GT text (3 characters and a tab) indexed by allele1 * 3 + allele2; index 9 is missing.
GT_TEXT = np.frombuffer(
    "".join([f"{min(a, b)}/{max(a, b)}\t" for a in range(3) for b in range(3)] + ["./.\t"]).encode(),
    dtype=np.uint8,
).reshape(10, 4)
MISSING_GT = 9

FILE_NAMES = {
    "reference": "reference.fa",
    "vcf": "genotypes.vcf.gz",
    "annotation": "annotation.gtf.gz",
    "expression": "expression.bed.gz",
    "chromatin_states": "chromatin_states.bed",
    "finemapped_eqtls": "finemapped_eqtls.tsv",
    "truth_variants": "truth_variants.tsv",
    "truth_genes": "truth_genes.tsv",
    "mean_expression": "mean_expression.tsv",
    "genes": "genes.txt",
    "cohort": "cohort.json",
}
VCF_HEADER_LINES = (
    '##INFO=<ID=SVTYPE,Number=1,Type=String,Description="Type of structural variant">',
    '##INFO=<ID=END,Number=1,Type=Integer,Description="End position of the structural variant">',
    '##INFO=<ID=SVLEN,Number=1,Type=Integer,Description="Length difference of the SV allele">',
    '##ALT=<ID=DEL,Description="Deletion">',
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
)


@dataclass(frozen=True)
class CohortFiles:
    """Paths of a simulated cohort inside ``out_dir`` (indexes sit beside them) and its summary.

    Attributes
    ----------
    reference
        ``reference.fa``: plain FASTA, 60 bases a line, with ``.fai``.
    vcf
        ``genotypes.vcf.gz``: VCFv4.2, unphased GT, sorted, bgzipped, with ``.tbi``; IDs
        ``chr1_12345_A_G_b38`` on bi-allelic SNVs, ``.`` otherwise.
    annotation
        ``annotation.gtf.gz``: GENCODE-style gene, transcript and exon lines, 1-based inclusive.
    expression
        ``expression.bed.gz``: GTEx v8 layout ``#chr start end gene_id`` then people, start = 0-based TSS,
        inverse-normal values to 6 decimals, with ``.tbi``.
    chromatin_states
        ``chromatin_states.bed``: ChromHMM-like ``chrom start end state`` tiling each window on its contig.
    finemapped_eqtls
        ``finemapped_eqtls.tsv``: gene_id, variant_id, contig, position (1-based), ref, alt, pip, credible_set.
    truth_variants
        ``truth_variants.tsv``: causal SNVs: gene_id, variant_id, contig, position (1-based), ref, alt, effect
        (per ALT allele, pre-transform scale), maf, motif_id, motif_name, motif_change (create|break),
        element (promoter|enhancer), tss_distance (strand-aware).
    truth_genes
        ``truth_genes.tsv``: gene_id, gene_name, contig, tss (0-based), strand, h2 (target), h2_realized,
        n_causal.
    mean_expression
        ``mean_expression.tsv``: gene_id, mean_expression (mean log2 TPM across people), promoter_cpg:
        2 + 1.5 x the standardized CpG count of the promoter (TSS -1,000 to +300 bp, reference after planting;
        GC-rich motifs such as SP1 add CpGs) + N(0, 0.5^2) noise, so the across-gene level follows sequence.
    genes
        ``genes.txt``: one gene_id per line.
    cohort
        ``cohort.json``: ``summary`` as written.
    summary
        Arguments, models, JASPAR release and motif IDs, people counts, and measured statistics
        (``snvs_per_window``, ``fraction_maf_below_1pct``, ``fraction_maf_below_5pct``, ``gc_fraction``,
        ``cpg_observed_expected``).
    """

    out_dir: Path
    reference: Path
    vcf: Path
    annotation: Path
    expression: Path
    chromatin_states: Path
    finemapped_eqtls: Path
    truth_variants: Path
    truth_genes: Path
    mean_expression: Path
    genes: Path
    cohort: Path
    summary: dict


@dataclass(frozen=True)
class _Motif:
    """A JASPAR matrix as base probabilities, shape (length, 4) over A, C, G, T."""

    matrix_id: str
    name: str
    probs: np.ndarray


@dataclass(frozen=True)
class _People:
    """Simulated people in simulation order (person i owns haplotypes 2i and 2i+1); file columns by ID."""

    sample_id: np.ndarray
    vcf_order: np.ndarray
    expression_order: np.ndarray


@dataclass(frozen=True)
class _Gene:
    """A gene model: TSS (0-based), strand, and exons (0-based half-open, in transcript order)."""

    gene_id: str
    name: str
    gene_type: str
    contig: str
    tss: int
    strand: str
    exons: tuple[tuple[int, int], ...]
    half_window: int

    @property
    def sign(self) -> int:
        """+1 on the forward strand, -1 on the reverse strand."""
        return 1 if self.strand == "+" else -1

    @property
    def window(self) -> tuple[int, int]:
        """The window centred on the TSS; starts below 0 where it runs off the contig."""
        return self.tss - self.half_window, self.tss + self.half_window

    @property
    def distal(self) -> tuple[int, int]:
        """TSS distances where enhancers and distal causal variants go."""
        return DISTAL_FROM, self.half_window - DISTAL_EDGE

    @property
    def span(self) -> tuple[int, int]:
        """The gene body."""
        starts, ends = zip(*self.exons)
        return min(starts), max(ends)

    def interval(self, start: int, end: int) -> tuple[int, int]:
        """Genome interval of the TSS-relative offsets [start, end) on the gene's strand."""
        return _strand_interval(self.tss, self.sign, start, end)


@dataclass(frozen=True)
class _Element:
    """A regulatory element: ``promoter`` or ``enhancer``."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class _Causal:
    """A causal SNV and the motif instance planted over it."""

    position: int
    ref: str
    alt: str
    motif: _Motif
    motif_change: str
    element: str


@dataclass(frozen=True)
class _Records:
    """VCF records of one window: 0-based positions, alleles, and haplotypes (records, 2 x people)
    coded 0 for REF and k for the k-th ALT."""

    contig: str
    position: np.ndarray
    ref: np.ndarray
    alt: np.ndarray
    info: np.ndarray
    haplotypes: np.ndarray

    @property
    def is_biallelic_snv(self) -> np.ndarray:
        """Records with one REF base and one ALT base."""
        return (np.char.str_len(self.ref.astype(str)) == 1) & (np.char.str_len(self.alt.astype(str)) == 1)


@dataclass(frozen=True)
class _Simulation:
    """What every gene's simulation shares."""

    seed: int
    engine: Any
    model: Any
    contig: Any
    samples: dict[str, int]
    people: _People
    motifs: list[_Motif]
    multiallelic: bool
    indels: bool
    missing_rate: float


@dataclass(frozen=True)
class _GeneResult:
    """One simulated gene window: VCF records and calls (records, VCF people), expression and truth."""

    records: _Records
    calls: np.ndarray
    expression: np.ndarray
    truth_gene: dict
    truth_variants: pd.DataFrame
    finemapped: pd.DataFrame
    chromatin_states: pd.DataFrame


def simulate_cohort(
    out_dir: Path,
    *,
    individuals: int = 670,
    genes: int = 24,
    seed: int = 0,
    multiallelic: bool = False,
    indels: bool = False,
    missing_rate: float = 0.002,
    reference: Path | None = None,
    window: int = WINDOW,
    progress: bool = False,
    force: bool = False,
) -> CohortFiles:
    """Write a realistic GTEx-like cohort with ground truth into ``out_dir``.

    The same arguments give byte-identical files. A folder that holds a cohort already is refused unless
    ``force``; then its files are replaced only once all new ones are written.

    Parameters
    ----------
    out_dir
        Output folder, created if needed.
    individuals
        People in the VCF. Two more people have expression only, and ~2% of the genotyped people
        have no expression.
    genes
        Genes, one window each, spread over the contigs.
    seed
        Seed of every random draw.
    multiallelic
        Give ~1% of the SNVs a second ALT.
    indels
        Add 2-3 indels per gene and one symbolic ``<DEL>``.
    missing_rate
        Fraction of genotype calls written as ``./.``.
    reference
        A plain or gzip/bgzip FASTA to take windows from instead of synthetic ``chr1``-``chr3``.
    window
        Window simulated around each TSS (genotypes, elements, causal variants); genes are spaced so
        that windows do not overlap.
    progress
        Show a progress bar over genes.
    force
        Replace the cohort files ``out_dir`` holds already (refused otherwise).
    """
    return simulate_cohorts([out_dir], individuals=[individuals], genes=genes, seed=seed, multiallelic=multiallelic,
                            indels=indels, missing_rate=missing_rate, reference=reference, window=window,
                            progress=progress, force=force)[0]


def check_out_dirs(out_dirs: Sequence[Path], force: bool) -> None:
    """Each cohort gets its own folder, one that holds no cohort yet (unless ``force``) and can be created."""
    seen: dict[Path, Path] = {}
    for out_dir in map(Path, out_dirs):
        if out_dir.resolve() in seen:
            raise InputError(f"cohort folder {out_dir}: given for two cohorts (OUT_DIR and --second-cohort are one folder); "
                             "give each cohort its own folder")
        seen[out_dir.resolve()] = out_dir
        found = [name for name in FILE_NAMES.values() if (out_dir / name).exists()]
        if found and not force and not interrupted(out_dir):
            listed = ", ".join(found[:3]) + ", ..." * (len(found) > 3)
            raise InputError(f"cohort folder {out_dir}: holds a cohort already ({listed}); "
                             "pass --force to replace it, or choose another folder")
    for out_dir in out_dirs:
        make_directory(Path(out_dir))


def simulate_cohorts(
    out_dirs: Sequence[Path],
    *,
    individuals: Sequence[int],
    genes: int = 24,
    seed: int = 0,
    multiallelic: bool = False,
    indels: bool = False,
    missing_rate: float = 0.002,
    reference: Path | None = None,
    window: int = WINDOW,
    progress: bool = False,
    force: bool = False,
) -> list[CohortFiles]:
    """Cohorts with disjoint people drawn from one simulated population, one folder each (cross-cohort tests).

    One population of ``sum(individuals)`` genotyped people is simulated as by :func:`simulate_cohort` (which
    is the one-folder case) and its people are split at random: cohort k gets ``individuals[k]`` of them (and
    some of the two expression-only people). The cohorts share the reference, genes, windows, causal variants
    and effects; each has its own people (so its own sample IDs), a VCF of the records polymorphic among its
    people (so rare variants of one cohort are missing from another), expression inverse-normal transformed
    within the cohort, and gene IDs whose version is raised by 3 per cohort (``ENSG....11`` in the first,
    ``ENSG....14`` in the second), as in two releases of GENCODE. The truth and fine-mapping tables describe
    the whole population (gene IDs as in each cohort); ``cohort.json`` records the split. The folders are
    checked by :func:`check_out_dirs` before anything is simulated.
    """
    if len(out_dirs) != len(individuals) or not out_dirs:
        raise ValueError(f"give one people count per cohort folder (got {len(out_dirs)} folders, {len(individuals)} counts)")
    for count in individuals:
        _check_arguments(count, genes, seed, missing_rate, reference, window)
    stdpopsim, pyjaspar = _import_simulation_extras()
    check_out_dirs(out_dirs, force)
    species = stdpopsim.get_species("HomSap")
    model = species.get_demographic_model(DEMOGRAPHIC_MODEL)
    samples = _population_sizes(sum(individuals))
    simulation = _Simulation(
        seed=seed,
        engine=stdpopsim.get_engine("msprime"),
        model=model,
        contig=species.get_contig(
            length=window,
            mutation_rate=model.mutation_rate,
            recombination_rate=species.genome.mean_recombination_rate,
        ),
        samples=samples,
        people=_people(sum(samples.values()), _rng(seed, "people")),
        motifs=_load_motifs(pyjaspar),
        multiallelic=multiallelic,
        indels=indels,
        missing_rate=missing_rate,
    )
    if reference is None:
        sequences, layout = _synthetic_genome(genes, window, _rng(seed, "genome"))
    else:
        sequences, layout = _reference_genome(Path(reference), genes, window, _rng(seed, "genome"))
    gene_models = _gene_models(layout, sequences, window, _rng(seed, "genes"))
    heritability = _heritabilities(len(gene_models), _rng(seed, "h2"))
    results = [
        _simulate_gene(simulation, index, gene, heritability[index], sequences[gene.contig])
        for index, gene in enumerate(tqdm(gene_models, desc="simulating genes", disable=not progress))
    ]
    means = _mean_expression(gene_models, sequences, _rng(seed, "mean_expression"))
    arguments = {"genes": genes, "seed": seed, "multiallelic": multiallelic, "indels": indels, "missing_rate": missing_rate,
                 "reference": None if reference is None else str(reference), "window": window}
    if len(out_dirs) == 1:
        return [_write_cohort(Path(out_dirs[0]), sequences, gene_models, simulation.people, results, means,
                              {"individuals": individuals[0], **arguments, **_simulation_summary(simulation, species, stdpopsim.__version__)})]
    files = []
    for index, (out_dir, people) in enumerate(zip(out_dirs, _split_people(simulation.people, individuals, _rng(seed, "cohorts")))):
        shift = VERSION_STEP * index
        cohort_genes = [replace(gene, gene_id=_shifted_version(gene.gene_id, shift)) for gene in gene_models]
        cohort_results = [_cohort_result(result, simulation.people, people, gene.gene_id) for result, gene in zip(results, cohort_genes)]
        split = {"index": index, "folders": [str(d) for d in out_dirs], "individuals": list(individuals), "gene_version_shift": shift}
        summary = {"individuals": individuals[index], **arguments, "cohort_split": split,
                   **_simulation_summary(replace(simulation, people=people), species, stdpopsim.__version__)}
        cohort_means = means.assign(gene_id=[gene.gene_id for gene in cohort_genes])
        files.append(_write_cohort(Path(out_dir), sequences, cohort_genes, people, cohort_results, cohort_means, summary))
    return files


def _write_cohort(out_dir: Path, sequences: dict[str, np.ndarray], genes: list[_Gene], people: _People,
                  results: list[_GeneResult], means: pd.DataFrame, summary: dict) -> CohortFiles:
    """Measure a cohort's statistics, write its files and return their paths."""
    stats = _cohort_stats(sequences, genes, results, summary["window"])
    summary = {**summary, **stats}
    _write_outputs(out_dir, sequences, genes, people, results, means, summary)
    logger.info("simulated cohort in %s: %s", out_dir, stats)
    return CohortFiles(out_dir=out_dir, summary=summary, **{k: out_dir / v for k, v in FILE_NAMES.items()})


def _split_people(people: _People, sizes: Sequence[int], rng: np.random.Generator) -> list[_People]:
    """Disjoint cohorts of a population: sizes[k] genotyped people each, the expression-only people dealt out."""
    genotyped = np.split(rng.permutation(people.vcf_order), np.cumsum(sizes)[:-1])
    expression_only = np.array_split(rng.permutation(np.setdiff1d(np.arange(people.sample_id.size), people.vcf_order)), len(sizes))
    cohorts = []
    for members in map(np.concatenate, zip(genotyped, expression_only)):
        cohorts.append(_People(sample_id=people.sample_id, vcf_order=people.vcf_order[np.isin(people.vcf_order, members)],
                               expression_order=people.expression_order[np.isin(people.expression_order, members)]))
    return cohorts


def _shifted_version(gene_id: str, shift: int) -> str:
    """A GENCODE ID with its version raised: ENSG00000120758.11 + 3 -> ENSG00000120758.14."""
    stem, version = gene_id.rsplit(".", 1)
    return f"{stem}.{int(version) + shift}"


def _cohort_result(result: _GeneResult, population: _People, people: _People, gene_id: str) -> _GeneResult:
    """A gene's result for one cohort: its people's calls of the records polymorphic among them, expression
    inverse-normal within the cohort, truth tables under the cohort's gene ID."""
    calls = result.calls[:, np.isin(population.vcf_order, people.vcf_order)]
    keep = ((calls != MISSING_GT) & ((calls // 3 > 0) | (calls % 3 > 0))).any(axis=1)
    records = result.records
    records = _Records(records.contig, records.position[keep], records.ref[keep], records.alt[keep], records.info[keep],
                       records.haplotypes[keep])
    expression = _inverse_normal(result.expression[np.isin(population.expression_order, people.expression_order)])
    return replace(result, records=records, calls=calls[keep], expression=expression,
                   truth_gene={**result.truth_gene, "gene_id": gene_id},
                   truth_variants=result.truth_variants.assign(gene_id=gene_id), finemapped=result.finemapped.assign(gene_id=gene_id))


def _check_arguments(
    individuals: int, genes: int, seed: int, missing_rate: float, reference: Path | None, window: int
) -> None:
    """Reject arguments the simulation cannot honour, saying what is allowed."""
    if individuals < 10:
        raise ValueError(f"individuals must be at least 10 (got {individuals})")
    if genes < 1:
        raise ValueError(f"genes must be at least 1 (got {genes})")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer (got {seed})")
    if not 0 <= missing_rate < 1:
        raise ValueError(f"missing_rate must be in [0, 1) (got {missing_rate})")
    if window < MIN_WINDOW or window % 2:
        raise ValueError(f"window must be an even number of bp, at least {MIN_WINDOW:,} (got {window})")
    if reference is not None and not Path(reference).is_file():
        raise ValueError(f"reference FASTA {reference} does not exist; pass a FASTA file or leave it out")


def _import_simulation_extras() -> tuple[Any, Any]:
    """Import stdpopsim (which runs msprime) and pyjaspar, naming the extra that provides them."""
    try:
        import msprime  # noqa: F401  (stdpopsim's engine)
        import pyjaspar
        import stdpopsim
    except ImportError as error:
        raise ImportError(
            f"simulating a cohort needs {error.name or 'msprime, stdpopsim and pyjaspar'}: "
            "pip install 'performer-store[simulate]'"
        ) from error
    return stdpopsim, pyjaspar


def _rng(seed: int, stage: str, *keys: int) -> np.random.Generator:
    """An independent random stream for one stage (and e.g. one gene) of a seeded simulation."""
    return np.random.default_rng([seed, zlib.crc32(stage.encode()), *keys])


def _load_motifs(pyjaspar: Any) -> list[_Motif]:
    """The curated motifs from the pinned JASPAR release, as probabilities with a small pseudocount."""
    database = pyjaspar.jaspardb(release=JASPAR_RELEASE)
    motifs = []
    for matrix_id in MOTIF_IDS:
        motif = database.fetch_motif_by_id(matrix_id)
        counts = np.array([motif.counts[base] for base in "ACGT"], dtype=float).T + MOTIF_PSEUDOCOUNT
        motifs.append(_Motif(matrix_id, motif.name, counts / counts.sum(axis=1, keepdims=True)))
    return motifs


def _population_sizes(individuals: int) -> dict[str, int]:
    """Diploid sample sizes per population, GTEx-like 87% EUR / 13% AFR, including expression-only people."""
    total = individuals + EXPRESSION_ONLY_PEOPLE
    afr = round(AFR_FRACTION * total)
    return {"EUR": total - afr, "AFR": afr}


def _people(count: int, rng: np.random.Generator) -> _People:
    """IDs, and who is in the VCF and in the expression file (the realistic mismatch)."""
    everyone = np.arange(count)
    sample_id = _participant_ids(count, rng)
    expression_only = rng.choice(everyone, EXPRESSION_ONLY_PEOPLE, replace=False)
    genotyped = np.setdiff1d(everyone, expression_only)
    no_expression = rng.choice(genotyped, max(1, round(NO_EXPRESSION_FRACTION * genotyped.size)), replace=False)
    with_expression = np.setdiff1d(everyone, no_expression)
    return _People(
        sample_id=sample_id,
        vcf_order=genotyped[np.argsort(sample_id[genotyped])],
        expression_order=with_expression[np.argsort(sample_id[with_expression])],
    )


def _participant_ids(count: int, rng: np.random.Generator) -> np.ndarray:
    """Unique GTEx-like participant IDs: ``GTEX-`` and 4-5 uppercase letters or digits."""
    alphabet = np.array(list(string.digits + string.ascii_uppercase))
    letters = alphabet[rng.integers(0, alphabet.size, size=(2 * count, 5))]
    lengths = rng.integers(4, 6, size=2 * count)
    candidates = np.array(["GTEX-" + "".join(row[:length]) for row, length in zip(letters, lengths)])
    _, first = np.unique(candidates, return_index=True)
    return candidates[np.sort(first)[:count]]


def _gene_spacing(window: int) -> tuple[int, int]:
    """TSS-to-TSS distances: 60-150 kb for the default window, widened so that longer windows never overlap."""
    extra = max(window - WINDOW, 0)
    return GENE_SPACING[0] + extra, GENE_SPACING[1] + extra


def _synthetic_genome(
    genes: int, window: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], list[tuple[str, int]]]:
    """Synthetic contigs and gene TSSs; the first chr1 window runs off the contig start, another has an N gap."""
    half = window // 2
    layout = []
    for index, contig in enumerate(SYNTHETIC_CONTIGS[:genes]):
        after_telomere = rng.integers(4_000, 12_000) if index == 0 else half + rng.integers(5_000, 60_000)
        first = TELOMERE + int(after_telomere)
        spacing = rng.integers(*_gene_spacing(window), size=len(range(index, genes, len(SYNTHETIC_CONTIGS))) - 1)
        layout += [(contig, first + int(offset)) for offset in np.concatenate([[0], np.cumsum(spacing)])]
    last_tss = {contig: tss for contig, tss in layout}
    sequences = {
        contig: _synthetic_sequence(max(tss + half + int(rng.integers(20_000, 80_000)), window), rng)  # >= one window
        for contig, tss in last_tss.items()
    }
    contig, tss = layout[min(1, len(layout) - 1)]
    gap_start = tss + int(rng.integers(4_000, 18_000))
    sequences[contig][gap_start : gap_start + int(rng.integers(300, 1_500))] = ord("N")
    return sequences, layout


def _synthetic_sequence(length: int, rng: np.random.Generator) -> np.ndarray:
    """Uppercase ASCII bases with human-like GC (~41%) and CpG depletion, after a telomeric run of Ns."""
    gc = GC_BEFORE_DEAMINATION / 2
    codes = rng.choice(4, size=length, p=[0.5 - gc, gc, gc, 0.5 - gc]).astype(np.uint8)
    cpg = np.flatnonzero((codes[:-1] == 1) & (codes[1:] == 2))
    cpg = cpg[rng.random(cpg.size) < CPG_DEAMINATED]
    on_forward = rng.random(cpg.size) < 0.5
    codes[cpg[on_forward]] = 3  # CpG -> TpG
    codes[cpg[~on_forward] + 1] = 0  # CpG -> CpA (C -> T on the reverse strand)
    sequence = BASES[codes]
    sequence[:TELOMERE] = ord("N")
    return sequence


def _reference_genome(
    path: Path, genes: int, window: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], list[tuple[str, int]]]:
    """The contigs of a real FASTA that receive genes, and TSSs apart by `_gene_spacing` with mostly A/C/G/T windows."""
    sequences = _read_fasta(path)
    half, spacing = window // 2, _gene_spacing(window)
    names = list(sequences)
    layout = []
    for index, contig in enumerate(names[:genes]):
        acgt = BASE_CODE[sequences[contig]] >= 0
        tss = int(np.argmax(acgt)) + half + int(rng.integers(0, spacing[1]))
        for _ in range(index, genes, len(names)):
            while np.count_nonzero(acgt[tss - half : tss + half]) < MIN_ACGT_FRACTION * window:
                if tss + half >= acgt.size:
                    raise ValueError(
                        f"{path}: contig {contig!r} ({acgt.size:,} bp) has no room for another gene window "
                        f"that is {MIN_ACGT_FRACTION:.0%} A/C/G/T; pass fewer genes (got {genes}) or longer contigs"
                    )
                tss += 10_000
            layout.append((contig, tss))
            tss += int(rng.integers(*spacing))
    return {name: sequences[name] for name in names[:genes]}, layout


def _read_fasta(path: Path) -> dict[str, np.ndarray]:
    """Every contig of a plain or gzip/bgzip FASTA as uppercase ASCII arrays, named by the header's first word."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as handle:
        text = handle.read()
    sequences = {}
    for record in text.split(b">")[1:]:
        header, _, body = record.partition(b"\n")
        sequences[header.split()[0].decode()] = np.frombuffer(body.translate(None, b"\r\n").upper(), np.uint8).copy()
    if not sequences:
        raise ValueError(f"{path}: no FASTA records ('>' header lines) found")
    return sequences


def _strand_interval(tss: int, sign: int, start: int, end: int) -> tuple[int, int]:
    """Genome interval of TSS-relative offsets [start, end) read along a strand (+1 or -1)."""
    if sign > 0:
        return tss + start, tss + end
    return tss - end + 1, tss - start + 1


def _gene_models(
    layout: list[tuple[str, int]], sequences: dict[str, np.ndarray], window: int, rng: np.random.Generator
) -> list[_Gene]:
    """Gene models at the TSSs: both strands, 2-40 kb bodies kept on sequence, 1-3 exons, some lncRNAs."""
    strands = np.where(rng.permutation(len(layout)) % 2 == 0, "+", "-")
    numbers = rng.choice(np.arange(100_000, 300_000), size=len(layout), replace=False)
    bounds = {contig: _acgt_bounds(sequence) for contig, sequence in sequences.items()}
    models = []
    for index, ((contig, tss), strand, number) in enumerate(zip(layout, strands, numbers)):
        first, last = bounds[contig]
        sign = 1 if strand == "+" else -1
        room = last - tss if sign > 0 else tss + 1 - first
        length = int(min(np.exp(rng.uniform(np.log(2_000), np.log(40_000))), room))
        exons = tuple(_strand_interval(tss, sign, start, end) for start, end in _exon_offsets(length, rng))
        models.append(
            _Gene(
                gene_id=f"ENSG{number:011d}.{rng.integers(1, 15)}",
                name=f"SIM{index // 26 + 1}{string.ascii_uppercase[index % 26]}",
                gene_type="lncRNA" if rng.random() < 0.15 else "protein_coding",
                contig=contig,
                tss=tss,
                strand=strand,
                exons=exons,
                half_window=window // 2,
            )
        )
    return models


def _acgt_bounds(sequence: np.ndarray) -> tuple[int, int]:
    """First A/C/G/T position and one past the last."""
    acgt = BASE_CODE[sequence] >= 0
    return int(np.argmax(acgt)), int(acgt.size - np.argmax(acgt[::-1]))


def _exon_offsets(length: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """1-3 exons as TSS-relative offsets: the first starts at the TSS, the last ends at the gene end."""
    count = int(rng.integers(1, 4))
    if count == 1 or length < 2_000:
        return [(0, length)]
    first, last = int(rng.integers(100, 600)), int(rng.integers(100, 600))
    exons = [(0, first), (length - last, length)]
    if count == 3:
        size = int(rng.integers(80, 300))
        start = int(rng.integers(first + 200, length - last - size - 200))
        exons.insert(1, (start, start + size))
    return exons


def _heritabilities(count: int, rng: np.random.Generator) -> np.ndarray:
    """Target cis-h2 per gene, stratified: ~22% exactly 0, the rest spread up to 0.6 and skewed low."""
    quantile = (rng.permutation(count) + rng.random(count)) / count
    spread = MAX_H2 * ((quantile - ZERO_H2_FRACTION) / (1 - ZERO_H2_FRACTION)).clip(0) ** 1.5
    return np.where(quantile < ZERO_H2_FRACTION, 0.0, np.maximum(spread, 0.01))


def _simulate_gene(simulation: _Simulation, index: int, gene: _Gene, h2: float, sequence: np.ndarray) -> _GeneResult:
    """Genotypes, planted elements, causal SNVs, expression and fine-mapping of one gene window."""
    rng = _rng(simulation.seed, "gene", index)
    people = simulation.people
    ts = simulation.engine.simulate(
        simulation.model, simulation.contig, simulation.samples, seed=int(rng.integers(1, 2**31))
    )
    position, derived = _window_sites(ts, gene, sequence)
    causals, elements = _design_gene(gene, position, derived, sequence, h2, people, simulation.motifs, rng)
    records = _snv_records(gene.contig, sequence, position, derived, causals, rng)
    if simulation.multiallelic:
        records = _with_second_alts(records, causals, _rng(simulation.seed, "multiallelic", index))
    if simulation.indels:
        extra = _indel_records(gene, sequence, records, elements, index == 0, _rng(simulation.seed, "indels", index))
        records = _merged_records(records, extra)
    rows = np.searchsorted(records.position, np.array([c.position for c in causals], dtype=np.int64))
    causal_dosage = _alt_dosage(records.haplotypes[rows])
    expression, effects, h2_realized = _expression(causal_dosage[:, people.expression_order], causals, h2, rng)
    calls = _calls(records, people, simulation.missing_rate, _rng(simulation.seed, "missing", index))
    truth_gene = {
        "gene_id": gene.gene_id,
        "gene_name": gene.name,
        "contig": gene.contig,
        "tss": gene.tss,
        "strand": gene.strand,
        "h2": h2,
        "h2_realized": h2_realized,
        "n_causal": len(causals),
    }
    return _GeneResult(
        records=records,
        calls=calls,
        expression=expression,
        truth_gene=truth_gene,
        truth_variants=_truth_variants(gene, causals, effects, causal_dosage[:, people.vcf_order]),
        finemapped=_finemap(gene, records, calls, expression, people, rows),
        chromatin_states=_chromatin_states(gene, elements, sequence.size, rng),
    )


def _window_sites(ts: Any, gene: _Gene, sequence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Polymorphic sites on A/C/G/T reference bases: 0-based positions and derived haplotypes (sites, haplotypes)."""
    derived = ts.genotype_matrix() > 0  # allele 0 is ancestral; every other allele counts as derived
    position = gene.window[0] + ts.tables.sites.position.astype(np.int64)
    carriers = derived.sum(axis=1)
    keep = (carriers > 0) & (carriers < derived.shape[1]) & (position >= 0) & (position < sequence.size)
    keep[keep] = BASE_CODE[sequence[position[keep]]] >= 0
    return position[keep], derived[keep]


def _design_gene(
    gene: _Gene,
    position: np.ndarray,
    derived: np.ndarray,
    sequence: np.ndarray,
    h2: float,
    people: _People,
    motifs: list[_Motif],
    rng: np.random.Generator,
) -> tuple[list[_Causal], list[_Element]]:
    """Choose causal SNVs, place a promoter and enhancers around them, and plant motifs into the sequence."""
    frequency = _alt_dosage(derived.astype(np.int8))[:, people.expression_order].mean(axis=1) / 2
    maf = np.minimum(frequency, 1 - frequency)
    count = int(rng.integers(1, 7)) if h2 > 0 else 0
    proximal, distal = _choose_causal_sites(gene, position, maf, sequence, count, rng)
    promoter = _Element("promoter", *gene.interval(*PROMOTER))
    enhancers = _place_enhancers(gene, position[distal], promoter, sequence, rng)
    causals = _plant_element(sequence, promoter, list(position[proximal]), motifs, rng)
    for enhancer, sites in enhancers:
        causals += _plant_element(sequence, enhancer, sites, motifs, rng)
    return sorted(causals, key=lambda c: c.position), [promoter, *(enhancer for enhancer, _ in enhancers)]


def _choose_causal_sites(
    gene: _Gene, position: np.ndarray, maf: np.ndarray, sequence: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Site indices of causal SNVs, a mix of common and rare, proximal (promoter) and distal (enhancer)."""
    offset = (position - gene.tss) * gene.sign
    in_promoter = (offset >= PROMOTER[0] + MOTIF_MARGIN) & (offset < PROMOTER[1] - MOTIF_MARGIN)
    in_distal = (np.abs(offset) >= gene.distal[0]) & (np.abs(offset) <= gene.distal[1])
    common = maf >= COMMON_MAF
    rare = (maf >= RARE_MAF) & ~common
    available = _all_acgt(sequence, position - MOTIF_MARGIN, position + MOTIF_MARGIN)
    chosen = []
    for _ in range(count):
        places = (in_promoter, in_distal) if rng.random() < 0.35 else (in_distal, in_promoter)
        classes = (common, rare) if rng.random() < 0.55 else (rare, common)
        site = _first_choice([available & place & kind for place in places for kind in classes], rng)
        if site is None:
            break
        chosen.append(site)
        spacing = PROXIMAL_SPACING if in_promoter[site] else DISTAL_SPACING
        available &= np.abs(position - position[site]) >= spacing
    chosen = np.array(chosen, dtype=np.int64)
    return chosen[in_promoter[chosen]], chosen[~in_promoter[chosen]]


def _first_choice(masks: list[np.ndarray], rng: np.random.Generator) -> int | None:
    """A random index from the first mask with any True, or None."""
    for mask in masks:
        candidates = np.flatnonzero(mask)
        if candidates.size:
            return int(rng.choice(candidates))
    return None


def _all_acgt(sequence: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Whether each interval [start, end) lies on the contig and holds only A/C/G/T."""
    starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    if starts.size == 0:
        return np.zeros(0, dtype=bool)
    low = int(np.clip(starts.min(), 0, sequence.size))
    high = int(np.clip(ends.max(), low, sequence.size))
    not_acgt = np.concatenate([[0], np.cumsum(BASE_CODE[sequence[low:high]] < 0)])
    count = not_acgt[np.clip(ends, low, high) - low] - not_acgt[np.clip(starts, low, high) - low]
    return (starts >= 0) & (ends <= sequence.size) & (count == 0)


def _place_enhancers(
    gene: _Gene, distal: np.ndarray, promoter: _Element, sequence: np.ndarray, rng: np.random.Generator
) -> list[tuple[_Element, list[int]]]:
    """Enhancers of 300-800 bp off the promoter: one around each distal causal position, then at least one
    decoy, 2-6 in all unless more distal causal positions each need one."""
    taken = [(promoter.start, promoter.end)]
    enhancers = []
    for site in distal:
        length = int(rng.integers(300, 801))
        start = int(site) - int(rng.integers(MOTIF_MARGIN, length - MOTIF_MARGIN))
        if _fits(gene, sequence, taken, start, start + length):
            taken.append((start, start + length))
            enhancers.append((_Element("enhancer", start, start + length), [int(site)]))
    decoys = max(int(rng.integers(2, 7)) - len(enhancers), 1)
    wanted = len(enhancers) + decoys
    for _ in range(100 * decoys):
        if len(enhancers) == wanted:
            break
        length = int(rng.integers(300, 801))
        start = gene.tss + int(rng.choice([-1, 1]) * rng.integers(*gene.distal)) - length // 2
        if _fits(gene, sequence, taken, start, start + length):
            taken.append((start, start + length))
            enhancers.append((_Element("enhancer", start, start + length), []))
    return sorted(enhancers, key=lambda item: item[0].start)


def _fits(gene: _Gene, sequence: np.ndarray, taken: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether an element fits in the gene window, on A/C/G/T, at least ELEMENT_GAP from taken elements."""
    window_start, window_end = gene.window
    return (
        window_start <= start
        and end <= window_end
        and bool(_all_acgt(sequence, [start], [end])[0])
        and all(end + ELEMENT_GAP <= a or b + ELEMENT_GAP <= start for a, b in taken)
    )


def _plant_element(
    sequence: np.ndarray, element: _Element, sites: list[int], motifs: list[_Motif], rng: np.random.Generator
) -> list[_Causal]:
    """Plant 2-4 motif instances into an element, one over each causal site, which creates or breaks it."""
    occupied = np.zeros(element.end - element.start, dtype=bool)
    causals = []
    for site in sites:
        motif, probs = _oriented_motif(motifs, rng)
        informative = np.argsort(probs.max(axis=1) - probs.min(axis=1), kind="stable")[-3:]
        offset = int(rng.choice(informative))
        strong, weak = int(probs[offset].argmax()), int(probs[offset].argmin())
        change = "break" if rng.random() < 0.6 else "create"
        ref, alt = (strong, weak) if change == "break" else (weak, strong)
        codes = _sample_instance(probs, rng)
        codes[offset] = ref
        start = site - offset
        assert element.start <= start and start + len(codes) <= element.end, "causal motif leaves its element"
        _plant(sequence, occupied, element, start, codes)
        causals.append(_Causal(site, "ACGT"[ref], "ACGT"[alt], motif, change, element.kind))
    for _ in range(max(int(rng.integers(2, 5)) - len(sites), 0)):
        motif, probs = _oriented_motif(motifs, rng)
        free = np.flatnonzero(_run_free(occupied, len(probs)))
        if free.size:
            _plant(sequence, occupied, element, element.start + int(rng.choice(free)), _sample_instance(probs, rng))
    return causals


def _oriented_motif(motifs: list[_Motif], rng: np.random.Generator) -> tuple[_Motif, np.ndarray]:
    """A random motif and its probabilities on a random strand, in genome orientation."""
    motif = motifs[int(rng.integers(len(motifs)))]
    return motif, motif.probs if rng.random() < 0.5 else motif.probs[::-1, ::-1]


def _sample_instance(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Base codes of a high-scoring instance: each position drawn from its squared, renormalized probabilities."""
    sharpened = probs**2 / (probs**2).sum(axis=1, keepdims=True)
    return np.minimum((rng.random(len(probs))[:, None] > sharpened.cumsum(axis=1)).sum(axis=1), 3)


def _run_free(blocked: np.ndarray, length: int) -> np.ndarray:
    """For each start, whether ``length`` positions from it are all unblocked (starts that fit only)."""
    count = np.concatenate([[0], np.cumsum(blocked)])
    return count[length:] == count[:-length]


def _plant(sequence: np.ndarray, occupied: np.ndarray, element: _Element, start: int, codes: np.ndarray) -> None:
    """Write a motif instance into the sequence and mark it occupied within its element."""
    sequence[start : start + len(codes)] = BASES[codes]
    occupied[start - element.start : start - element.start + len(codes)] = True


def _snv_records(
    contig: str,
    sequence: np.ndarray,
    position: np.ndarray,
    derived: np.ndarray,
    causals: list[_Causal],
    rng: np.random.Generator,
) -> _Records:
    """Bi-allelic SNVs: REF from the reference, ALT from a mutation spectrum (or the causal motif change).

    Transitions are twice as likely as transversions, and ~9 in 10 at CpGs. The reference carries the
    derived allele with probability equal to its frequency, as in real data.
    """
    ref = BASE_CODE[sequence[position]]
    after = sequence[np.minimum(position + 1, sequence.size - 1)]
    before = sequence[np.maximum(position - 1, 0)]
    cpg = ((ref == 1) & (after == ord("G"))) | ((ref == 2) & (before == ord("C")))
    transition = rng.random(position.size) < np.where(cpg, 0.9, 2 / 3)
    alt = np.where(transition, TRANSITION[ref], TRANSVERSIONS[ref, rng.integers(0, 2, size=position.size)])
    rows = np.searchsorted(position, np.array([c.position for c in causals], dtype=np.int64))
    alt[rows] = ["ACGT".index(c.alt) for c in causals]
    ref_is_derived = rng.random(position.size) < derived.mean(axis=1)
    return _Records(
        contig=contig,
        position=position,
        ref=BASE_LETTERS[ref],
        alt=BASE_LETTERS[alt],
        info=np.full(position.size, ".", dtype=object),
        haplotypes=(derived ^ ref_is_derived[:, None]).astype(np.int8),
    )


def _with_second_alts(records: _Records, causals: list[_Causal], rng: np.random.Generator) -> _Records:
    """Give ~1% of the non-causal SNVs a second ALT base, carried by a few REF haplotypes."""
    eligible = ~np.isin(records.position, [c.position for c in causals])
    sites = np.flatnonzero(eligible & (rng.random(records.position.size) < 0.01))
    alt, haplotypes = records.alt.copy(), records.haplotypes.copy()
    for site in sites:
        used = {records.ref[site], records.alt[site]}
        second = rng.choice([base for base in "ACGT" if base not in used])
        carriers = np.flatnonzero(haplotypes[site] == 0)
        converted = carriers[rng.random(carriers.size) < rng.uniform(0.01, 0.15)]
        haplotypes[site, converted if converted.size else carriers[:1]] = 2
        alt[site] = f"{alt[site]},{second}"
    return _Records(records.contig, records.position, records.ref, alt, records.info, haplotypes)


def _indel_records(
    gene: _Gene,
    sequence: np.ndarray,
    snvs: _Records,
    elements: list[_Element],
    symbolic: bool,
    rng: np.random.Generator,
) -> _Records:
    """An insertion, a deletion and maybe one more (left-aligned, VCF padding base, REF from the reference),
    and a symbolic ``<DEL>`` when asked; away from SNVs and elements."""
    start, end = max(gene.window[0], 1), min(gene.window[1], sequence.size)
    blocked = BASE_CODE[sequence[start:end]] < 0
    blocked[snvs.position[snvs.position >= start] - start] = True
    for element in elements:
        blocked[element.start - start : element.end - start] = True
    kinds = ["insertion", "deletion", str(rng.choice(["insertion", "deletion"]))][: int(rng.integers(2, 4))]
    rows = []
    for kind in kinds + (["<DEL>"] if symbolic else []):
        length = int(rng.integers(*INDEL_LENGTHS[kind]))
        checked = 1 + length if kind == "deletion" else 1  # the padding base and any deleted bases
        reach = 1 if kind == "insertion" else 1 + length  # reference bases the record spans
        fits = _run_free(blocked, checked)[: blocked.size - reach + 1]
        if kind == "deletion":  # left-aligned: the last deleted base differs from the padding base
            fits &= sequence[start : start + fits.size] != sequence[start + length : start + length + fits.size]
        pad = start + int(rng.choice(np.flatnonzero(fits)))
        blocked[pad - start : pad - start + checked] = True
        base = chr(sequence[pad])
        if kind == "insertion":  # left-aligned: the last inserted base differs from the padding base
            inserted = [*rng.choice(list("ACGT"), size=length - 1), rng.choice([b for b in "ACGT" if b != base])]
            rows.append((pad, base, base + "".join(inserted), "."))
        elif kind == "deletion":
            rows.append((pad, sequence[pad : pad + 1 + length].tobytes().decode(), base, "."))
        else:
            rows.append((pad, base, "<DEL>", f"SVTYPE=DEL;END={pad + 1 + length};SVLEN=-{length}"))
    rows.sort()
    position = np.array([row[0] for row in rows], dtype=np.int64)
    ref, alt, info = (np.array([row[column] for row in rows], dtype=object) for column in (1, 2, 3))
    frequency = rng.uniform(0.02, 0.3, size=(len(rows), 1))
    haplotypes = (rng.random((len(rows), snvs.haplotypes.shape[1])) < frequency).astype(np.int8)
    return _Records(gene.contig, position, ref, alt, info, haplotypes)


def _merged_records(first: _Records, second: _Records) -> _Records:
    """Records of both sets, sorted by position."""
    order = np.argsort(np.concatenate([first.position, second.position]), kind="stable")
    columns = ("position", "ref", "alt", "info", "haplotypes")
    merged = {name: np.concatenate([getattr(first, name), getattr(second, name)])[order] for name in columns}
    return _Records(contig=first.contig, **merged)


def _alt_dosage(haplotypes: np.ndarray) -> np.ndarray:
    """Copies of the first ALT per person, shape (records, people), from haplotypes (records, 2 x people)."""
    return (haplotypes[:, 0::2] == 1).astype(np.int8) + (haplotypes[:, 1::2] == 1)


def _mean_expression(genes: list[_Gene], sequences: dict[str, np.ndarray], rng: np.random.Generator) -> pd.DataFrame:
    """Each gene's mean log2 TPM across people: higher with more CpGs in its promoter (CpG-island promoters are
    broadly and highly expressed), plus noise; a function of the reference window, so sequence models can learn it."""
    cpg = np.array([_cpg_count(sequences[gene.contig][slice(*gene.interval(*PROMOTER))]) for gene in genes])
    intercept, slope, noise = MEAN_EXPRESSION
    value = intercept + slope * _standardized(cpg.astype(float)) + noise * rng.standard_normal(len(genes))
    return pd.DataFrame({"gene_id": [gene.gene_id for gene in genes], "mean_expression": value, "promoter_cpg": cpg})


def _cpg_count(sequence: np.ndarray) -> int:
    """CG dinucleotides in a sequence of ASCII codes (either case)."""
    upper = sequence & 0xDF  # ASCII upper case
    return int(np.sum((upper[:-1] == ord("C")) & (upper[1:] == ord("G"))))


def _expression(
    dosage: np.ndarray, causals: list[_Causal], h2: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float]:
    """Inverse-normal expression of genetic value plus noise at heritability h2.

    Returns the expression per person, the effect per ALT allele on the pre-transform scale, and the
    realized h2 (squared correlation of the genetic value with the transformed expression).
    """
    noise = _standardized(rng.standard_normal(dosage.shape[1])) * np.sqrt(1 - h2)
    if not causals:
        return _inverse_normal(noise), np.zeros(0), 0.0
    frequency = dosage.mean(axis=1) / 2
    maf = np.minimum(frequency, 1 - frequency)
    sign = np.array([1.0 if c.motif_change == "create" else -1.0 for c in causals])
    raw = sign * np.abs(rng.standard_normal(len(causals))) * (2 * maf * (1 - maf)) ** -0.3
    value = raw @ dosage
    scale = np.sqrt(h2) / value.std()
    genetic = scale * (value - value.mean())
    expression = _inverse_normal(genetic + noise)
    return expression, raw * scale, float(np.corrcoef(genetic, expression)[0, 1] ** 2)


def _standardized(values: np.ndarray) -> np.ndarray:
    """Values centred to mean 0 and scaled to standard deviation 1 (all zeros when constant)."""
    centred = values - values.mean(axis=-1, keepdims=True)
    scale = centred.std(axis=-1, keepdims=True)
    return np.divide(centred, scale, out=np.zeros_like(centred, dtype=float), where=scale > 0)


def _inverse_normal(values: np.ndarray) -> np.ndarray:
    """Rank-based inverse-normal transform Phi^-1((rank - 0.5) / n) of continuous (tie-free) values."""
    rank = np.empty(values.size)
    rank[np.argsort(values, kind="stable")] = np.arange(1, values.size + 1)
    return ndtri((rank - 0.5) / values.size)


def _calls(records: _Records, people: _People, missing_rate: float, rng: np.random.Generator) -> np.ndarray:
    """GT_TEXT indices (records, VCF people) of the true genotypes, with ``missing_rate`` of the calls missing."""
    first = records.haplotypes[:, 2 * people.vcf_order]
    second = records.haplotypes[:, 2 * people.vcf_order + 1]
    calls = (first * 3 + second).astype(np.int8)
    calls[rng.random(calls.shape) < missing_rate] = MISSING_GT
    return calls


def _call_dosage(calls: np.ndarray) -> np.ndarray:
    """Copies of the first ALT per call, NaN where missing."""
    dosage = ((calls // 3) == 1).astype(float) + ((calls % 3) == 1)
    dosage[calls == MISSING_GT] = np.nan
    return dosage


def _finemap(
    gene: _Gene, records: _Records, calls: np.ndarray, expression: np.ndarray, people: _People, causal_rows: np.ndarray
) -> pd.DataFrame:
    """CAVIAR-like credible sets: SNVs in LD (r2 > 0.5) with each detectable causal SNV (|z| > 5),
    with Wakefield approximate-Bayes-factor PIPs within the set, keeping 95% of its mass."""
    snv = np.flatnonzero(records.is_biallelic_snv)
    _, in_vcf, in_expression = np.intersect1d(people.vcf_order, people.expression_order, return_indices=True)
    dosage = _call_dosage(calls[snv][:, in_vcf])
    genotype = _standardized(np.where(np.isnan(dosage), np.nanmean(dosage, axis=1, keepdims=True), dosage))
    trait = _standardized(expression[in_expression])
    n = trait.size
    r = np.clip(genotype @ trait / n, -0.999999, 0.999999)
    variance = (1 - r**2) / (n - 2)
    z = r / np.sqrt(variance)
    log_abf = 0.5 * np.log(variance / (variance + WAKEFIELD_PRIOR_VARIANCE)) + 0.5 * z**2 * (
        WAKEFIELD_PRIOR_VARIANCE / (variance + WAKEFIELD_PRIOR_VARIANCE)
    )
    causal = np.searchsorted(snv, causal_rows)
    claimed = np.zeros(snv.size, dtype=bool)
    chosen, pips, sets = [np.zeros(0, dtype=np.int64)], [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
    for lead in causal[np.argsort(-np.abs(z[causal]), kind="stable")]:
        if abs(z[lead]) <= DETECTABLE_Z or claimed[lead]:
            continue
        members = np.flatnonzero(((genotype @ genotype[lead] / n) ** 2 > CREDIBLE_R2) & ~claimed)
        pip = np.exp(log_abf[members] - log_abf[members].max())
        pip /= pip.sum()
        order = np.argsort(-pip, kind="stable")
        kept = order[: np.searchsorted(np.cumsum(pip[order]), CREDIBLE_MASS) + 1]
        claimed[members[kept]] = True
        chosen.append(snv[members[kept]])
        pips.append(pip[kept])
        sets.append(np.full(kept.size, len(sets)))
    rows = np.concatenate(chosen)
    return pd.DataFrame({
        "gene_id": gene.gene_id,
        "variant_id": _variant_ids(records.contig, records.position[rows], records.ref[rows], records.alt[rows]),
        "contig": records.contig,
        "position": records.position[rows] + 1,
        "ref": records.ref[rows],
        "alt": records.alt[rows],
        "pip": np.concatenate(pips),
        "credible_set": np.concatenate(sets),
    })


def _variant_ids(contig: str, position: np.ndarray, ref: np.ndarray, alt: np.ndarray) -> list[str]:
    """GTEx-style IDs ``chr1_12345_A_G_b38`` from 0-based positions."""
    return [f"{contig}_{p + 1}_{r}_{a}_b38" for p, r, a in zip(position, ref, alt)]


def _truth_variants(gene: _Gene, causals: list[_Causal], effects: np.ndarray, vcf_dosage: np.ndarray) -> pd.DataFrame:
    """The causal SNVs of a gene with their effects, MAF in the VCF people, motifs and elements."""
    position = np.array([c.position for c in causals], dtype=np.int64)
    ref, alt = [c.ref for c in causals], [c.alt for c in causals]
    frequency = vcf_dosage.mean(axis=1) / 2
    return pd.DataFrame({
        "gene_id": gene.gene_id,
        "variant_id": _variant_ids(gene.contig, position, ref, alt),
        "contig": gene.contig,
        "position": position + 1,
        "ref": ref,
        "alt": alt,
        "effect": effects,
        "maf": np.minimum(frequency, 1 - frequency),
        "motif_id": [c.motif.matrix_id for c in causals],
        "motif_name": [c.motif.name for c in causals],
        "motif_change": [c.motif_change for c in causals],
        "element": [c.element for c in causals],
        "tss_distance": (position - gene.tss) * gene.sign,
    })


def _chromatin_states(
    gene: _Gene, elements: list[_Element], contig_length: int, rng: np.random.Generator
) -> pd.DataFrame:
    """ChromHMM-like states tiling the gene window on the contig: TssA, Enh, Tx/TxWk, ReprPC patches, Quies."""
    start, end = max(gene.window[0], 0), min(gene.window[1], contig_length)
    state = np.zeros(end - start, dtype=np.int8)
    for _ in range(int(rng.integers(1, 4))):
        patch = int(rng.integers(1_000, 5_001))
        patch_start = int(rng.integers(start, end - patch))
        _paint(state, start, patch_start, patch_start + patch, CHROMATIN_STATES.index("13_ReprPC"))
    _paint(state, start, *gene.span, CHROMATIN_STATES.index("5_TxWk"))
    for exon in gene.exons:
        _paint(state, start, *exon, CHROMATIN_STATES.index("4_Tx"))
    for element in elements:
        _paint(state, start, element.start, element.end, CHROMATIN_STATES.index(
            "1_TssA" if element.kind == "promoter" else "7_Enh"
        ))
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(state)) + 1, [state.size]])
    return pd.DataFrame({
        "chrom": gene.contig,
        "start": start + bounds[:-1],
        "end": start + bounds[1:],
        "state": np.array(CHROMATIN_STATES)[state[bounds[:-1]]],
    })


def _paint(state: np.ndarray, origin: int, start: int, end: int, code: int) -> None:
    """Set the state of [start, end), clipped to the array that starts at ``origin``."""
    state[max(start - origin, 0) : max(end - origin, 0)] = code


def _simulation_summary(simulation: _Simulation, species: Any, stdpopsim_version: str) -> dict:
    """The models, rates, people and motifs a cohort was simulated with."""
    people = simulation.people
    return {
        "species": species.id,
        "demographic_model": DEMOGRAPHIC_MODEL,
        "mutation_rate": simulation.model.mutation_rate,
        "recombination_rate": species.genome.mean_recombination_rate,
        "stdpopsim_version": stdpopsim_version,
        "samples": simulation.samples,
        "people": {
            "vcf": int(people.vcf_order.size),
            "expression": int(people.expression_order.size),
            "expression_only": int(np.setdiff1d(people.expression_order, people.vcf_order).size),
            "genotyped_without_expression": int(np.setdiff1d(people.vcf_order, people.expression_order).size),
        },
        "jaspar_release": JASPAR_RELEASE,
        "motifs": {motif.matrix_id: motif.name for motif in simulation.motifs},
    }


def _cohort_stats(
    sequences: dict[str, np.ndarray], genes: list[_Gene], results: list[_GeneResult], window: int
) -> dict:
    """Measured realism: bi-allelic SNVs per window of A/C/G/T, rare fractions, GC, CpG o/e."""
    acgt_bp = sum(
        np.count_nonzero(BASE_CODE[sequences[g.contig][max(g.window[0], 0) : g.window[1]]] >= 0) for g in genes
    )
    dosage = np.concatenate([_call_dosage(r.calls[r.records.is_biallelic_snv]) for r in results])
    frequency = np.nanmean(dosage, axis=1) / 2
    maf = np.minimum(frequency, 1 - frequency)
    codes = [BASE_CODE[sequence] for sequence in sequences.values()]
    counts = sum(np.bincount(code[code >= 0], minlength=4) for code in codes)
    cpg = sum(np.count_nonzero((s[:-1] == ord("C")) & (s[1:] == ord("G"))) for s in sequences.values())
    return {
        "snvs_per_window": round(float(maf.size * window / acgt_bp), 1),
        "fraction_maf_below_1pct": round(float(np.mean(maf < 0.01)), 4),
        "fraction_maf_below_5pct": round(float(np.mean(maf < 0.05)), 4),
        "gc_fraction": round(float(counts[1:3].sum() / counts.sum()), 4),
        "cpg_observed_expected": round(float(cpg * counts.sum() / (counts[1] * counts[2])), 4),
        "genes_with_signal": sum(r.truth_gene["n_causal"] > 0 for r in results),
        "causal_variants": sum(r.truth_gene["n_causal"] for r in results),
        "finemapped_variants": sum(len(r.finemapped) for r in results),
    }


STAGING_PREFIX = ".simulate-"
"""The hidden folder a simulation writes its files in before they replace the cohort's."""


@contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A hidden folder in ``out_dir`` whose files replace those of ``out_dir`` once all are written. ``cohort.json``
    marks a whole cohort: it is removed before the first file is replaced and written last, so a killed simulation
    never leaves a mixed or partial cohort that looks whole (`interrupted` lets the same command run again)."""
    make_directory(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        yield staging
        marker = FILE_NAMES["cohort"]
        (out_dir / marker).unlink(missing_ok=True)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == marker):
            os.replace(path, out_dir / path.name)
        for left in out_dir.glob(f"{STAGING_PREFIX}*"):  # what killed simulations of this folder left
            shutil.rmtree(left, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def interrupted(out_dir: Path) -> bool:
    """Whether a folder holds what a killed simulation left: its staging folder and no ``cohort.json``."""
    return not (out_dir / FILE_NAMES["cohort"]).exists() and any(out_dir.glob(f"{STAGING_PREFIX}*"))


def _write_outputs(
    out_dir: Path,
    sequences: dict[str, np.ndarray],
    genes: list[_Gene],
    people: _People,
    results: list[_GeneResult],
    means: pd.DataFrame,
    summary: dict,
) -> None:
    """Write every cohort file (see ``FILE_NAMES``) and its index."""
    with _staging(out_dir) as staging:
        _write_fasta(staging / FILE_NAMES["reference"], sequences)
        _write_vcf(staging / FILE_NAMES["vcf"], sequences, people, results)
        _write_gtf(staging / FILE_NAMES["annotation"], genes)
        _write_expression(staging / FILE_NAMES["expression"], genes, people, results)
        _write_tsv(staging / FILE_NAMES["chromatin_states"], [r.chromatin_states for r in results], header=False)
        _write_tsv(staging / FILE_NAMES["finemapped_eqtls"], [r.finemapped for r in results])
        _write_tsv(staging / FILE_NAMES["truth_variants"], [r.truth_variants for r in results])
        _write_tsv(staging / FILE_NAMES["truth_genes"], [pd.DataFrame([r.truth_gene for r in results])])
        _write_tsv(staging / FILE_NAMES["mean_expression"], [means])
        (staging / FILE_NAMES["genes"]).write_text("".join(f"{gene.gene_id}\n" for gene in genes))
        (staging / FILE_NAMES["cohort"]).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def _write_fasta(path: Path, sequences: dict[str, np.ndarray]) -> None:
    """Plain FASTA, 60 bases a line, and its ``.fai``."""
    with open(path, "wb") as handle:
        for name, sequence in sequences.items():
            full = sequence.size - sequence.size % 60
            lines = np.hstack([sequence[:full].reshape(-1, 60), np.full((full // 60, 1), ord("\n"), np.uint8)])
            handle.write(f">{name}\n".encode() + lines.tobytes())
            if full < sequence.size:
                handle.write(sequence[full:].tobytes() + b"\n")
    pysam.faidx(str(path))


def _write_vcf(path: Path, sequences: dict[str, np.ndarray], people: _People, results: list[_GeneResult]) -> None:
    """VCFv4.2 with unphased GTs, bgzipped and tabix-indexed; IDs on bi-allelic SNVs."""
    text_path = path.with_suffix("")
    header = [
        "##fileformat=VCFv4.2",
        "##source=performer_store.simulate",
        f"##reference={FILE_NAMES['reference']}",
        *(f"##contig=<ID={name},length={sequence.size}>" for name, sequence in sequences.items()),
        *VCF_HEADER_LINES,
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                   *people.sample_id[people.vcf_order]]),
    ]
    with open(text_path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode())
        for result in results:
            records = result.records
            genotypes = GT_TEXT[result.calls].reshape(len(result.calls), -1)
            genotypes[:, -1] = ord("\n")
            ids = np.where(
                records.is_biallelic_snv,
                np.array(_variant_ids(records.contig, records.position, records.ref, records.alt), dtype=object),
                ".",
            )
            for row, (position, variant_id, ref, alt, info) in enumerate(
                zip(records.position, ids, records.ref, records.alt, records.info)
            ):
                fixed = f"{records.contig}\t{position + 1}\t{variant_id}\t{ref}\t{alt}\t.\tPASS\t{info}\tGT\t"
                handle.write(fixed.encode() + genotypes[row].tobytes())
    pysam.tabix_index(str(text_path), preset="vcf", force=True)


def _write_gtf(path: Path, genes: list[_Gene]) -> None:
    """Gzipped GENCODE-style GTF: a gene, a transcript and its exons per gene, 1-based inclusive."""
    lines = ["##description: simulated by performer_store.simulate", "##provider: performer_store", "##format: gtf"]
    for gene in genes:
        number = int(gene.gene_id[4:15])
        transcript_id = f"ENST{number:011d}.1"
        gene_attributes = f'gene_id "{gene.gene_id}"; gene_type "{gene.gene_type}"; gene_name "{gene.name}";'
        transcript_attributes = (
            f'gene_id "{gene.gene_id}"; transcript_id "{transcript_id}"; gene_type "{gene.gene_type}"; '
            f'gene_name "{gene.name}"; transcript_type "{gene.gene_type}"; transcript_name "{gene.name}-201";'
        )
        lines.append(_gtf_line(gene, "gene", *gene.span, f"{gene_attributes} level 2;"))
        lines.append(_gtf_line(gene, "transcript", *gene.span, f"{transcript_attributes} level 2;"))
        for exon_number, exon in enumerate(gene.exons, start=1):
            exon_id = f"ENSE{number * 4 + exon_number:011d}.1"
            attributes = f'{transcript_attributes} exon_number {exon_number}; exon_id "{exon_id}"; level 2;'
            lines.append(_gtf_line(gene, "exon", *exon, attributes))
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))


def _gtf_line(gene: _Gene, feature: str, start: int, end: int, attributes: str) -> str:
    """One GTF line for a 0-based half-open interval."""
    return f"{gene.contig}\tHAVANA\t{feature}\t{start + 1}\t{end}\t.\t{gene.strand}\t.\t{attributes}"


def _write_expression(path: Path, genes: list[_Gene], people: _People, results: list[_GeneResult]) -> None:
    """GTEx v8 normalized-expression BED (``#chr start end gene_id`` then people), bgzipped and tabix-indexed."""
    text_path = path.with_suffix("")
    lines = ["\t".join(["#chr", "start", "end", "gene_id", *people.sample_id[people.expression_order]])]
    for gene, result in zip(genes, results):
        values = np.char.mod("%.6f", result.expression)
        lines.append("\t".join([gene.contig, str(gene.tss), str(gene.tss + 1), gene.gene_id, *values]))
    text_path.write_text("\n".join(lines) + "\n")
    pysam.tabix_index(str(text_path), preset="bed", force=True)


def _write_tsv(path: Path, frames: list[pd.DataFrame], header: bool = True) -> None:
    """Tab-separated table with floats to 6 significant digits."""
    pd.concat(frames).to_csv(path, sep="\t", index=False, header=header, float_format="%.6g")
