"""The loader: the method's epoch rules, whole-block sharing among ranks, and two identical read paths."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from performer_store.loader import (
    BatchLoader,
    GeneReader,
    MicroBatch,
    epoch_blocks,
    evaluation_batches,
    iterate,
    micro_batches,
    rank_blocks,
    split_rows,
    work_items,
)
from performer_store.store import Store


def fake_rows(sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Train people per gene: disjoint row numbers so every person is traceable."""
    start, out = 0, {}
    for gene, size in sizes.items():
        out[gene] = np.arange(start, start + size)
        start += size
    return out


def test_epoch_is_the_methods():
    """536 people -> 4 blocks of 128 distinct people, redrawn each epoch; a 100-person gene -> one block of 100."""
    rows = fake_rows({"A": 536, "B": 300, "C": 100})
    epoch0 = epoch_blocks(rows, epoch=0, seed=1, block_size=128)
    sizes = Counter(gene for gene, _ in epoch0)
    assert sizes == {"A": 4, "B": 2, "C": 1}
    for gene, block in epoch0:
        assert set(block) <= set(rows[gene])
        assert len(block) == (100 if gene == "C" else 128)
    people_a = np.concatenate([b for g, b in epoch0 if g == "A"])
    assert len(set(people_a)) == 512
    epoch1 = epoch_blocks(rows, epoch=1, seed=1, block_size=128)
    left_out = [set(rows["A"]) - set(np.concatenate([b for g, b in e if g == "A"])) for e in (epoch0, epoch1)]
    assert len(left_out[0]) == len(left_out[1]) == 24 and left_out[0] != left_out[1]
    assert [g for g, _ in epoch0] != sorted(g for g, _ in epoch0)  # genes interleaved, not in order
    assert [b.tolist() for _, b in epoch_blocks(rows, 0, 1, 128)] == [b.tolist() for _, b in epoch0]  # seeded


def test_ranks_take_whole_blocks_and_none_is_dropped():
    """3 ranks over 7 blocks: 3 rounds, the first 2 blocks repeat; each rank's micro-batches are single-gene."""
    rows = fake_rows({"A": 512, "B": 384})
    blocks = epoch_blocks(rows, epoch=0, seed=0, block_size=128)
    shares = [rank_blocks(blocks, rank, 3) for rank in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    seen = Counter(tuple(b.tolist()) for share in shares for _, b in share)
    assert set(seen) == {tuple(b.tolist()) for _, b in blocks} and sorted(seen.values()) == [1] * 5 + [2] * 2
    for share in shares:
        batches = micro_batches(share, 32)
        assert len(batches) == 12 and sum(b.step_end for b in batches) == 3
        for batch in batches:
            assert len(batch.rows) == 32 and batch.block_parts == 4
            assert set(batch.rows) <= set(rows[batch.gene_id])


@pytest.mark.parametrize("window", [None, 512])
def test_read_paths_are_identical_for_every_person(tiny_store, window):
    """The stored array and the expansion from the variant table give the same tensors (also cropped)."""
    store = Store(tiny_store)
    everyone = {g: np.arange(len(store.sample_id)) for g in store.genes.index}
    batches = evaluation_batches(everyone, micro_batch=5)
    stored = list(iterate(GeneReader(tiny_store, window, "stored"), batches))
    expanded = list(iterate(GeneReader(tiny_store, window, "expand"), batches))
    for (batch, x_stored, y_stored), (_, x_expanded, y_expanded) in zip(stored, expanded):
        assert x_stored.dtype == torch.float16 and x_stored.shape == (len(batch.micro.rows), window or 1024, 4)
        assert torch.equal(x_stored, x_expanded) and torch.equal(y_stored, y_expanded)
    first = stored[0]
    full = store.dosage_onehot(first[0].micro.gene_id, first[0].micro.rows)
    offset = 512 - (window or 1024) // 2
    np.testing.assert_array_equal(first[1].numpy(), full[:, offset : offset + (window or 1024)])


def test_worker_processes_deliver_the_same_batches(tiny_store):
    """DataLoader with 2 worker processes returns the batches of the in-process loader, in order."""
    store = Store(tiny_store)
    rows = {g: split_rows(store, g, 0, "train") for g in store.genes.index}
    batches = micro_batches(epoch_blocks(rows, 0, 0, 8), 4)
    for read_path in ("stored", "expand"):
        reader = GeneReader(tiny_store, None, read_path)
        alone = [(b.micro, x, y) for b, x, y in iterate(reader, batches, workers=0)]
        pooled = [(b.micro, x, y) for b, x, y in iterate(reader, batches, workers=2)]
        assert len(alone) == len(pooled) == len(batches)
        for (m1, x1, y1), (m2, x2, y2) in zip(alone, pooled):
            assert m1.gene_id == m2.gene_id and np.array_equal(m1.rows, m2.rows)
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_work_items_are_whole_blocks_of_one_gene():
    """Training blocks go to a worker whole; a long evaluation pass of one gene is cut at 256 people; the items
    hold every planned micro-batch once, in order."""
    training = micro_batches(epoch_blocks(fake_rows({"A": 256, "B": 130}), 0, 0, 128), 32)
    items = work_items(training)
    assert [b for item in items for b in item] == training
    assert [len(item) for item in items] == [4, 4, 4]
    assert all(item[-1].step_end and not any(b.step_end for b in item[:-1]) and len({b.gene_id for b in item}) == 1 for item in items)
    evaluation = evaluation_batches({"A": np.arange(600), "B": np.arange(40)}, 32)  # A: 18 x 32 + 24; B: 32 + 8
    items = work_items(evaluation)
    assert [len(item) for item in items] == [8, 8, 3, 2]
    assert [b for item in items for b in item] == evaluation and [item[0].gene_id for item in items] == ["A", "A", "A", "B"]


def test_split_rows_exclude_nan_targets_and_other_splits(tiny_store):
    """Train/tune/test rows of a fold partition the people with a target."""
    store = Store(tiny_store)
    gene = store.genes.index[0]
    parts = [split_rows(store, gene, 1, s) for s in ("train", "tune", "test")]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(store.sample_id)))
    assert np.all(store.split(1)[parts[2]] == 2)


def test_chunk_grouped_draws_keep_the_epoch_rules():
    """Drawing chunk by chunk: still the largest multiple of the block, distinct people, a fresh draw each
    epoch, and each 32-person micro-batch spans at most 3 of the 32-person chunks (chunks hold ~25 of them)."""
    rows = {"A": np.sort(np.random.default_rng(0).choice(700, 536, replace=False))}
    plans = [epoch_blocks(rows, epoch, 0, 128, chunk=32) for epoch in (0, 1)]
    for plan in plans:
        people = np.concatenate([b for _, b in plan])
        assert len(plan) == 4 and len(set(people)) == 512 and set(people) <= set(rows["A"])
        for batch in micro_batches(plan, 32):
            assert len(np.unique(batch.rows // 32)) <= 3
    assert {tuple(b) for _, b in plans[0]} != {tuple(b) for _, b in plans[1]}


def test_persistent_workers_follow_new_plans(tiny_store):
    """One BatchLoader with 2 persistent workers serves successive plans (epochs) in order."""
    store = Store(tiny_store)
    rows = {g: split_rows(store, g, 0, "train") for g in store.genes.index}
    reader = GeneReader(tiny_store, None, "expand")
    loader = BatchLoader(reader, workers=2)
    for epoch in range(2):
        batches = micro_batches(epoch_blocks(rows, epoch, 0, 8), 4)
        served = [(b.micro.gene_id, b.micro.rows.tolist(), x) for b, x, _ in loader(batches)]
        assert [(g, r) for g, r, _ in served] == [(b.gene_id, b.rows.tolist()) for b in batches]
        for (gene, people, x), batch in zip(served, batches):
            assert torch.equal(x, torch.from_numpy(store.dosage_onehot(gene, np.array(people))))


@pytest.mark.parametrize("workers", [0, 1])
def test_passes_leave_the_global_generator_alone(tiny_store, workers):
    """Passes draw nothing from torch's global generator (training seeds it per epoch for dropout), with or
    without persistent workers (DataLoader draws their seed at each new iterator: every pass without them)."""
    store = Store(tiny_store)
    rows = {g: split_rows(store, g, 0, "train") for g in store.genes.index}
    loader = BatchLoader(GeneReader(tiny_store, None, "expand"), workers=workers)
    for epoch in range(2):
        torch.manual_seed(epoch)
        expected = torch.rand(1, generator=torch.Generator().manual_seed(epoch))
        for _ in loader(micro_batches(epoch_blocks(rows, epoch, 0, 8), 4)):
            pass
        assert torch.equal(torch.rand(1), expected)


@pytest.mark.parametrize("window", [None, 512])
def test_stored_path_across_chunks_with_a_small_cache(sim_store, monkeypatch, window):
    """Random micro-batches that span both 32-person chunks, a chunk cache that holds one chunk (evictions), a
    mask on one gene: both paths equal the stored one-hots with the masked positions set to the reference."""
    import performer_store.loader as loader_module

    store = Store(sim_store)
    monkeypatch.setattr(loader_module, "CHUNK_CACHE_BYTES", 1)
    genes = list(store.genes.index)
    group = store.gene(genes[0])
    masked = (group["variant_position"][:].astype(np.int64) - 1 - int(group.attrs["window_start"]))[::3]
    rng = np.random.default_rng(3)
    batches = [MicroBatch(g, np.sort(rng.choice(len(store.sample_id), 12, replace=False)), True, 1) for g in genes for _ in range(4)]
    assert sum(len(np.unique(b.rows // 32)) == 2 for b in batches) > len(batches) // 2
    crop = slice((store.window - (window or store.window)) // 2, (store.window + (window or store.window)) // 2)
    for read_path in ("stored", "expand"):
        for batch, onehot, _ in iterate(GeneReader(sim_store, window, read_path, {genes[0]: masked}), batches):
            expected = store.dosage_onehot(batch.micro.gene_id, batch.micro.rows)
            if batch.micro.gene_id == genes[0]:
                expected[:, masked] = group["reference_onehot"][:][masked]
            np.testing.assert_array_equal(onehot.numpy(), expected[:, crop])


def test_loader_recycles_its_buffers(sim_store):
    """A pass whose consumer drops each batch: the one-hots equal the store's, from at most 3 buffers."""
    store = Store(sim_store)
    rows = {g: split_rows(store, g, 0, "train") for g in store.genes.index}
    batches = micro_batches(epoch_blocks(rows, 0, 0, 16), 4)
    for read_path in ("stored", "expand"):
        loader = BatchLoader(GeneReader(sim_store, None, read_path))
        pointers = set()
        for batch, onehot, _ in loader(batches):
            np.testing.assert_array_equal(onehot.numpy(), store.dosage_onehot(batch.micro.gene_id, batch.micro.rows))
            pointers.add(onehot.data_ptr())
        assert len(pointers) <= 3 < len(batches)
