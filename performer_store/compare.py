"""`pstore compare`: every model's test Pearson r and R2 per gene, averaged over folds, against the elastic net.

Reads every complete `genes/<gene>/results/<model>` group (elastic nets, lasso, base Enformer, Performer
runs). A model's r and R2 for a gene are the means over the folds it has (finite values only); its
difference from the baseline is the mean over the folds both have, each fold scored on the test people both
models predicted: a cross-cohort model (`pstore evaluate --run` of another store's run, `pstore enet
--from-store`) leaves out the people its source store trained on (`crosscohort.seen_people`), so where one
model scored people the other did not, it is scored again from its stored predictions on the shared people
(`predict.gene_metrics`); a fold whose stored metric is NaN (undefined) stays NaN. Genes are grouped by the
baseline's R2 as in the method's paper (Fig. 1c): none (<= 0), low (0-0.06) and medium/high (> 0.06); the
headline is the fraction of genes where a model is within 0.02 R2 of the baseline or better (84% for Performer
in the paper). `trained_in` tells a model of another store (cross-cohort, `source_store` attribute) from one
trained on this store's people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from . import schemas
from .inputs import InputError
from .predict import gene_metrics
from .results import read_result, result_models, result_source
from .store import Store

WITHIN = 0.02  # R2 margin of the paper's headline
GROUP_EDGES = (0.0, 0.06)  # baseline R2: none <= 0 < low <= 0.06 < medium/high
GROUP_NAMES = ("none", "low", "medium/high")
FOLD_COLUMNS = ["gene_id", "model", "kind", "trained_in", "fold", "status", "pearson_r", "r2"]
PAIRED_COLUMNS = ["gene_id", "model", "fold", "pearson_r", "r2", "baseline_pearson_r", "baseline_r2"]

Results = dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]]
"""One gene's results: arrays and attributes by model name."""


@dataclass(frozen=True)
class Comparison:
    """A per-gene table (one row per gene, columns per model) and a per-model summary."""

    table: pd.DataFrame
    summary: pd.DataFrame


def gene_results(store: Store, runs: Sequence[str] | None = None) -> Iterator[tuple[str, Results]]:
    """Each gene's complete results (only `runs` when given), one gene at a time: a store's predictions are never all
    in memory."""
    for gene_id in store.genes.index:
        yield gene_id, {model: read_result(store.path, gene_id, model) for model in result_models(store.path, gene_id)
                        if not runs or model in runs}


def fold_records(gene_id: str, results: Results) -> list[dict[str, Any]]:
    """One gene's rows of `fold_metrics`."""
    return [{"gene_id": gene_id, "model": model, "kind": attrs["kind"], "trained_in": result_source(attrs), "fold": fold,
             "status": arrays["status"][fold], "pearson_r": float(arrays["pearson_r"][fold]), "r2": float(arrays["r2"][fold])}
            for model, (arrays, attrs) in results.items() for fold in attrs["folds"]]


def fold_metrics(store: Store, runs: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per gene, model and fold that was run: kind, status, test r and R2 (as stored)."""
    return pd.DataFrame([row for gene_id, results in gene_results(store, runs) for row in fold_records(gene_id, results)],
                        columns=FOLD_COLUMNS)


def paired_records(store: Store, gene_id: str, results: Results, baseline: str, tests: np.ndarray) -> list[dict[str, Any]]:
    """One gene's rows per model and fold it shares with the baseline: both one's test r and R2 on the test people
    both predicted (`on_shared_people`; `tests`: folds x people), so that their difference compares the same people."""
    if baseline not in results or len(results) < 2:
        return []
    target, (base, base_attrs) = store.gene(gene_id)["target"][:], results[baseline]
    rows = []
    for model, (arrays, attrs) in results.items():
        for fold in sorted(set(attrs["folds"]) & set(base_attrs["folds"])) if model != baseline else []:
            ours, theirs = on_shared_people([arrays, base], fold, target, tests[fold])
            rows.append(dict(zip(PAIRED_COLUMNS, (gene_id, model, fold, *ours, *theirs))))
    return rows


def on_shared_people(results: Sequence[dict[str, np.ndarray]], fold: int, target: np.ndarray, test: np.ndarray) -> list[np.ndarray]:
    """Each result's stored test (r, R2) of a fold, but one that scored test people another did not predict (a
    cross-cohort model leaves out its source's train and tune people) is scored again on those all predicted, from
    its stored predictions (`gene_metrics`, float64); a stored NaN (an undefined metric) stays NaN."""
    test = test & ~np.isnan(target)
    predicted = [np.isfinite(arrays["prediction"][fold]) for arrays in results]
    shared = test & np.logical_and.reduce(predicted)
    scores = []
    for arrays, finite in zip(results, predicted):
        stored = np.array([arrays["pearson_r"][fold], arrays["r2"][fold]], dtype=np.float64)
        if np.count_nonzero(test & finite) > np.count_nonzero(shared):
            stored = np.where(np.isnan(stored), np.nan, gene_metrics(arrays["prediction"][fold][shared], target[shared]))
        scores.append(stored)
    return scores


def heritability_group(r2: pd.Series) -> pd.Series:
    """The paper's groups of genes by baseline R2 (missing where the baseline has no R2)."""
    groups = pd.cut(r2, [-np.inf, *GROUP_EDGES, np.inf], labels=GROUP_NAMES)
    return groups.astype(object).where(r2.notna(), "no baseline")


def compare_models(path: Path, runs: Sequence[str] | None = None, baseline: str = "enet") -> Comparison:
    """Per gene: every model's mean r and R2, its difference from the baseline, and the baseline's group."""
    store = Store(path)
    tests = store.root["sample_split"][:] == schemas.SPLIT_CODES["test"]
    records, pairs = [], []
    for gene_id, results in gene_results(store, runs if not runs else [*runs, baseline]):
        records += fold_records(gene_id, results)
        pairs += paired_records(store, gene_id, results, baseline, tests)
    folds, paired = pd.DataFrame(records, columns=FOLD_COLUMNS), pd.DataFrame(pairs, columns=PAIRED_COLUMNS)
    if not (folds["model"] == baseline).any():
        raise InputError(f"store {path}: no {baseline} results to compare against; run `pstore enet --store {path}` (--model lasso for lasso) first")
    if runs:
        missing = sorted(set(runs) - set(folds["model"]))
        if missing:
            raise InputError(f"store {path}: no results named {', '.join(missing)}; results present: "
                             f"{', '.join(sorted(set(fold_metrics(store)['model'])))}")
    means = folds.groupby(["gene_id", "model"])[["pearson_r", "r2"]].mean().unstack("model")
    table = pd.DataFrame({"gene_id": store.genes.index, "gene_name": store.genes["gene_name"].to_numpy()}).set_index("gene_id")
    table["group"] = heritability_group(means["r2"][baseline].reindex(table.index))
    models = sorted(set(folds["model"]), key=lambda m: (m != baseline, m))
    for model in models:
        table[f"{model}_r"] = means["pearson_r"][model].reindex(table.index)
        table[f"{model}_r2"] = means["r2"][model].reindex(table.index)
        if model == baseline:
            continue
        pair = paired[paired["model"] == model]
        difference = pd.DataFrame({m: pair[m] - pair[f"baseline_{m}"] for m in ("pearson_r", "r2")}).groupby(pair["gene_id"]).mean()
        table[f"{model}_minus_{baseline}_r"] = difference["pearson_r"].reindex(table.index)
        table[f"{model}_minus_{baseline}_r2"] = difference["r2"].reindex(table.index)
    summary = _summary(table, folds, paired, models[1:], baseline)
    return Comparison(table.reset_index(), summary)


def paired_r2(paired: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per gene, the model's and the baseline's mean test R2 on the same people (`paired_records`) over the folds
    where both have a finite one."""
    both = paired.loc[paired["model"] == model, ["gene_id", "r2", "baseline_r2"]].replace([np.inf, -np.inf], np.nan).dropna()
    return both.groupby("gene_id").mean()


def _summary(table: pd.DataFrame, folds: pd.DataFrame, paired: pd.DataFrame, models: Sequence[str], baseline: str) -> pd.DataFrame:
    """Per model: kind, genes compared (those with an R2 difference), the headline fraction, both mean R2s and the
    mean R2 difference per group, every number over those same genes; the mean R2s over the folds both models have,
    on the same people (`paired`, as the differences are), so mean_r2 - mean_<baseline>_r2 is the mean difference."""
    kinds = folds.drop_duplicates("model").set_index("model")[["kind", "trained_in"]]
    rows = []
    for model in models:
        difference = table[f"{model}_minus_{baseline}_r2"].dropna()
        means = paired_r2(paired, model).reindex(difference.index)
        row = {"model": model, "kind": kinds.loc[model, "kind"], "trained_in": kinds.loc[model, "trained_in"], "genes": len(difference),
               f"within_{WITHIN}_of_{baseline}_or_better": float((difference >= -WITHIN).mean()) if len(difference) else np.nan,
               "mean_r2": float(means["r2"].mean()), f"mean_{baseline}_r2": float(means["baseline_r2"].mean())}
        for group in GROUP_NAMES:
            in_group = difference[table.loc[difference.index, "group"] == group]
            row[f"genes_{group}"] = len(in_group)
            row[f"minus_{baseline}_r2_{group}"] = float(in_group.mean()) if len(in_group) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(table: pd.DataFrame, out: Path) -> None:
    """Write a table as TSV or Parquet, by the file's suffix, atomically (the parent directory is created if missing)."""
    from .results import replace_atomically

    out = Path(out)
    if out.suffix == ".tsv":
        write = lambda path: table.to_csv(path, sep="\t", index=False, na_rep="NaN")  # noqa: E731
    elif out.suffix == ".parquet":
        write = lambda path: table.to_parquet(path, index=False)  # noqa: E731
    else:
        raise InputError(f"--out {out}: give a .tsv or .parquet file name")
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a .tsv or .parquet file name")
    replace_atomically(out, write)


def model_summary(path: Path) -> pd.DataFrame:
    """One row per model in the store: kind, genes and folds with results, mean test r and R2 over them."""
    folds = fold_metrics(Store(path))
    grouped = folds.groupby("model")
    return pd.DataFrame({
        "kind": grouped["kind"].first(),
        "genes": grouped["gene_id"].nunique(),
        "folds": grouped["fold"].agg(lambda f: ",".join(str(x) for x in sorted(set(f)))),
        "mean_r": grouped["pearson_r"].mean(),
        "mean_r2": grouped["r2"].mean(),
        "trained_in": grouped["trained_in"].first(),
    }).reset_index()
