"""One-hot and dosage encodings: the one place that owns the base order, N handling and overlap rules.

A person's dosage one-hot is the mean of the one-hots of their two consensus sequences (haplotype 1 takes
the first GT allele, haplotype 2 the second, regardless of phase). It equals the reference one-hot plus,
for every haplotype carrying an ALT base, 0.5 x (one-hot of ALT - reference row); that is how it is built.
"""

from __future__ import annotations

import numpy as np

from .schemas import BASES

N_VALUE = 0.25
_MAGNITUDE_BITS = np.uint64(0x7FFF_7FFF_7FFF_7FFF)  # four float16 without their sign bits


def _onehot_table() -> np.ndarray:
    """Lookup table from ASCII byte to one-hot row: ACGT (either case) to a unit row, anything else N."""
    table = np.full((256, 4), N_VALUE, dtype=np.float16)
    for i, base in enumerate(BASES):
        row = np.eye(4, dtype=np.float16)[i]
        table[ord(base)] = row
        table[ord(base.lower())] = row
    return table


_ONEHOT = _onehot_table()
_CODE = np.full(256, 4, dtype=np.int8)
for _i, _b in enumerate(BASES):
    _CODE[ord(_b)] = _CODE[ord(_b.lower())] = _i


def onehot(sequence: bytes | str) -> np.ndarray:
    """One-hot (length x 4, float16, ACGT) of a sequence; N and other IUPAC letters are 0.25 everywhere."""
    raw = sequence.encode() if isinstance(sequence, str) else sequence
    return _ONEHOT[np.frombuffer(raw, dtype=np.uint8)]


def base_codes(bases: np.ndarray) -> np.ndarray:
    """Codes 0-3 for A, C, G, T (either case) and 4 for anything else, from an array of 1-char strings."""
    raw = np.asarray(bases, dtype="S1").view(np.uint8)
    return _CODE[raw]


def haplotype_carriers(call_genotype: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Which haplotypes take each row's ALT: calls equal to 1, where at one position the first row wins.

    Rows sharing a position (a split multi-allelic site, or duplicate records) can both claim one haplotype;
    like `bcftools consensus`, the first applied record wins and later overlapping ones are skipped.

    call_genotype: (variants, samples, ploidy) int8, rows sorted by offset; returns the same shape, bool.
    """
    carries = call_genotype == 1
    if len(offsets) < 2 or np.all(np.diff(offsets) > 0):
        return carries
    shared = np.flatnonzero(sharing_rows(offsets))
    claims = carries[shared]
    starts = np.flatnonzero(np.r_[True, np.diff(offsets[shared]) != 0])
    running = np.cumsum(claims, axis=0, dtype=np.int16)
    before_group = np.concatenate([np.zeros_like(running[:1]), running[starts[1:] - 1]])
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(shared)]))
    carries[shared] = claims & (running - before_group[group] == 1)
    return carries


def minor_allele_frequency(call_genotype: np.ndarray) -> np.ndarray:
    """Minor-allele frequency per variant row among called alleles (a haploid call is one allele; NaN where nobody
    is called), float32: `variant_maf`, written by the build and recomputed by `pstore validate --deep`.

    call_genotype: (variants, samples, ploidy) int8, 1 this row's ALT, 0 another allele, -1 missing, -2 no call.
    """
    called = (call_genotype >= 0).sum(axis=(1, 2))
    alt = (call_genotype == 1).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        frequency = alt / called
    return np.minimum(frequency, 1 - frequency).astype(np.float32)


def sharing_rows(offsets: np.ndarray) -> np.ndarray:
    """Which variant rows share their position with another row (split multi-allelic sites, duplicates)."""
    _, group_of, counts = np.unique(offsets, return_inverse=True, return_counts=True)
    return counts[group_of] > 1


def flat_indices(positions: np.ndarray) -> np.ndarray:
    """Indices into a flattened (window * 4) one-hot of all 4 channels of each position, in position order."""
    return (np.asarray(positions, np.int64)[:, None] * 4 + np.arange(4)).ravel()


def plus_reference(reference: np.ndarray, flat: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """reference + changes at flat indices of a (window * 4) one-hot, float16 (exact: multiples of 1/8)."""
    return (reference.reshape(-1)[flat].astype(np.float32) + changes).astype(np.float16)


def alt_dosage(carriers: np.ndarray) -> np.ndarray:
    """ALT count (0-2) per row and person, int8, from (variants, samples, 2) carriers (adding the two
    haplotypes: numpy's sum over a 2-long axis is several times slower)."""
    calls = carriers.view(np.int8)
    return calls[..., 0] + calls[..., 1]


def dosage_changes(
    reference: np.ndarray, offsets: np.ndarray, alt_codes: np.ndarray, carriers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where and by how much each person's dosage one-hot differs from the reference.

    reference: (window, 4) float16; offsets: (variants,) 0-based positions in the window, sorted;
    alt_codes: (variants,) 0-3; carriers: (variants, samples, ploidy) bool from `haplotype_carriers`.
    Returns flat indices into a (window * 4) one-hot, shape (k,), and the changes there, (samples, k)
    float16; every change is a multiple of 1/8, so float16 is exact, and no change is -0.0 (a non-carrier's
    0 x a negative change; stored, its sign bits doubled the compressed size of the differences).
    """
    change = 0.5 * (np.eye(4, dtype=np.float32)[alt_codes] - reference[offsets].astype(np.float32))
    dosage = np.ascontiguousarray(alt_dosage(carriers).T)  # (samples, variants)
    per_row = dosage[:, :, None] * change[None]  # (samples, variants, 4) float32
    per_row += np.float32(0)  # -0.0 + 0 = +0.0
    unique_offsets, first_rows = np.unique(offsets, return_index=True)
    if len(unique_offsets) < len(offsets):  # rows sharing a position: each added into its position's first row
        group_first = first_rows[np.searchsorted(unique_offsets, offsets)]
        extra = np.flatnonzero(group_first != np.arange(len(offsets)))
        np.add.at(per_row, (slice(None), group_first[extra]), per_row[:, extra])
        per_row = per_row.take(first_rows, axis=1)
    flat = flat_indices(unique_offsets)
    return flat, per_row.reshape(carriers.shape[1], -1).astype(np.float16)


def dosage_onehots(
    reference: np.ndarray, offsets: np.ndarray, alt_codes: np.ndarray, carriers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each person's dosage one-hot where any variant row lies: the flat indices of `dosage_changes` and
    reference + changes there, (samples, k) float16. A position with one row is a table lookup (its one-hot
    at dosage 0, 1, 2); positions shared by several rows go through `dosage_changes`. Arguments as there."""
    unique_offsets, first_rows, counts = np.unique(offsets, return_index=True, return_counts=True)
    flat = flat_indices(unique_offsets)
    reference_rows = reference[unique_offsets].astype(np.float32)  # (positions, 4)
    change = np.eye(4, dtype=np.float32)[alt_codes[first_rows]] - reference_rows
    table = (reference_rows[:, None] + np.arange(3, dtype=np.float32)[:, None] / 2 * change[:, None]).astype(np.float16)
    dosage = alt_dosage(carriers[first_rows]).T  # (samples, positions)
    words = table.view(np.uint64).reshape(-1).take(np.arange(len(first_rows)) * 3 + dosage)  # 4 channels per word
    values = words.view(np.float16).reshape(carriers.shape[1], -1)
    shared = np.flatnonzero(counts > 1)
    if len(shared):
        rows = sharing_rows(offsets)
        _, changes = dosage_changes(reference, offsets[rows], alt_codes[rows], carriers[rows])
        columns = flat_indices(shared)
        values[:, columns] = plus_reference(reference, flat[columns], changes)
    return flat, values


def scatter_changes(out: np.ndarray, flat: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """Write changes into a zeroed (samples, window, 4) buffer (reusable: zero `flat` again after use)."""
    out.reshape(len(out), -1)[:, flat] = changes
    return out


def dosage_onehot_delta(
    reference: np.ndarray, offsets: np.ndarray, alt_codes: np.ndarray, carriers: np.ndarray
) -> np.ndarray:
    """Dosage one-hot minus the reference one-hot, per person: (samples, window, 4) float16."""
    flat, changes = dosage_changes(reference, offsets, alt_codes, carriers)
    out = np.zeros((carriers.shape[1], reference.shape[0], 4), dtype=np.float16)
    return scatter_changes(out, flat, changes)


def changed_positions(delta: np.ndarray) -> np.ndarray:
    """Window positions (sorted) where any person's stored difference from the reference is non-zero.

    delta: (samples, window, 4) float16: the 4 channels of a position are read as one 64-bit word. -0.0 counts
    as zero (the build stores it for non-carriers of a variant whose change is negative).
    """
    words = np.ascontiguousarray(delta).view(np.uint64).reshape(len(delta), -1)
    return np.flatnonzero(np.bitwise_or.reduce(words, axis=0) & _MAGNITUDE_BITS)


def channels_at(onehots: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Each person's 4 channels at `positions`: (samples, 4 x positions), from a (samples, window, 4) float16
    array or view (its channels contiguous: the 4 of a position are gathered as one 64-bit word)."""
    words = onehots.view(np.uint64)[..., 0].take(np.asarray(positions, np.int64), axis=1)
    return words.view(np.float16).reshape(len(onehots), -1)


def onehots_at(delta: np.ndarray, reference: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices into a (window * 4) one-hot of all 4 channels of `positions`, and each person's dosage
    one-hot there, reference + delta: (samples, k) float16 (exact: every value is a multiple of 1/8)."""
    flat = flat_indices(positions)
    return flat, plus_reference(reference, flat, channels_at(delta, positions))


def add_reference(delta: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Dosage one-hots from stored differences: reference + delta, adding only where some person differs.

    numpy has no float16 arithmetic of its own (a plain `+` runs ~10x slower than this); the sum is exact.
    delta: (samples, window, 4) float16; reference: (window, 4) float16.
    """
    out = np.broadcast_to(reference, delta.shape).copy()
    return scatter_changes(out, *onehots_at(delta, reference, changed_positions(delta)))
