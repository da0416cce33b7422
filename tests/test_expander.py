"""The expander: dense one-hots from compact batches, equal to a direct expansion whatever the consumer keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from performer_store import expander as expander_module
from performer_store.expander import Expander

WIDTH = 64 * 4  # a 64-bp window


def compact_batch(rng: np.random.Generator, reference: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flat indices (sorted, distinct) and values (multiples of 1/8) for 1-8 people."""
    flat = np.sort(rng.choice(WIDTH, rng.integers(0, 40), replace=False))
    values = (rng.integers(0, 9, (rng.integers(1, 9), len(flat))) / 8).astype(np.float16)
    return torch.from_numpy(flat), torch.from_numpy(values)


def direct(reference: np.ndarray, flat: torch.Tensor, values: torch.Tensor) -> np.ndarray:
    """The dense one-hots by numpy: the reference in every row, the values at the flat indices."""
    out = np.repeat(reference.reshape(1, -1), len(values), axis=0)
    out[:, flat.numpy()] = values.numpy()
    return out.reshape(len(values), -1, 4)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))])
def test_recycled_buffers_match_a_direct_expansion(device):
    """400 batches of 3 genes in random order; the consumer keeps some outputs, writes into others, drops the
    rest. Every output equals numpy's expansion when made, and every kept one still does at the end."""
    rng = np.random.default_rng(0)
    references = {f"gene{i}": (rng.integers(0, 2, WIDTH) * rng.choice([1.0, 0.25], WIDTH)).astype(np.float16) for i in range(3)}
    expander = Expander(buffers=2)
    kept, pointers = [], []
    for _ in range(400):
        key = f"gene{rng.integers(3)}"
        flat, values = compact_batch(rng, references[key])
        reference = torch.from_numpy(references[key]).view(-1, 4)
        out = expander(key, reference.to(device), flat.to(device), values.to(device))
        expected = direct(references[key], flat, values)
        np.testing.assert_array_equal(out.cpu().numpy(), expected)
        pointers.append(out.data_ptr())
        action = rng.integers(4)
        if action == 0:
            kept.append((out, expected))
        elif action == 1:
            out.view(-1)[rng.integers(out.numel())] = 7  # a consumer writing into its batch
    for out, expected in kept:
        np.testing.assert_array_equal(out.cpu().numpy(), expected)
    assert len(set(pointers)) < len(pointers) // 2  # buffers were reused, not allocated per batch


def test_a_held_batch_is_not_overwritten_and_a_dropped_one_is_reused():
    """Same gene twice while the first is held: two buffers; the first dropped: its buffer serves the third."""
    reference = torch.arange(WIDTH, dtype=torch.float16).view(-1, 4) % 2
    flat = torch.tensor([1, 5, 9])
    expander = Expander()
    first = expander("g", reference, flat, torch.full((4, 3), 0.5, dtype=torch.float16))
    snapshot = first.clone()
    second = expander("g", reference, flat, torch.full((4, 3), 0.25, dtype=torch.float16))
    assert torch.equal(first, snapshot) and first.data_ptr() != second.data_ptr()
    pointer = first.data_ptr()
    del first, snapshot
    third = expander("g", reference, torch.tensor([2]), torch.ones((2, 1), dtype=torch.float16))
    assert third.data_ptr() == pointer
    np.testing.assert_array_equal(third.numpy(), direct(reference.numpy().reshape(-1), torch.tensor([2]), torch.ones((2, 1), dtype=torch.float16)))


def test_a_buffer_behind_a_held_one_is_reused():
    """The first batch held, the second dropped: the third reuses the second's buffer (buffers compare by identity)."""
    reference = torch.zeros(WIDTH // 4, 4, dtype=torch.float16)
    flat, values = torch.tensor([1, 5]), torch.ones((4, 2), dtype=torch.float16)
    expander = Expander()
    first = expander("g", reference, flat, values)
    pointer = expander("h", reference, flat, values).data_ptr()
    third = expander("h", reference, flat, values)
    assert third.data_ptr() == pointer != first.data_ptr()

def test_without_reference_counts_every_batch_is_fresh(monkeypatch):
    """Where torch cannot count a storage's users, nothing is recycled and results are the same."""
    monkeypatch.setattr(expander_module, "storage_users", lambda tensor: None)
    reference = torch.ones(WIDTH // 4, 4, dtype=torch.float16)
    expander = Expander()
    outs = [expander("g", reference, torch.tensor([0, 3]), torch.zeros((2, 2), dtype=torch.float16)) for _ in range(3)]
    assert expander.limit == 0 and not expander.buffers
    assert all(torch.equal(o, outs[0]) for o in outs) and float(outs[0].view(2, -1)[:, 0].sum()) == 0
