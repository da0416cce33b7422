"""Per-gene metrics (`predict.gene_metrics`) against scipy and sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import r2_score

from performer_store.predict import gene_metrics


def test_metrics_are_float64_whatever_the_input_dtype():
    """float32 predictions (a run's) score exactly as float64 ones (a cross-cohort transfer's) and as scipy/sklearn in float64."""
    rng = np.random.default_rng(7)
    target = rng.normal(size=200).astype(np.float32)  # stored targets are float32
    prediction = (0.3 * target + rng.normal(scale=1e-3, size=200) + 5.0).astype(np.float32)  # near-constant, offset
    target[[3, 50]] = np.nan
    keep = ~np.isnan(target)
    expected_r = pearsonr(prediction[keep].astype(np.float64), target[keep].astype(np.float64)).statistic
    expected_r2 = r2_score(target[keep].astype(np.float64), prediction[keep].astype(np.float64))
    for dtype in (np.float32, np.float64):
        r, r2 = gene_metrics(prediction.astype(dtype), target.astype(dtype))
        assert r == pytest.approx(expected_r, abs=1e-12) and r2 == pytest.approx(expected_r2, abs=1e-12)


def test_metrics_are_nan_when_undefined():
    """Constant targets, fewer than two people or constant predictions leave r (and R2 for targets) undefined."""
    assert all(math.isnan(v) for v in gene_metrics(np.arange(5.0), np.full(5, 2.0)))
    assert all(math.isnan(v) for v in gene_metrics(np.arange(3.0), np.array([1.0, np.nan, np.nan])))
    r, r2 = gene_metrics(np.full(4, 1.0), np.arange(4.0))
    assert math.isnan(r) and r2 == pytest.approx(r2_score(np.arange(4.0), np.full(4, 1.0)))
