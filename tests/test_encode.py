"""Encodings against direct computations: one-hot table, overlap rule, dosage differences, reference addition."""

from __future__ import annotations

import numpy as np

from performer_store.encode import (
    add_reference,
    base_codes,
    changed_positions,
    channels_at,
    dosage_changes,
    dosage_onehot_delta,
    dosage_onehots,
    haplotype_carriers,
    onehot,
    onehots_at,
)


def test_onehot_table():
    """ACGT in either case are unit rows in ACGT order; N and IUPAC codes are 0.25 everywhere."""
    expected = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0.25] * 4, [0.25] * 4]
    np.testing.assert_array_equal(onehot("ACGTtNR"), np.array(expected, dtype=np.float16))
    assert onehot(b"acgt").dtype == np.float16
    np.testing.assert_array_equal(base_codes(np.array(["A", "c", "G", "T", "N"])), [0, 1, 2, 3, 4])


def test_first_record_wins_at_a_position():
    """Two rows at one position claiming one haplotype: only the first applies; other haplotypes are free."""
    calls = np.array([[[1, 0], [1, 1]], [[1, 1], [0, 1]], [[0, 1], [1, 0]]], dtype=np.int8)  # rows 0,1 share a position
    carriers = haplotype_carriers(calls, np.array([5, 5, 9]))
    expected = np.array([[[1, 0], [1, 1]], [[0, 1], [0, 0]], [[0, 1], [1, 0]]], dtype=bool)
    np.testing.assert_array_equal(carriers, expected)


def test_dosage_delta_against_per_person_loop():
    """The vectorized difference equals a direct per-person, per-haplotype edit of the reference."""
    rng = np.random.default_rng(3)
    sequence = "".join(rng.choice(list("ACGTN"), 200))
    reference = onehot(sequence)
    offsets = np.sort(rng.choice(200, 30, replace=True))
    alts = rng.integers(0, 4, 30)
    calls = rng.choice([-1, 0, 1], size=(30, 7, 2), p=[0.1, 0.5, 0.4]).astype(np.int8)
    carriers = haplotype_carriers(calls, offsets)
    delta = dosage_onehot_delta(reference, offsets, alts, carriers)
    for person in range(7):
        haplotypes = []
        for h in range(2):
            bases = list(sequence)
            for row in range(30):
                if carriers[row, person, h]:
                    bases[offsets[row]] = "ACGT"[alts[row]]
            haplotypes.append(onehot("".join(bases)).astype(np.float32))
        expected = (haplotypes[0] + haplotypes[1]) / 2 - reference.astype(np.float32)
        np.testing.assert_array_equal(delta[person].astype(np.float32), expected)
    assert not np.signbit(delta[delta == 0]).any()  # no -0.0 stored for non-carriers of a negative change
    np.testing.assert_array_equal(add_reference(delta, reference), (delta.astype(np.float32) + reference).astype(np.float16))


def test_changed_positions_and_their_onehots():
    """Positions where anyone's difference is non-zero (-0.0 is zero), and reference + difference there."""
    rng = np.random.default_rng(5)
    reference = onehot("".join(rng.choice(list("ACGTN"), 300)))
    delta = np.zeros((9, 300, 4), np.float16)
    delta[rng.integers(0, 9, 40), rng.integers(0, 300, 40), rng.integers(0, 4, 40)] = rng.choice([-1, -0.5, 0.5, 1, -0.25], 40)
    delta[rng.integers(0, 9, 40), rng.integers(0, 300, 40), rng.integers(0, 4, 40)] = -0.0
    positions = changed_positions(delta)
    np.testing.assert_array_equal(positions, np.flatnonzero((delta != 0).any(axis=(0, 2))))
    flat, values = onehots_at(delta, reference, positions)
    dense = (delta.astype(np.float32) + reference).reshape(9, -1)
    np.testing.assert_array_equal(flat, np.repeat(positions * 4, 4) + np.tile(np.arange(4), len(positions)))
    np.testing.assert_array_equal(values.astype(np.float32), dense[:, flat])


def test_channels_at_reads_views():
    """The 4 channels of chosen positions, from a whole array and from a cropped (non-contiguous) view of it."""
    values = np.random.default_rng(6).choice([-1, -0.5, 0, 0.25, 0.5, 1], (5, 64, 4)).astype(np.float16)
    positions = np.array([0, 3, 3, 17, 30])
    for view in (values, values[:, 20:52]):
        np.testing.assert_array_equal(channels_at(view, positions), view[:, positions].reshape(5, -1))


def test_dosage_onehots_are_reference_plus_changes():
    """The table lookup (and the shared-position path) equals reference + dosage_changes, incl. N and no variants."""
    rng = np.random.default_rng(8)
    reference = onehot("".join(rng.choice(list("ACGTN"), 120)))
    for variants in (0, 1, 40):
        offsets = np.sort(rng.choice(120, variants, replace=True))
        alts = rng.integers(0, 4, variants)
        carriers = haplotype_carriers(rng.choice([-1, 0, 1], size=(variants, 9, 2), p=[0.1, 0.5, 0.4]).astype(np.int8), offsets)
        flat, values = dosage_onehots(reference, offsets, alts, carriers)
        expected_flat, changes = dosage_changes(reference, offsets, alts, carriers)
        np.testing.assert_array_equal(flat, expected_flat)
        np.testing.assert_array_equal(values, (reference.reshape(-1)[flat].astype(np.float32) + changes).astype(np.float16))
        assert values.shape == (9, 4 * len(np.unique(offsets)))
