"""JASPAR motif scanning: exact score thresholds for a p-value, and the motifs a SNV creates or breaks.

A motif's scores are the log2 odds of its base probabilities (JASPAR counts plus a pseudocount of 0.8 spread
by the background, as TFBSTools' `toPWM`) against a background (uniform unless given), rounded to 1/100 bit.
On that integer grid the score distribution of a background sequence is exact (dynamic programming over the
motif's positions, as in MOODS and TFMPvalue), so the threshold for a p-value is exact for the matrix that is
scanned: the lowest score s with P(score >= s) <= p. A motif too short to be that rare (5 bp at p = 5e-5:
every 5-mer has P >= 4^-5) never hits. Thresholds are cached per (matrix ID, p-value, background).

A variant breaks a motif when the best window covering it (either strand) is a hit with REF and not with ALT,
and creates it when the reverse holds; the windows come from the motif length - 1 bases either side of the
variant. N (code 4), including positions beyond the sequence, scores each position's minimum: it never helps a hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .simulate import JASPAR_RELEASE

PSEUDOCOUNT = 0.8
RESOLUTION = 100  # integer score units per bit
PVALUE = 5e-5  # motifbreakR's threshold in the method
UNIFORM = (0.25, 0.25, 0.25, 0.25)
N_CODE = 4


@dataclass(frozen=True, eq=False)
class Motif:
    """A JASPAR matrix: ID, TF name and base counts, shape (length, 4) over A, C, G, T."""

    matrix_id: str
    name: str
    counts: np.ndarray

    @property
    def length(self) -> int:
        """Motif length in bp."""
        return len(self.counts)


@dataclass(frozen=True, eq=False)
class ScoredMotif:
    """A motif ready to scan: integer scores (length, 5: A, C, G, T, N) and the hit threshold."""

    motif: Motif
    scores: np.ndarray
    threshold: int

    @property
    def reachable(self) -> bool:
        """Whether some sequence scores at least the threshold (False for motifs too short for the p-value)."""
        return self.threshold <= self.scores[:, :4].max(axis=1).sum()


def load_jaspar(matrix_ids: Sequence[str] | None = None, release: str = JASPAR_RELEASE) -> list[Motif]:
    """The given JASPAR matrices, or every CORE vertebrate matrix (latest versions), from pyjaspar's bundled database."""
    try:
        import pyjaspar
    except ImportError as error:
        raise ImportError("motif scanning needs pyjaspar (bundles JASPAR): pip install pyjaspar") from error
    database = pyjaspar.jaspardb(release=release)
    if matrix_ids is None:
        records = database.fetch_motifs(collection="CORE", tax_group=["vertebrates"], all_versions=False)
    else:
        records = [database.fetch_motif_by_id(matrix_id) for matrix_id in matrix_ids]
        missing = [m for m, record in zip(matrix_ids, records) if record is None]
        if missing:
            raise ValueError(f"{release} has no matrix {', '.join(missing)}; give JASPAR IDs such as MA0139.2")
    return [Motif(r.matrix_id, r.name, np.array([r.counts[base] for base in "ACGT"], dtype=float).T) for r in records]


def check_background(background: Sequence[float]) -> np.ndarray:
    """Background base frequencies (A, C, G, T) as an array, checked to be 4 positive numbers summing to 1."""
    values = np.asarray(background, dtype=float)
    if values.shape != (4,) or (values <= 0).any() or abs(values.sum() - 1) > 1e-6:
        raise ValueError(f"background {list(background)}: give 4 positive frequencies of A, C, G, T summing to 1")
    return values


def integer_scores(counts: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Log2-odds scores (length, 4) in 1/RESOLUTION bit, rounded to integers."""
    probs = (counts + PSEUDOCOUNT * background) / (counts.sum(axis=1, keepdims=True) + PSEUDOCOUNT)
    return np.rint(RESOLUTION * np.log2(probs / background)).astype(np.int64)


def score_distribution(scores: np.ndarray, background: np.ndarray) -> tuple[int, np.ndarray]:
    """Exact distribution of the score of a background sequence: its lowest score and P(score = lowest + i)."""
    lowest = scores.min(axis=1)
    shifts = scores - lowest[:, None]
    probability = np.ones(1)
    for shift in shifts:  # one convolution per motif position
        spots = shift[:, None] + np.arange(len(probability))
        probability = np.bincount(spots.ravel(), weights=(background[:, None] * probability).ravel())
    return int(lowest.sum()), probability


def score_threshold(scores: np.ndarray, background: np.ndarray, pvalue: float) -> int:
    """Lowest integer score s with P(score >= s) <= pvalue (the highest score + 1 when no score is that rare)."""
    lowest, probability = score_distribution(scores, background)
    tail = np.cumsum(probability[::-1])[::-1]  # P(score >= lowest + i)
    rare = np.flatnonzero(tail <= pvalue * (1 + 1e-9))  # tolerance for the summation's rounding
    return lowest + (int(rare[0]) if rare.size else len(tail))


_THRESHOLDS: dict[tuple[str, float, tuple[float, ...]], int] = {}


def prepare(motifs: Sequence[Motif], pvalue: float = PVALUE, background: Sequence[float] = UNIFORM) -> list[ScoredMotif]:
    """Integer scores and cached p-value thresholds of motifs."""
    frequencies = check_background(background)
    prepared = []
    for motif in motifs:
        scores = integer_scores(motif.counts, frequencies)
        key = (motif.matrix_id, pvalue, tuple(frequencies))
        if key not in _THRESHOLDS:
            _THRESHOLDS[key] = score_threshold(scores, frequencies, pvalue)
        prepared.append(ScoredMotif(motif, np.hstack([scores, scores.min(axis=1, keepdims=True)]), _THRESHOLDS[key]))
    return prepared


def best_scores(scores: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Best score of each row of codes (rows, >= length) over all its windows and both strands.

    scores: (length, 5) integer scores over A, C, G, T, N; codes: 0-3 for A, C, G, T and 4 for N.
    """
    length = len(scores)
    reverse = np.hstack([scores[::-1, 3::-1], scores[::-1, 4:]])  # reverse complement, N stays N
    windows = sliding_window_view(codes, length, axis=1)  # (rows, windows, length)
    column = np.arange(length)
    return np.maximum(scores[column, windows].sum(axis=-1).max(axis=-1), reverse[column, windows].sum(axis=-1).max(axis=-1))


def motif_hits(ref_codes: np.ndarray, alt_codes: np.ndarray, motifs: Sequence[ScoredMotif]) -> tuple[np.ndarray, np.ndarray]:
    """Whether each motif hits with REF and with ALT: two (variants, motifs) bool arrays.

    ref_codes, alt_codes: (variants, 2 * flank + 1) codes centred on the variants, flank >= the longest motif - 1.
    """
    flank = ref_codes.shape[1] // 2
    ref_hit = np.zeros((len(ref_codes), len(motifs)), dtype=bool)
    alt_hit = np.zeros_like(ref_hit)
    for index, motif in enumerate(motifs):
        if not motif.reachable:
            continue
        span = slice(flank - len(motif.scores) + 1, flank + len(motif.scores))
        ref_hit[:, index] = best_scores(motif.scores, ref_codes[:, span]) >= motif.threshold
        alt_hit[:, index] = best_scores(motif.scores, alt_codes[:, span]) >= motif.threshold
    return ref_hit, alt_hit


def decode_onehot(onehot: np.ndarray) -> np.ndarray:
    """Base codes (0-3 for A, C, G, T; 4 for N) of a one-hot (length, 4) in which N is 0.25 everywhere."""
    return np.where(onehot.max(axis=1) == 1, onehot.argmax(axis=1), N_CODE).astype(np.int8)
