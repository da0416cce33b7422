"""`pstore enet`: elastic-net and lasso baselines per gene and fold, on the same people as the deep models.

The method's pipeline: the 0/1/2 ALT dosage of every SNV in the gene's window (missing calls count 0),
`VarianceThreshold()` (drops SNVs constant among the fold's train people), then `ElasticNetCV` or `LassoCV`
with `max_iter=2000` and scikit-learn's defaults otherwise, which the paper does not change:

- l1_ratio 0.5 for the elastic net (the same mix as PredictDB's glmnet alpha = 0.5) and 1 for the lasso;
- 100 alphas, log-spaced from the alpha that zeroes every coefficient down to 1e-3 of it;
- alpha chosen by 5-fold inner cross-validation over the fold's train people in store order (KFold without
  shuffling; people are stored in a seeded random order), then refit on all of them;
- coordinate descent with tol 1e-4, cyclic, with gap-safe screening.

Solver: `solver="early"` (the default) runs scikit-learn's own Gram coordinate descent through
`enet_path.elastic_net_cv`: the same updates in the same order from the same warm starts, Gram matrices
shared by the inner folds, and an early exit that stops walking down the alpha grid once the mean
validation error has clearly risen past its minimum (the small alphas it skips take most of scikit-learn's
time; see enet_path for the rule and BENCHMARKS.md for speed and agreement). `solver="gram"` fits the whole
grid the same way (scikit-learn's validation errors and result to rounding), and `solver="sklearn"` runs
scikit-learn's `ElasticNetCV` defaults. The early exit gives scikit-learn's result unless the error curve
falls again below its minimum after that rise, which no tested or benchmarked gene does.

Folds without a usable model are recorded with an explaining status (see `fit_fold`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import zarr
from scipy.stats import NearConstantInputWarning, pearsonr
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import VarianceThreshold
from sklearn.linear_model import ElasticNetCV, LassoCV
from sklearn.metrics import r2_score

from . import schemas
from .enet_path import EPS, INNER_FOLDS, MAX_ITER, N_ALPHAS, TOL, elastic_net_cv
from .inputs import InputError
from .parallel import map_tasks
from .results import blank_result, read_result, write_result
from .store import Store

L1_RATIOS = {"enet": 0.5, "lasso": 1.0}
MIN_TRAIN = 2 * INNER_FOLDS  # every inner validation fold gets at least 2 people
MIN_TEST = 3  # Pearson r of 2 people is always +-1
SETTINGS = {"pipeline": "VarianceThreshold() + ElasticNetCV/LassoCV", "n_alphas": N_ALPHAS, "eps": EPS,
            "inner_cv": f"KFold({INNER_FOLDS}), no shuffle", "max_iter": MAX_ITER, "tol": TOL, "selection": "cyclic"}
SPLIT = schemas.SPLIT_CODES
SOLVERS = ("early", "gram", "sklearn")


@dataclass(frozen=True)
class LinearFit:
    """A fitted linear model: a coefficient per input column (0 where VarianceThreshold dropped it)."""

    coefficient: np.ndarray
    intercept: float
    alpha: float
    l1_ratio: float


def fit_linear(X: np.ndarray, y: np.ndarray, l1_ratio: float, solver: str = "early") -> LinearFit:
    """The method's pipeline, VarianceThreshold + ElasticNetCV (LassoCV for l1_ratio 1), on people x SNVs.

    `solver` "early" and "gram" fit it with `enet_path.elastic_net_cv` (with and without the early exit
    down the alpha grid); "sklearn" runs scikit-learn's estimators with their defaults. Warnings about
    small alphas that stop at max_iter (as in the method) are muted.
    """
    support = VarianceThreshold().fit(X).get_support()
    coefficient = np.zeros(X.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if solver == "sklearn":
            search = LassoCV(max_iter=MAX_ITER) if l1_ratio == 1 else ElasticNetCV(l1_ratio=l1_ratio, max_iter=MAX_ITER)
            search.fit(X[:, support], y)
            coefficient[support] = search.coef_
            return LinearFit(coefficient, float(search.intercept_), float(search.alpha_), l1_ratio)
        fit = elastic_net_cv(X[:, support], y, l1_ratio, stop=solver == "early")
    coefficient[support] = fit.coefficient
    return LinearFit(coefficient, fit.intercept, fit.alpha, l1_ratio)


# --- one gene and fold ---------------------------------------------------------------------------------


def genotype_dosage(group: zarr.Group) -> np.ndarray:
    """(people, SNVs) 0/1/2 count of the ALT allele; missing and absent calls count 0, as in the method."""
    return (group["call_genotype"][:] == 1).sum(axis=-1, dtype=np.int8).T.astype(np.float64)


def _score(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float, str]:
    """Pearson r (scipy) and R2 (sklearn) over the test people, and why either is undefined ('' if neither)."""
    if len(target) < MIN_TEST:
        return math.nan, math.nan, f"too few people: {len(target)} test with a target (need {MIN_TEST})"
    if np.ptp(target) == 0:
        return math.nan, math.nan, "constant target among the test people, so r and R2 are undefined"
    r2 = float(r2_score(target, prediction))
    if np.ptp(prediction) == 0:
        return math.nan, r2, "constant prediction, so r is undefined"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NearConstantInputWarning)  # a tiny coefficient: r is still defined
        return float(pearsonr(prediction, target).statistic), r2, ""


def fit_fold(dosage: np.ndarray, target: np.ndarray, split: np.ndarray, l1_ratio: float, solver: str = "early") -> dict[str, object]:
    """One fold's values of every result array: fit on its train people, predict its tune and test people.

    Folds without a usable model say why in `status`: too few train people with a target (< MIN_TRAIN; nothing
    predicted), a constant train target or no SNV that varies among the train people (the model is the train
    mean: coefficients 0, the mean predicted, metrics NaN). A fitted fold is 'ok', with a note when its test
    metrics are undefined (fewer than MIN_TEST test people, a constant test target, or no SNV selected).
    """
    train = (split == SPLIT["train"]) & ~np.isnan(target)
    held = split != SPLIT["train"]
    test = (split == SPLIT["test"]) & ~np.isnan(target)
    n_train, n_variants = int(train.sum()), dosage.shape[1]
    row = {"prediction": np.full(len(split), np.nan), "pearson_r": math.nan, "r2": math.nan,
           "enet_coefficient": np.full(n_variants, np.nan), "enet_intercept": math.nan, "enet_alpha": math.nan,
           "enet_l1_ratio": l1_ratio, "enet_n_nonzero": -1}
    if n_train < MIN_TRAIN:
        return {**row, "status": f"too few people: {n_train} train with a target (need {MIN_TRAIN})"}
    y = target[train]
    variable = np.ptp(dosage[train], axis=0) > 0 if n_variants else np.zeros(0, bool)
    if np.ptp(y) == 0 or not variable.any():
        if np.ptp(y) == 0:
            status = f"constant target: every train person has {y[0]:g}; predicts it"
        elif n_variants == 0:
            status = "no variants: the window has no SNVs; predicts the train mean"
        else:
            status = f"no variants: all {n_variants} SNVs are constant among the {n_train} train people; predicts the train mean"
        prediction = np.where(held, y.mean(), np.nan)
        return {**row, "prediction": prediction, "enet_coefficient": np.zeros(n_variants), "enet_intercept": y.mean(),
                "enet_n_nonzero": 0, "status": status}
    fit = fit_linear(dosage[train], y, l1_ratio, solver)
    prediction = np.where(held, dosage @ fit.coefficient + fit.intercept, np.nan)
    n_nonzero = int(np.count_nonzero(fit.coefficient))
    r, r2, note = _score(prediction[test], target[test])
    notes = ["no SNV selected"] * (n_nonzero == 0) + [note] * bool(note)
    status = "ok: " + "; ".join(notes) if notes else "ok"
    return {**row, "prediction": prediction, "pearson_r": r, "r2": r2, "enet_coefficient": fit.coefficient,
            "enet_intercept": fit.intercept, "enet_alpha": fit.alpha, "enet_n_nonzero": n_nonzero, "status": status}


# --- the store -----------------------------------------------------------------------------------------

SPECS = (schemas.RESULT, schemas.ENET_RESULT)


@dataclass(frozen=True)
class EnetTask:
    """One gene's missing folds of one linear model, small enough to ship to a Dask worker."""

    store: Path
    gene_id: str
    model: str
    folds: tuple[int, ...]
    solver: str


def fit_gene(task: EnetTask) -> None:
    """Fit a gene's missing folds and write them into its result group (the folds already there are kept)."""
    store = Store(task.store)
    group = store.gene(task.gene_id)
    dosage = genotype_dosage(group)
    target = group["target"][:].astype(np.float64)
    splits = store.root["sample_split"][:]
    values = blank_result({"folds": len(splits), "samples": len(target), "variants": dosage.shape[1]}, SPECS)
    for fold in task.folds:
        for name, value in fit_fold(dosage, target, splits[fold], L1_RATIOS[task.model], task.solver).items():
            values[name][fold] = value
    attrs = {"settings": SETTINGS, "solver": {str(fold): task.solver for fold in task.folds}}
    write_result(task.store, task.gene_id, task.model, task.model, task.folds, values, attrs, SPECS)


def plan_enet(store: Store, genes: Sequence[str], folds: Sequence[int] | None, model: str, solver: str | None = None,
              force: bool = False) -> list[EnetTask]:
    """Tasks for the (gene, model) groups that miss a requested fold, or all of them with `force` (checking the request first).

    `solver` None fits missing folds with "early" and keeps stored folds whatever their solver; a named solver
    refuses folds stored with another one unless `force` refits them, so no result claims a solver that did not fit it.
    """
    if model not in L1_RATIOS:
        raise InputError(f"--model {model}: unknown; choose one of {', '.join(L1_RATIOS)}")
    if solver is not None and solver not in SOLVERS:
        raise InputError(f"--solver {solver}: unknown; choose one of {', '.join(SOLVERS)}")
    n_folds = store.root["sample_split"].shape[0]
    if folds is not None and not folds:
        raise InputError(f"--folds: no fold given; give fold numbers separated by commas (0-{n_folds - 1}), or leave it out for every fold")
    folds = sorted(set(range(n_folds) if folds is None else folds))
    for fold in folds:
        store.split(fold)  # refuses folds the store does not have
    genes = list(dict.fromkeys(genes)) or list(store.genes.index)
    store.check_genes(genes)
    stored = {gene_id: stored_solvers(store, gene_id, model) for gene_id in genes}
    if solver is not None and not force:
        _refuse_other_solver(stored, folds, model, solver)
    tasks = []
    for gene_id in genes:
        todo = tuple(folds) if force else tuple(f for f in folds if f not in stored[gene_id])
        if todo:
            tasks.append(EnetTask(store.path, gene_id, model, todo, solver or "early"))
    return tasks


def stored_solvers(store: Store, gene_id: str, model: str) -> dict[int, str]:
    """The solver of each fold a gene's linear model has stored ('unknown' where the result does not record it)."""
    previous = read_result(store.path, gene_id, model)
    if previous is None:
        return {}
    recorded = previous[1].get("solver", {})
    return {fold: recorded.get(str(fold), "unknown") for fold in previous[1]["folds"]}


def _refuse_other_solver(stored: dict[str, dict[int, str]], folds: Sequence[int], model: str, solver: str) -> None:
    """InputError when a requested fold is stored with another solver than `solver`, naming it and the fixes."""
    other = [(gene_id, fold, used) for gene_id, by_fold in stored.items() for fold, used in by_fold.items()
             if fold in folds and used != solver]
    if other:
        gene_id, fold, used = other[0]
        raise InputError(f"--solver {solver}: {len(other)} requested folds of {model} are stored fitted with another solver "
                         f"(first: {gene_id} fold {fold}, solver {used}); add --force to refit them with {solver}, "
                         f"or leave out --solver to keep them")


def run_enet(store: Path, genes: Sequence[str] = (), folds: Sequence[int] | None = None, model: str = "enet",
             solver: str | None = None, workers: int = 1, scheduler: str | None = None, progress: bool = True,
             force: bool = False) -> tuple[pd.DataFrame, int]:
    """Fit the missing (gene, fold) models of a store (every requested one with `force`); returns every requested
    gene's fold table and the number of genes fitted."""
    opened = Store(store)
    tasks = plan_enet(opened, genes, folds, model, solver, force)
    map_tasks(fit_gene, tasks, workers=workers, scheduler=scheduler, progress=progress, desc=model)
    return fold_table(opened, list(dict.fromkeys(genes)) or list(opened.genes.index), model, folds), len(tasks)


def fold_table(store: Store, genes: Sequence[str], model: str, folds: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per gene and run fold of a linear model: status, solver, test r and R2, chosen alpha, non-zero coefficients."""
    records = []
    for gene_id in genes:
        arrays, attrs = read_result(store.path, gene_id, model)
        for fold in attrs["folds"] if folds is None else sorted(set(folds)):
            records.append({"gene_id": gene_id, "fold": fold, "status": arrays["status"][fold],
                            "solver": attrs.get("solver", {}).get(str(fold), "unknown"),
                            "pearson_r": float(arrays["pearson_r"][fold]), "r2": float(arrays["r2"][fold]),
                            "alpha": float(arrays["enet_alpha"][fold]), "n_nonzero": int(arrays["enet_n_nonzero"][fold])})
    return pd.DataFrame(records, columns=["gene_id", "fold", "status", "solver", "pearson_r", "r2", "alpha", "n_nonzero"])
