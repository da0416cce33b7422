"""The store layout, declared once: arrays, dimensions, dtypes, chunking, attributes, format version.

The writer (`build`), the readers (`store`, later `loader`) and `validate` all take names, dims, dtypes
and chunk shapes from here; `docs/store.md` is generated from it (`python -m performer_store.schemas`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

FORMAT_VERSION = 1
FORMAT_ATTRIBUTE = "performer_store_format"
EMPTYING_ATTRIBUTE = "performer_store_emptying"  # replaces the format attribute while `build --force` empties a store
GENES_GROUP = "genes"
STAGING_DIR = ".pstore-staging"
BASES = "ACGT"
SPLIT_CODES = {"train": 0, "tune": 1, "test": 2}
N_FOLDS = 3  # folds of every store's people split (`sample_split`)
PEOPLE_PER_CHUNK = 32

DIMENSIONS: Mapping[str, str] = {
    "samples": "people in the store, in the store's seeded random order (`sample_id`)",
    "folds": "cross-validation folds of the people split",
    "genes": "genes whose group is complete, sorted by gene_id",
    "window": "positions of a gene's window, 0-based from `gene_window_start` (forward strand)",
    "bases": "one-hot channels in the order A, C, G, T",
    "variants": "bi-allelic SNV rows of a gene's window (multi-allelic sites split per ALT), sorted by position",
    "alleles": "REF then ALT",
    "ploidy": "the two genotype calls of a person, in VCF GT order (unphased)",
}


@dataclass(frozen=True)
class ArraySpec:
    """One Zarr array of the layout: name, dims, dtype, chunking rule, and what it means."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    description: str
    chunks: Mapping[str, int] = field(default_factory=dict)

    def chunk_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Chunk shape for an array of this shape: named dims get their rule, the others one chunk."""
        return tuple(max(1, min(self.chunks.get(d, n), n)) for d, n in zip(self.dims, shape))

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype readers get back (variable-length strings read as numpy StringDType)."""
        return np.dtypes.StringDType() if self.dtype == "str" else np.dtype(self.dtype)

    def fill_value(self) -> Any:
        """Fill value of unwritten chunks."""
        return "" if self.dtype == "str" else 0


@dataclass(frozen=True)
class GroupSpec:
    """One Zarr group of the layout: its path pattern, arrays and required attributes."""

    path: str
    description: str
    arrays: tuple[ArraySpec, ...]
    attributes: Mapping[str, str]
    optional: Mapping[str, str] = field(default_factory=dict)  # attributes a group may lack (older stores, inputs not given)

    def array(self, name: str) -> ArraySpec:
        """The spec of one array of this group, by name."""
        for spec in self.arrays:
            if spec.name == name:
                return spec
        raise KeyError(f"{name!r} is not an array of {self.path or 'the root'}")


ROOT = GroupSpec(
    path="",
    description="The store: people, their splits, the gene index and the provenance of the build.",
    arrays=(
        ArraySpec("sample_id", ("samples",), "str", "Person ID as in the VCF header, in store order."),
        ArraySpec(
            "sample_split",
            ("folds", "samples"),
            "int8",
            "Split of each person per fold: 0 train, 1 tune, 2 test (test sets of folds are disjoint).",
        ),
        ArraySpec("gene_id", ("genes",), "str", "GENCODE gene ID as in the GTF (version suffix kept)."),
        ArraySpec("gene_name", ("genes",), "str", "Gene name from the GTF."),
        ArraySpec("gene_type", ("genes",), "str", "Gene type from the GTF (protein_coding, lncRNA, ...)."),
        ArraySpec("gene_contig", ("genes",), "str", "Contig name as in the FASTA."),
        ArraySpec("gene_strand", ("genes",), "str", "'+' or '-'."),
        ArraySpec(
            "gene_tss",
            ("genes",),
            "int64",
            "TSS, 0-based: GTF start - 1 for '+' genes, GTF end - 1 for '-' genes.",
        ),
        ArraySpec(
            "gene_window_start",
            ("genes",),
            "int64",
            "Window start, 0-based inclusive (= gene_tss - window // 2; may be < 0 at a contig edge).",
        ),
        ArraySpec("gene_window_stop", ("genes",), "int64", "Window stop, 0-based exclusive."),
        ArraySpec("gene_n_variants", ("genes",), "int32", "Number of SNV rows in the gene's variant table."),
    ),
    attributes={
        FORMAT_ATTRIBUTE: "Store format version; readers refuse another version.",
        "tissue": "Tissue of the expression targets.",
        "window": "Window length in bp.",
        "bases": "One-hot channel order (ACGT).",
        "split_codes": "Meaning of the sample_split values.",
        "seed": "Seed of the people order and of the splits.",
        "samples": "How people were matched: counts of VCF-only and expression-only people left out.",
        "provenance": "Input files (path, size, checksum), cohort digest (inputs, people and splits: what ties runs to the store), tool version, command line, time.",
    },
)

GENE = GroupSpec(
    path=f"{GENES_GROUP}/{{gene_id}}",
    description=(
        "One gene, published atomically (built in a staging directory, then renamed into place) with "
        "`complete: true` among its attributes. dosage one-hot = reference_onehot + dosage_onehot_delta."
    ),
    arrays=(
        ArraySpec(
            "reference_onehot",
            ("window", "bases"),
            "float16",
            "Reference one-hot of the window; N, other IUPAC codes and positions beyond a contig edge are "
            "0.25 in all four channels.",
        ),
        ArraySpec(
            "dosage_onehot_delta",
            ("samples", "window", "bases"),
            "float16",
            "Dosage one-hot minus reference_onehot, per person: the mean of the one-hots of the person's two "
            "consensus sequences (SNVs only) minus the reference; add reference_onehot to get the dosage "
            "one-hot. Stored as a difference because it is ~99.9% zeros (about 250 B per person-window; zeros are +0.0).",
            chunks={"samples": PEOPLE_PER_CHUNK},
        ),
        ArraySpec(
            "target",
            ("samples",),
            "float32",
            "Normalized expression of the gene per person (NaN = no value; never used for training).",
        ),
        ArraySpec("variant_position", ("variants",), "int32", "VCF POS, 1-based."),
        ArraySpec("variant_allele", ("variants", "alleles"), "str", "REF and ALT base."),
        ArraySpec("variant_id", ("variants",), "str", "VCF ID column ('.' when absent)."),
        ArraySpec(
            "variant_maf",
            ("variants",),
            "float32",
            "Minor-allele frequency of the ALT allele among called alleles of the store's people.",
        ),
        ArraySpec(
            "call_genotype",
            ("variants", "samples", "ploidy"),
            "int8",
            "Genotype calls split per ALT (as bcftools norm -m-): 1 = this ALT, 0 = REF or another ALT, "
            "-1 = missing, -2 = no second call (haploid; that haplotype keeps the reference, as in bcftools "
            "consensus). Dosage = number of 1s.",
        ),
    ),
    attributes={
        "complete": "true once every array is written; a gene without it is not part of the store.",
        "gene_id": "GENCODE gene ID.",
        "gene_name": "Gene name.",
        "gene_type": "Gene type.",
        "contig": "Contig name as in the FASTA.",
        "strand": "'+' or '-'.",
        "tss": "TSS, 0-based.",
        "window_start": "Window start, 0-based inclusive.",
        "window_stop": "Window stop, 0-based exclusive.",
        "counts": "What the build left out or found: ALTs that are not SNVs (`indel_alleles`: REF and ALT lengths "
        "differ; `mnp_alleles`: same length, 2+ bases; `non_acgt_alleles`: one base, N or IUPAC; `symbolic_alleles`), "
        "REF mismatches skipped, records without GT (uncalled for everyone), multi-allelic sites, missing calls, NaN targets.",
    },
    optional={
        "mean_expression": "The gene's mean expression across people on a raw scale (e.g. mean log TPM) from "
        "`pstore build --mean-expression`; null when the table has no row for the gene. `target` is normalized per "
        "gene, so this is the only across-gene expression level in the store.",
    },
)

RESULTS_GROUP = "results"

# What a Performer run's results, ISM scores and reference predictions record of the run, per fold.
RUN_ATTRIBUTES = {
    "runs": "Performer: the run directory that made each fold.",
    "checkpoints": "Performer: the save of the run's best.pt that made each fold (modification time in ns:size); a later save makes the fold stale for `pstore run`.",
    "settings": "Performer: per fold, HOP (the run trained on the gene) or HOGP, or for a run of another store cross-cohort (gene matched) or cross-cohort HOGP; a fold that is not HOP never replaces another run's HOP fold.",
    "mask": "Performer run trained with --mask-variants: the mask per fold.",
}

RESULT = GroupSpec(
    path=f"{GENES_GROUP}/{{gene_id}}/{RESULTS_GROUP}/{{model}}",
    description=(
        "One model's results for one gene (`model` = `enet`, `lasso`, `enformer` or a Performer run's name), "
        "published atomically like a gene, `complete: true` last. Folds not run hold NaN and status `not run`."
    ),
    arrays=(
        ArraySpec(
            "prediction",
            ("folds", "samples"),
            "float32",
            "Predicted expression of the fold's tune and test people (NaN for train people and folds not run).",
        ),
        ArraySpec("pearson_r", ("folds",), "float32", "Pearson r between prediction and target over the fold's test people."),
        ArraySpec("r2", ("folds",), "float32", "R2 (sklearn r2_score) of the prediction over the fold's test people."),
        ArraySpec("status", ("folds",), "str", "'ok', 'not run', or why the fold has no usable model (e.g. 'no variants')."),
    ),
    attributes={
        "complete": "true once every array is written.",
        "kind": "enet, lasso, enformer, performer, enet_transfer or lasso_transfer.",
        "folds": "Folds that were run.",
    },
    optional=RUN_ATTRIBUTES,
)

ENET_RESULT = GroupSpec(
    path=RESULT.path,
    description=(
        "Arrays that an `enet`/`lasso` result holds besides those of every result, aligned with the gene's variants. "
        "Status 'ok' may carry a note ('ok: no SNV selected; constant prediction, so r is undefined'); a fold with "
        "no SNV that varies among its train people, or a constant train target, predicts the train mean with NaN "
        "metrics; a fold with too few train people predicts nothing (see `pstore enet --help`)."
    ),
    arrays=(
        ArraySpec("enet_coefficient", ("folds", "variants"), "float32", "Coefficient of each variant's 0/1/2 ALT dosage (0 where removed by VarianceThreshold; NaN for folds without a model)."),
        ArraySpec("enet_intercept", ("folds",), "float32", "Intercept (the train mean where no SNV varies or the target is constant)."),
        ArraySpec("enet_alpha", ("folds",), "float64", "Penalty chosen by inner cross-validation (NaN where nothing was fitted)."),
        ArraySpec("enet_l1_ratio", ("folds",), "float32", "L1 ratio of the penalty (0.5 for enet, 1 for lasso)."),
        ArraySpec("enet_n_nonzero", ("folds",), "int32", "Number of non-zero coefficients (-1 for folds without a model)."),
    ),
    attributes={
        "settings": "The pipeline's settings: number of alphas, eps, inner CV, max_iter, tol, selection.",
        "solver": "Solver per fold: 'early' (scikit-learn's Gram coordinate descent, early exit down the alpha grid), 'gram' (the same over the whole grid) or 'sklearn' (its defaults).",
    },
)

CROSS_RESULT = GroupSpec(
    path=RESULT.path,
    description=(
        "Arrays that a cross-cohort result holds besides those of every result: a model trained in another store "
        "(attribute `source_store`; `pstore evaluate --run` of another store's run, `pstore enet --from-store`) "
        "predicts every person of this store it did not see. The source's fold f fills this store's fold f: people "
        "who are, by sample ID, train or tune people of the source's fold f are left out (NaN `prediction`, in no "
        "metric; counted in `seen_in_training`); `prediction` holds every other person, `pearson_r`/`r2` score the "
        "fold's other test people (`pstore compare` scores this store's own models again on those people to pair "
        "them), and these arrays score every other person with a target."
    ),
    arrays=(
        ArraySpec("cross_pearson_r", ("folds",), "float32", "Pearson r between prediction and target over every person predicted with a target."),
        ArraySpec("cross_r2", ("folds",), "float32", "R2 (sklearn r2_score) over every person predicted with a target."),
    ),
    attributes={
        "source_store": "Where the model was trained: identity (creation time and input checksums), path and name of "
        "the source store; absent on within-cohort results.",
        "source_gene_id": "The gene's ID in the source store, matched with version suffixes ignored (null for genes a "
        "Performer run did not train on).",
        "seen_in_training": "Per fold (\"0\", ...): how many of this store's people were left out as train or tune "
        "people of the source store's fold, by sample ID.",
    },
)

TRANSFER_RESULT = GroupSpec(
    path=RESULT.path,
    description=(
        "Arrays that a transferred linear model (`pstore enet --from-store`, kind `enet_transfer` or `lasso_transfer`) "
        "holds besides those of a cross-cohort result: how many of the source model's variants this store has. "
        "Variants are matched by contig, position, REF and ALT; a variant with REF and ALT swapped counts the "
        "source's ALT (this store's REF calls); a variant not found contributes 0."
    ),
    arrays=(
        ArraySpec("transfer_n_nonzero", ("folds",), "int32", "Variants with a non-zero coefficient in the source model (-1 for folds without a model)."),
        ArraySpec("transfer_n_found", ("folds",), "int32", "Of those, variants found in this gene's variant table (swapped alleles included)."),
        ArraySpec("transfer_n_flipped", ("folds",), "int32", "Of those found, variants with REF and ALT swapped."),
        ArraySpec("transfer_variant_share", ("folds",), "float32", "transfer_n_found / transfer_n_nonzero (NaN without a non-zero coefficient)."),
    ),
    attributes={"source_model": "Name of the source store's linear-model result (enet or lasso)."},
)

ISM_GROUP = "ism"

ISM_RESULT = GroupSpec(
    path=f"{GENES_GROUP}/{{gene_id}}/{ISM_GROUP}/{{model}}",
    description=(
        "In-silico mutagenesis of one model for one gene (`model` as in results), aligned with the gene's variant "
        "table and published atomically like a result. Score = prediction of the reference window with the "
        "variant's ALT base minus that of the reference window (Performer: centre bin; base Enformer: CAGE track "
        "summed over the 3 centre bins). Folds not run hold NaN and status `not run`."
    ),
    arrays=(
        ArraySpec("ism_score", ("folds", "variants"), "float32", "ALT minus REF prediction of each variant (float32 model)."),
        ArraySpec("ism_reference", ("folds",), "float32", "Prediction of the reference window."),
        ArraySpec("status", ("folds",), "str", "'ok' or 'not run'."),
    ),
    attributes={
        "complete": "true once every array is written.",
        "kind": "performer or enformer.",
        "folds": "Folds that were run.",
        "method": "How scores were computed per fold: 'splice' (tower tokens around the SNV recomputed) or 'full'.",
    },
    optional=RUN_ATTRIBUTES,
)

REFERENCE_GROUP = "reference"

REFERENCE_RESULT = GroupSpec(
    path=f"{GENES_GROUP}/{{gene_id}}/{REFERENCE_GROUP}/{{model}}",
    description=(
        "One model's prediction of a gene's reference window (`pstore evaluate --reference`), published atomically like "
        "a result: the across-gene check against `mean_expression` (Performer: centre bin; base Enformer: CAGE track "
        "summed over the 3 centre bins; the reference one-hot cropped to the model's window, centred). A Performer run "
        "fills its fold; base Enformer fills every fold."
    ),
    arrays=(
        ArraySpec("reference_prediction", ("folds",), "float32", "Prediction of the reference window (NaN for folds not run)."),
        ArraySpec("status", ("folds",), "str", "'ok' or 'not run'."),
    ),
    attributes={
        "complete": "true once every array is written.",
        "kind": "performer or enformer.",
        "folds": "Folds that were run.",
    },
    optional=RUN_ATTRIBUTES,
)

GROUPS: tuple[GroupSpec, ...] = (ROOT, GENE, RESULT, ENET_RESULT, CROSS_RESULT, TRANSFER_RESULT, ISM_RESULT, REFERENCE_RESULT)

LAYOUT_RATIONALE = """\
## Why this layout

The dosage one-hots are the bulk of a store: 393,216 bytes of float16 per person-window before compression.
`benchmarks/store_layout.py` wrote one demo gene (657 people, 647 SNVs) in candidate layouts
(numbers in BENCHMARKS.md). People share almost the whole window, so what matters is lining them up:

- a chunk per person of the literal one-hot compresses to ~44,500 B per window with zstd;
- 32 people per chunk, people-fastest through Zarr's transpose codec: ~4,000 B, but the strided transpose
  limits writes to ~800 windows/s;
- **the difference from the reference, 32 people per chunk, zstd level 5: ~220 B per window**, written at
  ~5,200 and read through zarr-python at ~4,000 windows/s per core including the addition of the reference
  (zstd 3 is 1.6x the size; zstd 9 saves a quarter at 85% of the write speed; people-fastest through the
  transpose codec is smaller still but reads at a third of the speed). This is the store's layout. Zeros
  are stored as +0.0: the -0.0 a non-carrier of a negative change used to get cost 2.2x the size.

So the array on disk is `dosage_onehot_delta`, a standard Zarr v3 float16 array (bytes + zstd codecs) that
any Zarr client reads; the dosage one-hot is `reference_onehot + dosage_onehot_delta` (exact in float16).
People are stored in a seeded random order, so the 32 people who share a chunk are a random set and a
loader can read whole chunks (the loader's stored path decodes a chunk's file directly, ~0.8 ms, and keeps
its people's one-hots at the gene's variant positions). The variant table (`call_genotype`,
`variant_position`, `variant_allele`) holds the same information in another form (the expansion path of the
loader); differences are non-zero only at variant positions, and `pstore validate --deep` checks that the
two agree for every person.
"""


def to_markdown() -> str:
    """The layout as the Markdown of docs/store.md."""
    lines = [
        "# Store layout",
        "",
        "<!-- generated by `python -m performer_store.schemas`; a test checks it matches schemas.py -->",
        "",
        f"Format version **{FORMAT_VERSION}** (root attribute `{FORMAT_ATTRIBUTE}`). Zarr v3, one directory "
        "per store. Intervals are 0-based half-open unless an array says otherwise.",
        "",
        "## Dimensions",
        "",
        "| dimension | meaning |",
        "|---|---|",
        *(f"| `{name}` | {text} |" for name, text in DIMENSIONS.items()),
    ]
    for group in GROUPS:
        lines += ["", f"## `{group.path or '/'}`", "", group.description, "", "| array | dims | dtype | chunks | meaning |"]
        lines.append("|---|---|---|---|---|")
        for spec in group.arrays:
            chunks = ", ".join(f"{d}: {n}" for d, n in spec.chunks.items()) or "whole"
            lines.append(f"| `{spec.name}` | {', '.join(spec.dims)} | {spec.dtype} | {chunks} | {spec.description} |")
        lines += ["", "| attribute | meaning |", "|---|---|"]
        lines += [f"| `{name}` | {text} |" for name, text in group.attributes.items()]
        lines += [f"| `{name}` (optional) | {text} |" for name, text in group.optional.items()]
    return "\n".join(lines) + "\n\n" + LAYOUT_RATIONALE


if __name__ == "__main__":
    print(to_markdown(), end="")
