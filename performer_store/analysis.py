"""Variant weights: every SNV's elastic-net and ISM weights per gene and fold, and what the method reads from them.

`variant_weights` is a Dask DataFrame with one partition per gene (computed by `gene_variant_weights`, which
reads the store lazily), so it runs on a dask.distributed cluster as well as in one process. Per (gene, SNV):
gene_id, contig, position (VCF POS, 1-based), ref, alt, variant_id, maf, tss_distance (signed, strand-aware:
positive downstream of the TSS in the direction of transcription), enet_coefficient (NaN without an `enet`
result for the fold), and for every model with ISM scores in the fold `ism_<model>` (ALT - REF prediction),
`hsv_<model>` and `driver_<model>` (bool):

- HSVs (high-scoring variants): the gene's SNVs with the k largest |ISM score|, k = the number of non-zero
  elastic-net coefficients of the fold (ties in store order; scores of 0 or NaN never count). k = 0, or no
  elastic net for the fold: no HSVs.
- Drivers (after Sasse et al. 2023): on the fold's test people with a prediction of the model (the result of
  the same name, e.g. a Performer run or `enformer`), each SNV contributes dosage (0/1/2, missing 0) x ISM score
  to a linear surrogate of the prediction. SNVs are walked by descending |score|; one is a driver when
  Pearson(surrogate of the drivers so far plus it, prediction) / Pearson(surrogate of all SNVs, prediction)
  exceeds the last accepted value (0 before the first) by more than 0.05, and its own contribution correlates
  positively with the prediction with one-sided p < 0.01 / (SNVs with a score). No drivers when the model has no
  prediction for the fold, fewer than 3 test people have one, or the full surrogate does not correlate
  positively with the prediction.

The summaries (`summarize` runs them all): direction agreement of ISM scores with elastic-net coefficients
(Fisher's exact test), JASPAR motifs created or broken (`motifs.py`), enrichment of flagged SNVs in chromatin
states, recovery of listed (e.g. fine-mapped or causal) variants by |weight| (auROC per gene), and MAF and
TSS-distance distributions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import zarr
from scipy.stats import fisher_exact
from scipy.stats import t as student_t
from sklearn.metrics import roc_auc_score

from . import schemas
from .encode import base_codes
from .enet import genotype_dosage
from .inputs import InputError, contig_alias, reading, require_file
from .motifs import N_CODE, PVALUE, UNIFORM, Motif, decode_onehot, load_jaspar, motif_hits, prepare
from .results import read_result, result_models, result_path
from .store import Store

ENET_MODEL = "enet"
DRIVER_GAIN = 0.05
DRIVER_ALPHA = 0.01
MIN_TEST = 3
FLAG_PREFIXES = ("hsv_", "driver_")
MAF_EDGES = (0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5000001)
TSS_EDGES = (-math.inf, -10_000, -5_000, -2_000, -1_000, -500, -100, 0, 100, 500, 1_000, 2_000, 5_000, 10_000, math.inf)
CONTROL_VARIANTS = 1_000  # random unflagged SNVs whose motif rates the flagged ones are compared with
BASE_COLUMNS = {"gene_id": "str", "contig": "str", "position": "int64", "ref": "str", "alt": "str", "variant_id": "str",
                "maf": "float32", "tss_distance": "int64", "enet_coefficient": "float32"}  # float32 as stored


def weight_columns(models: Sequence[str]) -> dict[str, str]:
    """Columns and dtypes of a variant-weights table with ISM scores of these models."""
    return {**BASE_COLUMNS, **{f"ism_{m}": "float32" for m in models}, **{f"hsv_{m}": "bool" for m in models},
            **{f"driver_{m}": "bool" for m in models}}


# --- per gene ------------------------------------------------------------------------------------------


def hsv_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """The k SNVs with the largest |score| (ties in the given order; a score of 0 or NaN never counts)."""
    mask = np.zeros(len(scores), dtype=bool)
    scored = np.flatnonzero(np.isfinite(scores) & (scores != 0))
    mask[scored[np.argsort(-np.abs(scores[scored]), kind="stable")[:max(k, 0)]]] = True
    return mask


def correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each column of x (people, columns) with y (people,); NaN for constant columns."""
    xc, yc = x - x.mean(axis=0), y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc.T @ yc) / (np.sqrt((xc**2).sum(axis=0)) * np.sqrt(yc @ yc))
    return np.where(np.ptp(x, axis=0) > 0, np.clip(r, -1, 1), np.nan)


def greater_pvalue(r: np.ndarray, n: int) -> np.ndarray:
    """One-sided p of Pearson r > 0 over n people (the t test scipy's pearsonr(alternative='greater') runs)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return student_t.sf(r * np.sqrt((n - 2) / (1 - r**2)), n - 2)


def driver_mask(dosage: np.ndarray, scores: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Drivers of a prediction (module docstring): dosage (people, SNVs), scores (SNVs,), prediction (people,)."""
    drivers = np.zeros(len(scores), dtype=bool)
    people, snvs = np.isfinite(prediction), np.flatnonzero(np.isfinite(scores))
    if people.sum() < MIN_TEST or not snvs.size:
        return drivers
    y = prediction[people]
    contribution = dosage[people][:, snvs] * scores[snvs]
    full = correlations(contribution.sum(axis=1, keepdims=True), y)[0]
    if not full > 0:
        return drivers
    own = correlations(contribution, y)
    eligible = (own > 0) & (greater_pvalue(own, len(y)) < DRIVER_ALPHA / len(snvs))
    order = np.argsort(-np.abs(scores[snvs]), kind="stable")
    running, last, start = np.zeros(len(y)), 0.0, 0
    while start < len(order):  # one pass per accepted driver: every candidate after it, against the new sum
        candidates = order[start:]
        ratio = correlations(running[:, None] + contribution[:, candidates], y) / full
        accepted = np.flatnonzero(eligible[candidates] & (ratio - last > DRIVER_GAIN))
        if not accepted.size:
            break
        first = accepted[0]
        drivers[snvs[candidates[first]]] = True
        running, last, start = running + contribution[:, candidates[first]], ratio[first], start + first + 1
    return drivers


def ism_scores(store: Path, gene_id: str, model: str, fold: int, n_variants: int) -> np.ndarray:
    """A model's ISM scores of a gene's SNVs in one fold (NaN when it has none)."""
    found = read_result(store, gene_id, model, schemas.ISM_GROUP)
    if found is None:
        return np.full(n_variants, np.nan)
    scores = found[0]["ism_score"][fold].astype(np.float64)
    assert len(scores) == n_variants, f"{gene_id} {model}: ISM scores do not match the variant table"
    return scores


def prediction_of_test_people(store: Store, gene_id: str, model: str, fold: int) -> np.ndarray | None:
    """A model's predictions of the fold's test people (NaN where missing), or None without a result."""
    found = read_result(store.path, gene_id, model)
    if found is None:
        return None
    return found[0]["prediction"][fold][store.split(fold) == schemas.SPLIT_CODES["test"]].astype(np.float64)


def gene_variant_weights(store_path: Path | str, gene_id: str, fold: int, models: Sequence[str] | None = None) -> pd.DataFrame:
    """One gene's rows of the variant-weights table (columns of `weight_columns`; models default to the gene's own)."""
    store = Store(store_path)
    group = store.gene(gene_id)
    attrs = group.attrs
    position = group["variant_position"][:].astype(np.int64)
    alleles = group["variant_allele"][:].astype(object).reshape(-1, 2)
    enet = read_result(store.path, gene_id, ENET_MODEL)
    frame = pd.DataFrame({
        "gene_id": np.full(len(position), gene_id, dtype=object), "contig": attrs["contig"], "position": position,
        "ref": alleles[:, 0], "alt": alleles[:, 1], "variant_id": group["variant_id"][:].astype(object),
        "maf": group["variant_maf"][:], "tss_distance": (position - 1 - attrs["tss"]) * (1 if attrs["strand"] == "+" else -1),
        "enet_coefficient": enet[0]["enet_coefficient"][fold] if enet else np.nan,
    })
    k = int(enet[0]["enet_n_nonzero"][fold]) if enet else 0
    models = ism_models(store, [gene_id], fold) if models is None else models
    predictions = {m: prediction_of_test_people(store, gene_id, m, fold) for m in models}
    test = store.split(fold) == schemas.SPLIT_CODES["test"]
    dosage = genotype_dosage(group)[test] if any(p is not None for p in predictions.values()) else None
    for model, prediction in predictions.items():
        scores = ism_scores(store.path, gene_id, model, fold, len(position))
        frame[f"ism_{model}"] = scores
        frame[f"hsv_{model}"] = hsv_mask(scores, k)
        frame[f"driver_{model}"] = np.zeros(len(position), bool) if prediction is None else driver_mask(dosage, scores, prediction)
    columns = weight_columns(models)
    return frame[list(columns)].astype(columns)


# --- the store -----------------------------------------------------------------------------------------


def ism_models(store: Store, genes: Sequence[str], fold: int) -> list[str]:
    """Models with ISM scores of `fold` for any of the genes, sorted."""
    found = set()
    for gene_id in genes:
        for model in result_models(store.path, gene_id, schemas.ISM_GROUP):
            if fold in zarr.open_group(str(result_path(store.path, gene_id, model, schemas.ISM_GROUP)), mode="r").attrs["folds"]:
                found.add(model)
    return sorted(found)


def select_genes(store: Store, genes: Sequence[str] | None) -> list[str]:
    """The requested genes (default all), refusing genes the store does not have."""
    if not genes:
        return list(store.genes.index)
    store.check_genes(genes)
    return list(genes)


def variant_weights(store: Path | str, fold: int = 0, client: Any = None, genes: Sequence[str] | None = None):
    """The variant-weights table of a fold as a Dask DataFrame, one partition per gene (module docstring).

    Lazy without a client; with a dask.distributed Client it is persisted there (computed on its workers, which
    must see the store's path).
    """
    import dask.dataframe as dd

    opened = Store(store)
    opened.split(fold)  # refuses folds the store does not have
    chosen = select_genes(opened, genes)
    if not chosen:
        raise InputError(f"store {opened.path}: no genes; build some with `pstore build`")
    models = tuple(ism_models(opened, chosen, fold))
    meta = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in weight_columns(models).items()})
    frame = dd.from_map(gene_variant_weights, [opened.path] * len(chosen), chosen, args=(fold, models), meta=meta,
                        label="variant-weights", enforce_metadata=False)
    return frame if client is None else client.persist(frame)


def compute(collection: Any, client: Any = None) -> Any:
    """Compute a Dask collection on the client when given, else with Dask's default scheduler."""
    return collection.compute() if client is None else client.compute(collection, sync=True)


def flag_names(columns: Sequence[str]) -> list[str]:
    """The hsv_/driver_ columns of a variant-weights table."""
    return [c for c in columns if c.startswith(FLAG_PREFIXES)]


def query(store: Path | str, fold: int = 0, genes: Sequence[str] = (), min_maf: float | None = None,
          max_maf: float | None = None, flags: Sequence[str] = (), client: Any = None) -> pd.DataFrame:
    """Rows of the variant-weights table with MAF in [min_maf, max_maf] and every given flag true."""
    frame = variant_weights(store, fold, client, genes)
    available = flag_names(frame.columns)
    unknown = [flag for flag in flags if flag not in available]
    if unknown:
        listing = ", ".join(available) or "none (no ISM scores: run `pstore ism`)"
        raise InputError(f"--flag {unknown[0]}: no such flag in fold {fold}; flags: {listing}")
    keep = frame["maf"] >= (-math.inf if min_maf is None else min_maf)
    keep &= frame["maf"] <= (math.inf if max_maf is None else max_maf)
    for flag in flags:
        keep &= frame[flag]
    return compute(frame[keep], client).reset_index(drop=True)


# --- summaries -----------------------------------------------------------------------------------------


def ism_model_names(weights: pd.DataFrame) -> list[str]:
    """Models with ISM scores in a variant-weights table."""
    return [c[len("ism_"):] for c in weights.columns if c.startswith("ism_")]


def direction_agreement(weights: pd.DataFrame) -> pd.DataFrame:
    """Per model: signs of ISM scores against elastic-net coefficients where both are non-zero, and Fisher's exact test."""
    coefficient = weights["enet_coefficient"].to_numpy(np.float64)
    rows = []
    for model in ism_model_names(weights):
        score = weights[f"ism_{model}"].to_numpy(np.float64)
        both = np.isfinite(score) & np.isfinite(coefficient) & (score != 0) & (coefficient != 0)
        up, enet_up = score[both] > 0, coefficient[both] > 0
        table = np.array([[np.sum(up & enet_up), np.sum(up & ~enet_up)], [np.sum(~up & enet_up), np.sum(~up & ~enet_up)]])
        odds, p = fisher_exact(table) if both.any() else (np.nan, np.nan)
        rows.append({"model": model, "variants": int(both.sum()), "both_positive": int(table[0, 0]),
                     "ism_positive_enet_negative": int(table[0, 1]), "ism_negative_enet_positive": int(table[1, 0]),
                     "both_negative": int(table[1, 1]), "agreement": np.trace(table) / both.sum() if both.any() else np.nan,
                     "odds_ratio": float(odds), "p_value": float(p)})
    return pd.DataFrame(rows, columns=["model", "variants", "both_positive", "ism_positive_enet_negative",
                                       "ism_negative_enet_positive", "both_negative", "agreement", "odds_ratio", "p_value"])


VARIANT_LIST_FIX = ("give a TSV whose header names contig and position (1-based), optionally gene_id, ref and alt "
                    "(like the simulator's finemapped_eqtls.tsv)")
"""What a variant list must be, for the errors that refuse one."""


def _read_variant_tsv(path: Path) -> pd.DataFrame:
    """A variant list read as a TSV, or one InputError when it is not one (a VCF, binary, empty or ragged file)."""
    try:
        with reading(path, "variant list"):
            return pd.read_csv(path, sep="\t", dtype={"gene_id": str, "contig": str, "ref": str, "alt": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        reason = str(error).strip().removeprefix("Error tokenizing data. C error: ")
        raise InputError(f"variant list {path}: not a TSV ({reason}); {VARIANT_LIST_FIX}") from None


def read_variant_list(path: Path) -> pd.DataFrame:
    """A TSV of variants with a header: contig and position (1-based) required; gene_id, ref and alt matched when present."""
    require_file(Path(path), "variant list")
    table = _read_variant_tsv(path)
    missing = sorted({"contig", "position"} - set(table.columns))
    if missing:
        raise InputError(f"variant list {path}: no column {', '.join(missing)}; {VARIANT_LIST_FIX}")
    if len(table) and not pd.api.types.is_integer_dtype(table["position"]):
        raise InputError(f"variant list {path}: column position holds non-integers; give 1-based positions")
    table["position"] = table["position"].astype(np.int64)  # an empty list (no fine-mapped eQTLs) reads as object
    return table[[c for c in ("gene_id", "contig", "position", "ref", "alt") if c in table.columns]]


def listed(weights: pd.DataFrame, variants: pd.DataFrame) -> np.ndarray:
    """Whether each row of a variant-weights table is in a variant list (by its columns; contig names reconciled)."""
    keys = list(variants.columns)
    contigs = weights["contig"].unique()
    right = variants.assign(contig=variants["contig"].map(lambda name: contig_alias(name, contigs)))
    right = right.dropna(subset=["contig"]).drop_duplicates().astype({k: object for k in keys if k != "position"})
    left = weights[keys].astype({k: object for k in keys if k != "position"})
    return left.merge(right.assign(_listed=True), on=keys, how="left")["_listed"].notna().to_numpy()


def recovery_auroc(weights: pd.DataFrame, variants: pd.DataFrame) -> pd.DataFrame:
    """Per gene and weight (|enet coefficient|, |ISM score| of each model): auROC of the listed variants (NaN with one class)."""
    labels = listed(weights, variants)
    columns = {ENET_MODEL: "enet_coefficient", **{m: f"ism_{m}" for m in ism_model_names(weights)}}
    rows = []
    for gene_id, index in weights.groupby("gene_id", sort=True).indices.items():
        for weight, column in columns.items():
            values = np.abs(weights[column].to_numpy(np.float64)[index])
            scored = np.isfinite(values)
            truth = labels[index][scored]
            auroc = roc_auc_score(truth, values[scored]) if 0 < truth.sum() < truth.size else np.nan
            rows.append({"gene_id": gene_id, "weight": weight, "variants": int(scored.sum()), "listed": int(truth.sum()),
                         "auroc": float(auroc)})
    return pd.DataFrame(rows, columns=["gene_id", "weight", "variants", "listed", "auroc"])


def auroc_summary(auroc: pd.DataFrame) -> pd.DataFrame:
    """Per weight: genes with an auROC, their mean and median."""
    grouped = auroc.dropna(subset=["auroc"]).groupby("weight", sort=False)["auroc"]
    return pd.DataFrame({"genes": grouped.size(), "mean_auroc": grouped.mean(), "median_auroc": grouped.median()}).reset_index()


def read_states(path: Path) -> pd.DataFrame:
    """A chromatin-state BED (chrom, start, end, state; 0-based half-open; '#' lines skipped)."""
    require_file(Path(path), "chromatin-state BED")
    try:
        table = pd.read_csv(path, sep="\t", header=None, comment="#", usecols=range(4), names=["chrom", "start", "end", "state"],
                            dtype={"chrom": str, "state": str})
    except ValueError as error:
        raise InputError(f"chromatin-state BED {path}: {error}; give tab-separated chrom, start, end, state") from None
    if not (pd.api.types.is_integer_dtype(table["start"]) and pd.api.types.is_integer_dtype(table["end"])):
        raise InputError(f"chromatin-state BED {path}: start and end must be integers (0-based half-open)")
    return table


def _state_lookup(states: pd.DataFrame, contig: str, positions: np.ndarray) -> np.ndarray:
    """Code of the state interval holding each 0-based position of a contig (-1 outside every interval)."""
    on = states[states["chrom"] == contig]
    index = np.searchsorted(on["start"].to_numpy(), positions, side="right") - 1
    inside = (index >= 0) & (positions < on["end"].to_numpy()[np.maximum(index, 0)])
    return np.where(inside, on["code"].to_numpy()[np.maximum(index, 0)], -1)


def state_enrichment(weights: pd.DataFrame, states: pd.DataFrame, genes: pd.DataFrame) -> pd.DataFrame:
    """Per flag and state: flagged SNVs in the state, observed vs expected, log2(observed / expected).

    Expected = sum over genes of the gene's flagged SNVs that lie in any state x the share of the gene's
    state-covered window bases that the state covers. genes: the store's gene index (windows).
    """
    states = states.assign(chrom=states["chrom"].map(lambda name: contig_alias(name, weights["contig"].unique())))
    states = states.dropna(subset=["chrom"]).sort_values(["chrom", "start"], kind="stable").reset_index(drop=True)
    overlapping = (states["chrom"].shift(-1) == states["chrom"]) & (states["start"].shift(-1) < states["end"])
    if overlapping.any():
        row = states[overlapping].iloc[0]
        raise InputError(f"chromatin-state BED: intervals overlap at {row.chrom}:{row.end}; give one state per base")
    names, codes = np.unique(states["state"].to_numpy(str), return_inverse=True)
    states["code"] = codes
    code = np.full(len(weights), -1)
    base_pairs = {}
    for gene_id, index in weights.groupby("gene_id", sort=True).indices.items():
        window = genes.loc[gene_id]
        contig = weights["contig"].iloc[index[0]]
        code[index] = _state_lookup(states, contig, weights["position"].to_numpy()[index] - 1)
        on = states[states["chrom"] == contig]
        overlap = np.clip(np.minimum(on["end"], window["gene_window_stop"]) - np.maximum(on["start"], window["gene_window_start"]), 0, None)
        base_pairs[gene_id] = np.bincount(on["code"], weights=overlap, minlength=len(names))
    share = {g: bp / bp.sum() if bp.sum() else bp for g, bp in base_pairs.items()}
    rows = []
    for flag in flag_names(weights.columns):
        flagged = weights[flag].to_numpy(bool) & (code >= 0)
        observed = np.bincount(code[flagged], minlength=len(names))
        per_gene = weights.loc[flagged, "gene_id"].value_counts()
        expected = sum((count * share[g] for g, count in per_gene.items()), np.zeros(len(names)))
        with np.errstate(divide="ignore", invalid="ignore"):
            log2 = np.log2(observed / expected)
        rows += [{"flag": flag, "state": name, "observed": int(o), "expected": float(e), "log2_enrichment": float(r)}
                 for name, o, e, r in zip(names, observed, expected, log2)]
    return pd.DataFrame(rows, columns=["flag", "state", "observed", "expected", "log2_enrichment"])


def variant_codes(store: Store, variants: pd.DataFrame, flank: int) -> tuple[np.ndarray, np.ndarray]:
    """REF and ALT base codes (variants, 2 flank + 1) centred on each variant, from the store's reference one-hot."""
    width = 2 * flank + 1
    ref = np.full((len(variants), width), N_CODE, dtype=np.int8)
    alt = ref.copy()
    for gene_id, index in variants.groupby("gene_id", sort=False).indices.items():
        group = store.gene(gene_id)
        padded = np.pad(decode_onehot(group["reference_onehot"][:]), flank, constant_values=N_CODE)
        offsets = variants["position"].to_numpy()[index] - 1 - group.attrs["window_start"]
        ref[index] = alt[index] = padded[offsets[:, None] + np.arange(width)]
        ref[index, flank] = base_codes(variants["ref"].to_numpy(object)[index])
        alt[index, flank] = base_codes(variants["alt"].to_numpy(object)[index])
    return ref, alt


def motif_disruption(store: Path | str, variants: pd.DataFrame, motifs: Sequence[Motif] | None = None,
                     pvalue: float = PVALUE, background: Sequence[float] = UNIFORM) -> pd.DataFrame:
    """Per variant (gene_id, position, ref, alt): the JASPAR motifs it breaks and creates (`motifs.py`).

    motifs: default every JASPAR CORE vertebrate matrix. Motifs are named `ID/name` in the lists.
    """
    scanned = prepare(load_jaspar() if motifs is None else motifs, pvalue, background)
    variants = variants[["gene_id", "position", "ref", "alt"]].reset_index(drop=True)
    flank = max((m.motif.length for m in scanned), default=1) - 1
    ref_hit, alt_hit = motif_hits(*variant_codes(Store(store), variants, flank), scanned)
    labels = np.array([f"{m.motif.matrix_id}/{m.motif.name}" for m in scanned], dtype=object)
    broken, created = ref_hit & ~alt_hit, alt_hit & ~ref_hit
    return variants.assign(
        n_broken=broken.sum(axis=1), n_created=created.sum(axis=1),
        motifs_broken=[";".join(labels[row]) for row in broken], motifs_created=[";".join(labels[row]) for row in created],
        breaks=broken.any(axis=1), creates=created.any(axis=1),
    )


def motif_rates(disruption: pd.DataFrame, groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per group of rows of a motif-disruption table: variants, and the percent that break, create, or do either."""
    rows = []
    for group, mask in groups.items():
        part = disruption[mask]
        rows.append({"group": group, "variants": len(part), "percent_break": 100 * part["breaks"].mean(),
                     "percent_create": 100 * part["creates"].mean(), "percent_either": 100 * (part["breaks"] | part["creates"]).mean()})
    return pd.DataFrame(rows, columns=["group", "variants", "percent_break", "percent_create", "percent_either"])


def _groups(weights: pd.DataFrame) -> dict[str, np.ndarray]:
    """Row masks: every SNV, then each flag."""
    return {"all": np.ones(len(weights), bool), **{flag: weights[flag].to_numpy(bool) for flag in flag_names(weights.columns)}}


def distributions(weights: pd.DataFrame) -> pd.DataFrame:
    """Histogram counts of MAF and TSS distance for every SNV and each flag (bins [low, high))."""
    rows = []
    for group, mask in _groups(weights).items():
        for quantity, edges in (("maf", MAF_EDGES), ("tss_distance", TSS_EDGES)):
            counts = pd.cut(weights.loc[mask, quantity], edges, right=False).value_counts(sort=False)
            rows += [{"group": group, "quantity": quantity, "low": b.left, "high": b.right, "count": int(c),
                      "fraction": c / mask.sum() if mask.any() else np.nan} for b, c in counts.items()]
    return pd.DataFrame(rows, columns=["group", "quantity", "low", "high", "count", "fraction"])


def distribution_summary(weights: pd.DataFrame) -> pd.DataFrame:
    """Per group (every SNV, each flag): genes, SNVs, median MAF, share below 1% and 5%, median |TSS distance|, share within 1 kb."""
    rows = []
    for group, mask in _groups(weights).items():
        part = weights[mask]
        distance = part["tss_distance"].abs()
        rows.append({"group": group, "genes": part["gene_id"].nunique(), "variants": len(part), "median_maf": part["maf"].median(),
                     "maf_below_1pct": (part["maf"] < 0.01).mean(), "maf_below_5pct": (part["maf"] < 0.05).mean(),
                     "median_abs_tss_distance": distance.median(), "within_1kb": (distance <= 1_000).mean()})
    return pd.DataFrame(rows)


def summarize(store: Path | str, fold: int = 0, finemapped: Path | None = None, states: Path | None = None,
              client: Any = None, motifs: Sequence[Motif] | None = None, pvalue: float = PVALUE,
              background: Sequence[float] = UNIFORM, weights: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Every summary of a fold's variant weights, as DataFrames by name (`weights`: the fold's computed
    variant-weights table, when the caller has it already).

    Always: `distribution_summary`, `distributions`, `direction`, `motifs` (flagged SNVs and a seeded sample of up
    to 1,000 unflagged ones, the `control` group) and `motif_rates`. With a variant list (`finemapped`, e.g.
    finemapped_eqtls.tsv or truth_variants.tsv): `auroc` per gene and weight and `auroc_summary`. With a
    chromatin-state BED (`states`): `enrichment`.
    """
    opened = Store(store)
    if weights is None:
        weights = compute(variant_weights(opened.path, fold, client), client).reset_index(drop=True)
    flagged = weights[flag_names(weights.columns)].any(axis=1).to_numpy()
    unflagged = np.flatnonzero(~flagged)
    control = np.random.default_rng(0).choice(unflagged, min(CONTROL_VARIANTS, unflagged.size), replace=False)
    scanned = np.sort(np.concatenate([np.flatnonzero(flagged), control]))
    disruption = motif_disruption(opened.path, weights.iloc[scanned], motifs, pvalue, background)
    groups = {**{g: m[scanned] for g, m in _groups(weights).items() if g != "all"}, "control": np.isin(scanned, control)}
    tables = {"distribution_summary": distribution_summary(weights), "distributions": distributions(weights),
              "direction": direction_agreement(weights), "motifs": disruption, "motif_rates": motif_rates(disruption, groups)}
    if finemapped is not None:
        tables["auroc"] = recovery_auroc(weights, read_variant_list(finemapped))
        tables["auroc_summary"] = auroc_summary(tables["auroc"])
    if states is not None:
        tables["enrichment"] = state_enrichment(weights, read_states(states), opened.genes)
    return tables
