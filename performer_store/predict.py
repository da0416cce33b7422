"""Run a model over people of genes, and score predictions per gene (Pearson r and R2 across people)."""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.stats import NearConstantInputWarning, pearsonr
from sklearn.metrics import r2_score

from .inputs import InputError
from .loader import BatchLoader, MicroBatch


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the model stays float32); full float32 on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


@torch.no_grad()
def predict(model: Callable[[torch.Tensor], torch.Tensor], loader: BatchLoader,
            batches: Sequence[MicroBatch]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per gene: (store rows, predictions, targets) of every person in the batches."""
    out: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for batch, onehot, target in loader(batches):
        with autocast(loader.device):
            prediction = model(onehot).float()
        out.setdefault(batch.micro.gene_id, []).append((batch.micro.rows, prediction.cpu().numpy(), target.cpu().numpy()))
    return {gene: tuple(np.concatenate(parts) for parts in zip(*chunks)) for gene, chunks in out.items()}


def check_finite(values: np.ndarray, gene_id: str, model: str, fix: str) -> None:
    """Refuse a gene's predictions (or ISM scores) holding nan or inf, naming the gene, the model and the fix."""
    values = np.asarray(values, dtype=np.float64)
    bad = values[~np.isfinite(values)]
    if bad.size:
        raise InputError(f"{model}: predictions of gene {gene_id} are not finite ({bad.size} of {values.size} are {bad[0]}); {fix}; nothing of it was stored")


def gene_metrics(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Pearson r (scipy) and R2 (sklearn r2_score) across people, in float64 whatever the inputs' dtype (so every
    caller scores alike); NaN when undefined (constant values)."""
    keep = ~np.isnan(target)
    prediction, target = prediction[keep].astype(np.float64), target[keep].astype(np.float64)
    if len(target) < 2 or np.ptp(target) == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():  # near-constant predictions (early in training) are scored, not warned about
        warnings.simplefilter("ignore", NearConstantInputWarning)
        r = math.nan if np.ptp(prediction) == 0 else float(pearsonr(prediction, target).statistic)
    return r, float(r2_score(target, prediction))
