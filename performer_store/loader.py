"""Torch datasets over a store: micro-batches of one gene and distinct people, by the method's epoch rules.

An epoch (the method's definition): per gene, the largest multiple of `block_size` (128) of its train people
with a target, drawn afresh each epoch, cut into blocks of `block_size` (one optimizer step), and the blocks
of all genes shuffled together; each block is `block_size // micro_batch` micro-batches (4 x 32), all of one
gene. The people left over in an epoch (e.g. 24 of 536) are different ones every epoch. A gene with fewer
train people than one block gives one smaller block of all of them. With several processes each rank takes
every world-size-th block; when the blocks do not divide evenly, the first blocks of the epoch are repeated
to fill the last round, so every rank takes the same number of steps and no block is dropped.

Two read paths give identical tensors: `stored` reads `dosage_onehot_delta` and adds the reference;
`expand` keeps each gene's reference and per-person changes (derived from the variant table) and scatters
them, on the device the batch is moved to (on CUDA the 393 KB windows never cross host memory).

A variant mask (`masking.py`: window offsets per gene) sets chosen positions to the reference on both paths:
`expand` drops the variant-table rows there before scattering, `stored` zeroes the stored difference there.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import zarr

from . import schemas
from .encode import add_reference, base_codes, dosage_changes, haplotype_carriers
from .inputs import InputError
from .store import Store

READ_PATHS = ("stored", "expand")
GENE_CACHE = 64  # genes whose compact form a worker keeps (a demo gene: ~3.4 MB)


@dataclass(frozen=True)
class MicroBatch:
    """Which people of which gene one forward pass sees (store row indices, sorted)."""

    gene_id: str
    rows: np.ndarray
    step_end: bool  # the last micro-batch of its block: the optimizer steps after it
    block_parts: int  # micro-batches in its block (the loss is divided by it: gradients average over the block)


@dataclass
class Batch:
    """A micro-batch as tensors: targets, and the dosage one-hots either dense or compact (to expand)."""

    micro: MicroBatch
    target: torch.Tensor  # (B,) float32
    onehot: torch.Tensor | None = None  # (B, window, 4) float16, stored path
    reference: torch.Tensor | None = None  # (window, 4) float16, expand path
    flat: torch.Tensor | None = None  # (K,) long indices into a flattened (window * 4) one-hot
    values: torch.Tensor | None = None  # (B, K) float16: each person's one-hot at those indices

    def pin_memory(self) -> "Batch":
        """Page-locked copies of the tensors, for non-blocking copies to CUDA."""
        return Batch(self.micro, self.target.pin_memory(),
                     *(t.pin_memory() if t is not None else None for t in (self.onehot, self.reference, self.flat, self.values)))

    def to(self, device: torch.device | str, non_blocking: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(dosage one-hots (B, window, 4) float16, targets (B,)) on `device`; compact batches expand there."""
        target = self.target.to(device, non_blocking=non_blocking)
        if self.onehot is not None:
            return self.onehot.to(device, non_blocking=non_blocking), target
        reference, flat, values = (t.to(device, non_blocking=non_blocking) for t in (self.reference, self.flat, self.values))
        return expand(reference, flat, values), target


def expand(reference: torch.Tensor, flat: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Dosage one-hots from the reference and each person's values where people differ: a broadcast copy and
    one index copy (runs wherever the tensors are; on CUDA the windows are built on the GPU)."""
    out = reference.unsqueeze(0).expand(values.shape[0], -1, -1).clone()
    out.view(values.shape[0], -1).index_copy_(1, flat, values)
    return out


# --- which people -------------------------------------------------------------------------------------


def split_rows(store: Store, gene_id: str, fold: int, split: str) -> np.ndarray:
    """Store rows of a fold's split (train/tune/test) with a non-NaN target for this gene, sorted."""
    if split not in schemas.SPLIT_CODES:
        raise InputError(f"split {split!r} is not one of {', '.join(schemas.SPLIT_CODES)}")
    target = store.gene(gene_id)["target"][:]
    return np.flatnonzero((store.split(fold) == schemas.SPLIT_CODES[split]) & ~np.isnan(target))


def train_people(store: Store, fold: int, fraction: float, seed: int) -> np.ndarray:
    """Store rows of a nested share of a fold's train people (learning curves): a seeded order of the train
    people, cut after `fraction` of them, so 25% lies within 50% within 75% within 100% for the same seed."""
    train = np.flatnonzero(store.split(fold) == schemas.SPLIT_CODES["train"])
    order = np.random.default_rng([seed, fold]).permutation(train)
    return np.sort(order[: round(fraction * len(train))])


def epoch_blocks(train_rows: dict[str, np.ndarray], epoch: int, seed: int, block_size: int,
                 chunk: int | None = None) -> list[tuple[str, np.ndarray]]:
    """The method's epoch: per gene the largest multiple of block_size of its people, drawn afresh, in blocks;
    blocks of all genes shuffled together. A gene with fewer people than a block gives one smaller block.

    With `chunk` (people per stored chunk), people are drawn chunk by chunk (chunks in a fresh random order,
    people within a chunk too), so a micro-batch reads two or three chunks instead of most of the gene's; the
    store's people order is itself a seeded shuffle, so chunk-mates are a random set.
    """
    blocks = []
    for index, (gene_id, rows) in enumerate(train_rows.items()):
        rng = np.random.default_rng([seed, epoch, index])
        drawn = rng.permutation(rows)
        if chunk:
            chunk_rank = rng.permutation(int(rows.max()) // chunk + 1 if len(rows) else 0)
            drawn = drawn[np.argsort(chunk_rank[drawn // chunk], kind="stable")]
        usable = max(len(drawn) // block_size * block_size, min(len(drawn), block_size))
        blocks += [(gene_id, drawn[i : i + block_size]) for i in range(0, usable, block_size)]
    order = np.random.default_rng([seed, epoch]).permutation(len(blocks))
    return [blocks[i] for i in order]


def rank_blocks(blocks: list, rank: int, world_size: int) -> list:
    """This rank's share of whole blocks; the first blocks repeat to fill the last round (none dropped)."""
    rounds = math.ceil(len(blocks) / world_size)
    padded = blocks + blocks[: rounds * world_size - len(blocks)]
    return padded[rank::world_size]


def micro_batches(blocks: list[tuple[str, np.ndarray]], micro_batch: int) -> list[MicroBatch]:
    """Cut each block into micro-batches of one gene; the last of a block ends an optimizer step."""
    out = []
    for gene_id, rows in blocks:
        parts = [rows[i : i + micro_batch] for i in range(0, len(rows), micro_batch)]
        out += [MicroBatch(gene_id, np.sort(p), i == len(parts) - 1, len(parts)) for i, p in enumerate(parts)]
    return out


def evaluation_batches(rows_by_gene: dict[str, np.ndarray], micro_batch: int) -> list[MicroBatch]:
    """All chosen people of every gene in order, micro-batch by micro-batch (for predictions)."""
    return micro_batches(list(rows_by_gene.items()), micro_batch)


# --- reading ------------------------------------------------------------------------------------------


class GeneReader:
    """Reads dosage one-hots and targets of a store (opened lazily, once per process) by either path."""

    def __init__(self, store_path: Path, window: int | None = None, read_path: str = "stored",
                 mask: Mapping[str, np.ndarray] | None = None):
        if read_path not in READ_PATHS:
            raise InputError(f"read path {read_path!r} is not one of {', '.join(READ_PATHS)}")
        self.store_path = Path(store_path)
        self.read_path = read_path
        store = Store(self.store_path)
        self.store_window = store.window
        self.window = window or store.window
        if self.window > self.store_window:
            raise InputError(f"store {store_path}: windows are {self.store_window} bp; a model of {self.window} bp cannot read them; build the store with --window {self.window}")
        self.offset = self.store_window // 2 - self.window // 2  # keeps the TSS at index window // 2
        self.mask = {gene: np.asarray(offsets, np.int64) for gene, offsets in (mask or {}).items()}  # store-window offsets
        self._compact: OrderedDict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = OrderedDict()
        self._small: OrderedDict[str, tuple[np.ndarray, np.ndarray, zarr.Array]] = OrderedDict()

    def __getstate__(self) -> dict:
        """Pickled for DataLoader workers without open handles or caches."""
        state = self.__dict__.copy()
        state["_compact"], state["_small"] = OrderedDict(), OrderedDict()
        state.pop("_groups", None)
        return state

    @cached_property
    def _groups(self) -> dict[str, zarr.Group]:
        """Open gene groups of this process."""
        return {}

    def group(self, gene_id: str) -> zarr.Group:
        """A gene's Zarr group, opened once per process."""
        if gene_id not in self._groups:
            self._groups[gene_id] = Store(self.store_path).gene(gene_id)
        return self._groups[gene_id]

    def small(self, gene_id: str) -> tuple[np.ndarray, np.ndarray, zarr.Array]:
        """A gene's targets (float32), cropped reference one-hot and `dosage_onehot_delta`, kept for the last
        GENE_CACHE genes of this process (Zarr's per-call overhead of re-reading them cost more than a micro-batch)."""
        def read() -> tuple[np.ndarray, np.ndarray, zarr.Array]:
            group = self.group(gene_id)
            crop = slice(self.offset, self.offset + self.window)
            return group["target"][:].astype(np.float32), group["reference_onehot"][crop], group["dosage_onehot_delta"]

        return _remember(self._small, gene_id, read)

    def read(self, batch: MicroBatch) -> Batch:
        """One micro-batch as tensors by this reader's path."""
        targets, reference, delta = self.small(batch.gene_id)
        target = torch.from_numpy(targets[batch.rows])
        if self.read_path == "stored":
            rows = read_rows(delta, batch.rows, slice(self.offset, self.offset + self.window))
            rows[:, self.masked(batch.gene_id)] = 0  # no difference from the reference at masked positions
            return Batch(batch, target, onehot=torch.from_numpy(add_reference(rows, reference)))
        reference, flat, values = self.compact(batch.gene_id)
        return Batch(batch, target, reference=reference, flat=flat, values=values[torch.from_numpy(batch.rows.astype(np.int64))])

    def masked(self, gene_id: str) -> np.ndarray:
        """A gene's masked positions inside this reader's window (0-based from its start)."""
        offsets = self.mask.get(gene_id, np.zeros(0, np.int64)) - self.offset
        return offsets[(offsets >= 0) & (offsets < self.window)]

    def compact(self, gene_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A gene's reference (window, 4), the flat positions where anyone differs (K,), everyone's values there
        (kept for the last GENE_CACHE genes of this process)."""
        return _remember(self._compact, gene_id, lambda: self._make_compact(gene_id))

    def _make_compact(self, gene_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The compact form of a gene, from its variant table."""
        group = self.group(gene_id)
        reference = group["reference_onehot"][:]
        start = int(group.attrs["window_start"])
        offsets = group["variant_position"][:].astype(np.int64) - 1 - start
        kept = ~np.isin(offsets, self.mask.get(gene_id, ()))  # masked positions keep the reference
        offsets, calls = offsets[kept], group["call_genotype"][:][kept]
        alts = base_codes(group["variant_allele"][:, 1][kept]) if len(offsets) else np.zeros(0, np.int8)
        flat, changes = dosage_changes(reference, offsets, alts, haplotype_carriers(calls, offsets))
        keep = (flat >= self.offset * 4) & (flat < (self.offset + self.window) * 4)
        values = (reference.reshape(-1)[flat[keep]].astype(np.float32) + changes[:, keep]).astype(np.float16)
        return (torch.from_numpy(reference[self.offset : self.offset + self.window].copy()),
                torch.from_numpy(flat[keep] - self.offset * 4), torch.from_numpy(values))


def _remember(cache: OrderedDict, key: str, make: Callable[[], Any]) -> Any:
    """`cache[key]`, made when missing; the least recently used entry goes beyond GENE_CACHE entries."""
    if key not in cache:
        cache[key] = make()
        if len(cache) > GENE_CACHE:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def read_rows(array: zarr.Array, rows: np.ndarray, crop: slice) -> np.ndarray:
    """Rows (sorted) of a people-chunked array, read chunk by chunk as slices (Zarr's orthogonal selection
    of scattered rows costs ~10x more than slicing the same chunks)."""
    size = array.chunks[0]
    chunk = rows // size
    parts = []
    for index in np.unique(chunk):
        block = array[index * size : (index + 1) * size, crop]
        parts.append(block[rows[chunk == index] - index * size])
    return np.concatenate(parts) if parts else np.zeros((0, crop.stop - crop.start, 4), np.float16)


class _Plan(torch.utils.data.Sampler):
    """The micro-batches of the current pass, handed to DataLoader as its 'indices' (set before each pass)."""

    def __init__(self) -> None:
        self.batches: list[MicroBatch] = []

    def __iter__(self) -> Iterator[MicroBatch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Reads(torch.utils.data.Dataset):
    """A 'dataset' whose keys are MicroBatch plans, read by a GeneReader."""

    def __init__(self, reader: GeneReader):
        self.reader = reader

    def __getitem__(self, batch: MicroBatch) -> Batch:
        return self.reader.read(batch)


class BatchLoader:
    """Reads planned micro-batches ahead with DataLoader workers that live as long as the loader, so their
    per-gene caches (open arrays, compact forms) last across epochs; batches arrive on `device`."""

    def __init__(self, reader: GeneReader, workers: int = 0, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.plan = _Plan()
        pin = self.device.type == "cuda"
        self.loader = torch.utils.data.DataLoader(_Reads(reader), batch_size=None, sampler=self.plan, num_workers=workers,
                                                  pin_memory=pin, persistent_workers=workers > 0,
                                                  prefetch_factor=4 if workers else None)

    def __call__(self, batches: Sequence[MicroBatch]) -> Iterator[tuple[Batch, torch.Tensor, torch.Tensor]]:
        """(batch, dosage one-hots, targets) for each planned micro-batch, in order."""
        self.plan.batches = list(batches)
        for batch in self.loader:
            onehot, target = batch.to(self.device, non_blocking=self.device.type == "cuda")
            yield batch, onehot, target


def iterate(reader: GeneReader, batches: Sequence[MicroBatch], workers: int = 0, device: str = "cpu") -> Iterator[tuple[Batch, torch.Tensor, torch.Tensor]]:
    """One pass over planned micro-batches (a BatchLoader used once)."""
    yield from BatchLoader(reader, workers, device)(batches)
