"""scikit-learn's `ElasticNetCV` (5-fold KFold, 100 alphas, max_iter 2000, tol 1e-4), fitted faster.

The same coordinate descent as scikit-learn's `precompute=True` path (its own Cython routine, the same
updates in the same order from the same warm starts), with three savings:

- Gram matrices: X'X of all train people once, each inner fold's as that minus its held-out people's block,
  centred by a rank-one correction, instead of a product per fold;
- the 5 folds walk down the alpha grid together, so the mean validation error is known after every alpha;
- early exit: the walk stops at an expensive alpha, where coordinate descent took `STOP_EPOCHS` epochs or more
  in some inner fold (the small alphas, which run towards max_iter and take most of scikit-learn's time),
  once the mean validation error has risen `STOP_RISE` above its minimum so far and rose at each of the last
  `STOP_ALPHAS` alphas (`STOP_ALPHAS_NULL` while that minimum is still the first alpha's, the model without
  SNVs). Alphas whose descent converges sooner are always fitted, so the exit skips only the expensive tail,
  and its answer differs from the whole grid's only if the error curve falls below its minimum again there.
  With few people the curve can rise for 18-20 alphas, from the null model or from a first minimum, and then
  fall below it (seen at 94-117 train people, where those alphas converge quickly: they are fitted now);
  benchmarks/enet.py counts how often the exit picks another alpha than the whole grid. `stop=False` fits the
  whole grid, as scikit-learn does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model._cd_fast import enet_coordinate_descent_gram
from sklearn.linear_model._coordinate_descent import _alpha_grid
from sklearn.model_selection import KFold

N_ALPHAS = 100
EPS = 1e-3
INNER_FOLDS = 5
MAX_ITER = 2000
TOL = 1e-4
STOP_RISE = 0.05
STOP_ALPHAS = 5
STOP_ALPHAS_NULL = 30
STOP_EPOCHS = 200  # a tenth of max_iter: alphas that converge sooner are cheap, and always fitted


@dataclass(frozen=True)
class PathFit:
    """The refitted model and how much of the alpha grid the cross-validation fitted."""

    coefficient: np.ndarray
    intercept: float
    alpha: float
    mean_mse: np.ndarray  # mean validation error per fitted alpha, largest alpha first


@dataclass
class _Problem:
    """One least-squares problem in Gram form: centred X'X and X'y, centred y, offsets, warm coefficients."""

    gram: np.ndarray
    xy: np.ndarray
    y: np.ndarray
    x_mean: np.ndarray
    y_mean: float
    coefficient: np.ndarray


def _problem(gram: np.ndarray, x_sum: np.ndarray, x: np.ndarray, y: np.ndarray) -> _Problem:
    """Centre an uncentred Gram matrix X'X (with column sums `x_sum`) of rows `x` and targets `y`."""
    n = len(y)
    x_mean, y_mean = x_sum / n, y.mean()
    centred = gram - n * np.outer(x_mean, x_mean)
    y_centred = y - y_mean
    xy = x.T @ y_centred
    return _Problem(np.ascontiguousarray(centred), xy, y_centred, x_mean, float(y_mean), np.zeros(x.shape[1]))


def _descend(problem: _Problem, alpha: float, l1_ratio: float, rng: np.random.RandomState) -> int:
    """scikit-learn's Gram coordinate descent at one alpha, warm-started from and updating the coefficients; the
    epochs it took (max_iter when it did not converge)."""
    n = len(problem.y)
    *_, n_iter = enet_coordinate_descent_gram(problem.coefficient, alpha * l1_ratio * n, alpha * (1 - l1_ratio) * n,
                                              problem.gram, problem.xy, problem.y, MAX_ITER, TOL, rng, False, False, True)
    return n_iter


def _should_stop(mean_mse: list[float]) -> bool:
    """Whether the mean validation error rose at each of the last STOP_ALPHAS alphas (STOP_ALPHAS_NULL while the
    first alpha's is the lowest) to STOP_RISE above its minimum."""
    rises = STOP_ALPHAS_NULL if int(np.argmin(mean_mse)) == 0 else STOP_ALPHAS
    if len(mean_mse) <= rises:
        return False
    recent = np.array(mean_mse[-rises - 1:])
    return bool(np.all(np.diff(recent) > 0) and recent[-1] > (1 + STOP_RISE) * min(mean_mse))


def elastic_net_cv(X: np.ndarray, y: np.ndarray, l1_ratio: float, stop: bool = True) -> PathFit:
    """ElasticNetCV(l1_ratio) (LassoCV for 1) on people x features without constant columns, as scikit-learn fits it."""
    rng = np.random.RandomState(0)  # unused by cyclic descent; scikit-learn's routine draws a seed from it
    alphas = _alpha_grid(X, y, l1_ratio=l1_ratio, n_alphas=N_ALPHAS, eps=EPS)
    gram, x_sum = X.T @ X, X.sum(axis=0)
    folds = []
    for train, held in KFold(INNER_FOLDS).split(X):
        part = X[held]
        folds.append((_problem(gram - part.T @ part, x_sum - part.sum(axis=0), X[train], y[train]), part, y[held]))
    mean_mse: list[float] = []
    for alpha in alphas:
        errors, epochs = [], 0
        for problem, part, target in folds:
            epochs = max(epochs, _descend(problem, alpha, l1_ratio, rng))
            intercept = problem.y_mean - problem.x_mean @ problem.coefficient
            errors.append(np.mean((part @ problem.coefficient + intercept - target) ** 2))
        mean_mse.append(float(np.mean(errors)))
        if stop and epochs >= STOP_EPOCHS and _should_stop(mean_mse):
            break
    best = alphas[int(np.argmin(mean_mse))]
    full = _problem(gram, x_sum, X, y)
    if best < alphas[0]:  # alphas[0] is the smallest alpha with no SNV: exactly zero, as scikit-learn's own X'y gives
        _descend(full, best, l1_ratio, rng)  # (the descent on our centred Gram form can leave a 1e-17 coefficient there)
    intercept = full.y_mean - full.x_mean @ full.coefficient
    return PathFit(full.coefficient, float(intercept), float(best), np.array(mean_mse))
