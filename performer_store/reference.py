"""Reference-window predictions and the across-gene check against mean expression (`pstore evaluate --reference`).

Targets are normalized per gene (mean ~0 across people), so fine-tuning never shows Performer how genes differ
in level; base Enformer, trained on CAGE across the genome, has seen that. The paper's check: predict each
gene's reference window (no person's variants; cropped to the model's window and centred, as ISM does) with
every model and correlate the predictions with the genes' mean expression across people, which the store keeps
from `pstore build --mean-expression` (gene attribute `mean_expression`). Predictions go to
`genes/<gene>/reference/<model>` (`schemas.REFERENCE_RESULT`): a Performer run fills its fold, base Enformer
every fold. Single-gene runs sharing a results name (e.g. `performer`) each predict their own gene, so the
name's correlation is over one model per gene, as in the paper.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from . import schemas
from .ism import IsmModel, gene_snvs, score_window
from .loader import GeneReader
from .results import blank_result, read_result, result_models, write_result
from .store import Store
from .train import choose_device

MIN_GENES = 3  # fewer genes give no correlation


def write_reference(store: Store, gene_id: str, model: IsmModel, prediction: float) -> None:
    """Store a gene's reference prediction in the model's folds of `genes/<gene>/reference/<model>`."""
    folds = list(model.folds)
    values = blank_result({"folds": store.root["sample_split"].shape[0]}, (schemas.REFERENCE_RESULT,))
    values["reference_prediction"][folds], values["status"][folds] = prediction, "ok"
    write_result(store.path, gene_id, model.name, model.kind, folds, values, model.gene_attrs(gene_id), specs=(schemas.REFERENCE_RESULT,),
                 group=schemas.REFERENCE_GROUP)


def predict_references(store_path: Path, model: IsmModel, genes: Sequence[str], device: str = "auto") -> pd.DataFrame:
    """Predict and store the reference window of every gene with a model; one row per gene with its mean expression."""
    store = Store(store_path)
    for gene_id in genes:
        store.gene(gene_id)  # an unknown gene stops the run before anything is computed or written
        model.check_keeps_hop(store, gene_id, schemas.REFERENCE_GROUP)
    reader = GeneReader(store.path, model.window)
    chosen = choose_device(device)
    module = model.module.to(chosen).eval()
    dtype = next(module.parameters()).dtype
    none = torch.zeros(0, dtype=torch.int64, device=chosen)
    means = mean_expression(store)
    rows = []
    for gene_id in genes:
        reference = torch.from_numpy(gene_snvs(reader, gene_id)[0]).to(chosen, dtype)
        prediction, _ = score_window(model, reference, none, none, method="full")
        model.check_finite(gene_id, np.array([prediction]))
        write_reference(store, gene_id, model, prediction)
        rows.append({"gene_id": gene_id, "model": model.name, "reference_prediction": prediction,
                     "mean_expression": means.get(gene_id, math.nan)})
    return pd.DataFrame(rows, columns=["gene_id", "model", "reference_prediction", "mean_expression"])


def mean_expression(store: Store) -> pd.Series:
    """Each gene's mean expression (gene attribute `mean_expression`; NaN where the build had none), by gene_id."""
    values = {g: store.gene(g).attrs.get("mean_expression") for g in store.genes.index}
    return pd.Series({g: math.nan if v is None else float(v) for g, v in values.items()}, dtype=float, name="mean_expression")


def reference_predictions(store: Store, fold: int) -> pd.DataFrame:
    """Every stored reference prediction of a fold: gene_id, model, kind, reference_prediction, mean_expression."""
    means = mean_expression(store)
    rows = []
    for gene_id in store.genes.index:
        for model in result_models(store.path, gene_id, schemas.REFERENCE_GROUP):
            arrays, attrs = read_result(store.path, gene_id, model, schemas.REFERENCE_GROUP)
            if arrays["status"][fold] == "ok":
                rows.append({"gene_id": gene_id, "model": model, "kind": attrs["kind"],
                             "reference_prediction": float(arrays["reference_prediction"][fold]), "mean_expression": means[gene_id]})
    return pd.DataFrame(rows, columns=["gene_id", "model", "kind", "reference_prediction", "mean_expression"])


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r (NaN with fewer than MIN_GENES values or a constant side)."""
    if len(x) < MIN_GENES or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def across_genes(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: genes with both a reference prediction and a mean expression, Pearson r and Spearman r (Pearson of
    average ranks) between the two across genes."""
    rows = []
    for model, part in table.groupby("model", sort=True):
        part = part[np.isfinite(part["reference_prediction"]) & np.isfinite(part["mean_expression"])]
        x, y = part["reference_prediction"].to_numpy(float), part["mean_expression"].to_numpy(float)
        ranks = part[["reference_prediction", "mean_expression"]].rank().to_numpy(float)
        rows.append({"model": model, "genes": len(part), "pearson_r": pearson(x, y), "spearman_r": pearson(ranks[:, 0], ranks[:, 1])})
    return pd.DataFrame(rows, columns=["model", "genes", "pearson_r", "spearman_r"])


def evaluate_reference(store_path: Path, model: IsmModel, genes: Sequence[str] = (), run: Path | None = None,
                       device: str = "auto") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict the reference windows of the chosen genes (default: the run's training genes from its run.json, or
    every gene for base Enformer); returns those rows and the model's across-gene correlation in its first fold,
    over every gene it has a reference prediction for (all single-gene runs of a results name together)."""
    from .report import run_genes

    store = Store(store_path)
    chosen = list(genes) or (run_genes(Path(run)) if run is not None else None) or list(store.genes.index)
    table = predict_references(store.path, model, chosen, device)
    stored = reference_predictions(store, model.folds[0])
    return table, across_genes(stored[stored["model"] == model.name])
