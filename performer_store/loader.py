"""Torch datasets over a store: micro-batches of one gene and distinct people, by the method's epoch rules.

An epoch (the method's definition): per gene, the largest multiple of `block_size` (128) of its train people
with a target, drawn afresh each epoch, cut into blocks of `block_size` (one optimizer step), and the blocks
of all genes shuffled together; each block is `block_size // micro_batch` micro-batches (4 x 32), all of one
gene. The people left over in an epoch (e.g. 24 of 536) are different ones every epoch. A gene with fewer
train people than one block gives one smaller block of all of them. With several processes each rank takes
every world-size-th block; when the blocks do not divide evenly, the first blocks of the epoch are repeated
to fill the last round, so every rank takes the same number of steps and no block is dropped.

Two read paths give identical tensors. Both hand over a batch in compact form (the gene's reference, its
variant positions, and each person's one-hot there), which `expander.Expander` turns into dense windows on
the device the batch goes to (on CUDA the 393 KB windows never cross host memory):
- `stored` decodes the chunks of `dosage_onehot_delta` the batch's people lie in (`chunks.ChunkFiles`) and keeps
  each chunk's one-hots at the gene's variant positions (the only places the build writes non-zero
  differences; `pstore validate --deep` checks that), for the most recently used chunks (CHUNK_CACHE_BYTES
  per process);
- `expand` derives every person's one-hots there from the variant table's calls, once per process and gene.

A variant mask (`masking.py`: window offsets per gene) sets chosen positions to the reference on both paths:
`expand` drops the variant-table rows there before scattering, `stored` drops those positions.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import zarr

from . import schemas
from .chunks import ChunkFiles
from .encode import base_codes, channels_at, dosage_onehots, flat_indices, haplotype_carriers
from .expander import Expander
from .inputs import InputError
from .store import Store

READ_PATHS = ("stored", "expand")
ITEM_PEOPLE = 256  # people of one block a worker reads together at most (a training block: 128)
GENE_CACHE = 64  # genes whose compact form a worker keeps (a demo gene: ~3.4 MB)
CHUNK_CACHE_BYTES = 256 << 20  # stored chunks' one-hots a worker keeps (a demo chunk: ~0.15 MB of 12.6 MB decoded)


@dataclass(frozen=True)
class MicroBatch:
    """Which people of which gene one forward pass sees (store row indices, sorted)."""

    gene_id: str
    rows: np.ndarray
    step_end: bool  # the last micro-batch of its block: the optimizer steps after it
    block_parts: int  # micro-batches in its block (the loss is divided by it: gradients average over the block)


@dataclass
class Batch:
    """A micro-batch as tensors: targets, and the dosage one-hots in compact form (expanded where they land)."""

    micro: MicroBatch
    target: torch.Tensor  # (B,) float32
    key: str  # names the reference: store, window and gene (what `Expander` recycles buffers by)
    reference: torch.Tensor  # (window, 4) float16
    flat: torch.Tensor  # (K,) long indices into a flattened (window * 4) one-hot
    values: torch.Tensor  # (B, K) float16: each person's one-hot at those indices

    def pin_memory(self) -> "Batch":
        """Page-locked copies of the tensors, for non-blocking copies to CUDA."""
        return Batch(self.micro, self.target.pin_memory(), self.key,
                     *(t.pin_memory() for t in (self.reference, self.flat, self.values)))

    def to(self, device: torch.device | str, expander: Expander | None = None,
           non_blocking: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(dosage one-hots (B, window, 4) float16, targets (B,)) on `device`, expanded there (into `expander`'s
        recycled buffers when given; one-hots still held anywhere are never overwritten)."""
        target = self.target.to(device, non_blocking=non_blocking)
        reference, flat, values = (t.to(device, non_blocking=non_blocking) for t in (self.reference, self.flat, self.values))
        return (expander or Expander(buffers=0))(self.key, reference, flat, values), target


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
        self._caches()

    def _caches(self) -> None:
        """Empty per-process caches: open groups, per-gene arrays, compact forms, stored chunks' one-hots."""
        self._store: Store | None = None
        self._groups: dict[str, zarr.Group] = {}
        self._scratch: np.ndarray | None = None  # the last decoded chunk, decoded into again (saves page faults)
        self._small = LRU(GENE_CACHE)
        self._files = LRU(GENE_CACHE)
        self._compact = LRU(GENE_CACHE)
        self._positions = LRU(GENE_CACHE)
        self._flat = LRU(GENE_CACHE)
        self._chunks = LRU(CHUNK_CACHE_BYTES, weight=lambda values: values.nbytes)

    def __getstate__(self) -> dict:
        """Pickled for DataLoader workers without open handles or caches."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict) -> None:
        """A worker's copy: the settings, with fresh caches."""
        self.__dict__.update(state)
        self._caches()

    def key(self, gene_id: str) -> str:
        """Names a gene's reference window as this reader crops it (see `Batch.key`)."""
        return f"{self.store_path}:{self.offset}+{self.window}:{gene_id}"

    def group(self, gene_id: str) -> zarr.Group:
        """A gene's Zarr group, opened once per process."""
        if gene_id not in self._groups:
            self._store = self._store or Store(self.store_path)
            self._groups[gene_id] = self._store.gene(gene_id)
        return self._groups[gene_id]

    def small(self, gene_id: str) -> tuple[np.ndarray, torch.Tensor]:
        """A gene's targets (float32) and cropped reference one-hot, kept for the last GENE_CACHE genes of this
        process (Zarr's per-call overhead of re-reading them cost more than a micro-batch)."""
        def read() -> tuple[np.ndarray, torch.Tensor]:
            group = self.group(gene_id)
            reference = ChunkFiles(group["reference_onehot"]).read_all()[self.offset : self.offset + self.window]
            return ChunkFiles(group["target"]).read_all().astype(np.float32), torch.from_numpy(reference)

        return self._small.get(gene_id, read)

    def chunk_files(self, gene_id: str) -> ChunkFiles:
        """The chunks of a gene's `dosage_onehot_delta` (for the last GENE_CACHE genes of this process)."""
        return self._files.get(gene_id, lambda: ChunkFiles(self.group(gene_id)["dosage_onehot_delta"]))

    def read(self, batch: MicroBatch) -> Batch:
        """One micro-batch as tensors by this reader's path."""
        targets, reference = self.small(batch.gene_id)
        target, key = torch.from_numpy(targets[batch.rows]), self.key(batch.gene_id)
        if self.read_path == "stored":
            return Batch(batch, target, key, reference, self.flat(batch.gene_id), self.stored(batch.gene_id, batch.rows))
        reference, flat, values = self.compact(batch.gene_id)
        return Batch(batch, target, key, reference, flat, values.index_select(0, torch.from_numpy(batch.rows.astype(np.int64))))

    def read_together(self, batches: Sequence[MicroBatch]) -> list[Batch]:
        """Micro-batches read as one work item: on the stored path, every chunk they need is decoded first, one
        after another (the decode buffer stays in the CPU's cache between them: ~1.3x faster than interleaved
        with other work, loader benchmark)."""
        if self.read_path == "stored":
            for gene_id in dict.fromkeys(b.gene_id for b in batches):
                rows = np.concatenate([b.rows for b in batches if b.gene_id == gene_id])
                for chunk in np.unique(rows // self.chunk_files(gene_id).rows):
                    self.chunk_onehots(gene_id, int(chunk))
        return [self.read(batch) for batch in batches]

    def stored(self, gene_id: str, rows: np.ndarray) -> torch.Tensor:
        """One-hots of the people of `rows` (sorted) at the gene's `positions`, from the stored chunks they lie in."""
        size = self.chunk_files(gene_id).rows
        chunk_of = rows // size
        values = [self.chunk_onehots(gene_id, int(chunk)).index_select(0, torch.from_numpy(rows[chunk_of == chunk] - chunk * size))
                  for chunk in np.unique(chunk_of)]
        return values[0] if len(values) == 1 else torch.cat(values)

    def chunk_onehots(self, gene_id: str, chunk: int) -> torch.Tensor:
        """One stored chunk's people's one-hots at the gene's `positions`, (people, 4 x positions) float16, kept
        within CHUNK_CACHE_BYTES (reference + delta added in torch: numpy converts float16 in software, ~20x slower)."""
        def read() -> torch.Tensor:
            files = self.chunk_files(gene_id)
            if self._scratch is None or self._scratch.shape != files.shape:
                self._scratch = files.buffer()
            delta = files.read(chunk, self._scratch)[:, self.offset : self.offset + self.window]
            reference = self.small(gene_id)[1].reshape(-1)[self.flat(gene_id)]
            return torch.from_numpy(channels_at(delta, self.positions(gene_id))) + reference

        return self._chunks.get((gene_id, chunk), read)

    def positions(self, gene_id: str) -> np.ndarray:
        """Positions of this reader's window (0-based, sorted) where a gene's people may differ from the
        reference: its variant positions, less the masked ones. The build writes non-zero differences nowhere
        else (`pstore validate --deep` checks it), so the stored path reads the chunks there only."""
        def make() -> np.ndarray:
            offsets = np.unique(self.variant_offsets(gene_id)) - self.offset
            inside = offsets[(offsets >= 0) & (offsets < self.window)]
            return np.setdiff1d(inside, self.masked(gene_id), assume_unique=True)

        return self._positions.get(gene_id, make)

    def flat(self, gene_id: str) -> torch.Tensor:
        """`positions` as flat indices into a (window * 4) one-hot (what a stored batch carries)."""
        return self._flat.get(gene_id, lambda: torch.from_numpy(flat_indices(self.positions(gene_id))))

    def variant_offsets(self, gene_id: str) -> np.ndarray:
        """0-based offsets in the store's window of a gene's variant rows (sorted; shared by split sites)."""
        group = self.group(gene_id)
        return ChunkFiles(group["variant_position"]).read_all().astype(np.int64) - 1 - int(group.attrs["window_start"])

    def masked(self, gene_id: str) -> np.ndarray:
        """A gene's masked positions inside this reader's window (0-based from its start)."""
        offsets = self.mask.get(gene_id, np.zeros(0, np.int64)) - self.offset
        return offsets[(offsets >= 0) & (offsets < self.window)]

    def compact(self, gene_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A gene's reference (window, 4), the flat indices of its variant positions (K,), everyone's values there
        (kept for the last GENE_CACHE genes of this process)."""
        return self._compact.get(gene_id, lambda: self._make_compact(gene_id))

    def _make_compact(self, gene_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The compact form of a gene, from its variant table."""
        group = self.group(gene_id)
        reference, calls = (ChunkFiles(group[name]).read_all() for name in ("reference_onehot", "call_genotype"))
        offsets = self.variant_offsets(gene_id)
        kept = ~np.isin(offsets, self.mask.get(gene_id, ()))  # masked positions keep the reference
        offsets, calls = offsets[kept], calls[kept]
        alts = base_codes(group["variant_allele"][:, 1][kept]) if len(offsets) else np.zeros(0, np.int8)
        flat, values = dosage_onehots(reference, offsets, alts, haplotype_carriers(calls, offsets))
        inside = slice(*np.searchsorted(flat, [self.offset * 4, (self.offset + self.window) * 4]))  # flat is sorted
        return (torch.from_numpy(reference[self.offset : self.offset + self.window].copy()),
                torch.from_numpy(flat[inside] - self.offset * 4), torch.from_numpy(np.ascontiguousarray(values[:, inside])))


class LRU:
    """Values made on first use and kept for the most recently used keys, up to `limit` in total weight."""

    def __init__(self, limit: int, weight: Callable[[Any], int] = lambda value: 1):
        self.limit, self.weight = limit, weight
        self.entries: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.total = 0

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """The value for `key`, made when missing; the least recently used go while the total is over the limit."""
        if key not in self.entries:
            value = make()
            self.entries[key] = (value, self.weight(value))
            self.total += self.entries[key][1]
            while self.total > self.limit and len(self.entries) > 1:
                self.total -= self.entries.popitem(last=False)[1][1]
        self.entries.move_to_end(key)
        return self.entries[key][0]


def work_items(batches: Sequence[MicroBatch], people: int = ITEM_PEOPLE) -> list[tuple[MicroBatch, ...]]:
    """Planned micro-batches in the groups a worker reads together: consecutive ones of one block, up to
    `people` people (a training block is one group, so one worker decodes each stored chunk it needs once)."""
    items: list[list[MicroBatch]] = []
    for batch in batches:
        last = items[-1] if items else None
        if last and not last[-1].step_end and last[-1].gene_id == batch.gene_id and sum(len(b.rows) for b in last) + len(batch.rows) <= people:
            last.append(batch)
        else:
            items.append([batch])
    return [tuple(item) for item in items]


class _Plan(torch.utils.data.Sampler):
    """The work items of the current pass, handed to DataLoader as its 'indices' (set before each pass)."""

    def __init__(self) -> None:
        self.items: list[tuple[MicroBatch, ...]] = []

    def __iter__(self) -> Iterator[tuple[MicroBatch, ...]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class _Reads(torch.utils.data.Dataset):
    """A 'dataset' whose keys are work items (micro-batches read together), read by a GeneReader."""

    def __init__(self, reader: GeneReader):
        self.reader = reader

    def __getitem__(self, item: tuple[MicroBatch, ...]) -> list[Batch]:
        return self.reader.read_together(item)


class BatchLoader:
    """Reads planned micro-batches ahead with DataLoader workers that live as long as the loader, so their
    per-gene caches (open arrays, compact forms, stored chunks) last across epochs; a worker reads a whole
    block at a time (`work_items`); batches arrive on `device`, expanded into a few recycled buffers there
    (`Expander`). Workers' seeds come from the loader's own generator: drawn from torch's global one (a draw
    at every pass without workers, at the first only with persistent workers), they would shift the dropout
    draws of later epochs, so --workers 0 and --workers N would train differently."""

    def __init__(self, reader: GeneReader, workers: int = 0, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.expander = Expander()
        self.plan = _Plan()
        pin = self.device.type == "cuda"
        self.loader = torch.utils.data.DataLoader(_Reads(reader), batch_size=None, sampler=self.plan, num_workers=workers,
                                                  pin_memory=pin, persistent_workers=workers > 0,
                                                  prefetch_factor=2 if workers else None, generator=torch.Generator())

    def __call__(self, batches: Sequence[MicroBatch]) -> Iterator[tuple[Batch, torch.Tensor, torch.Tensor]]:
        """(batch, dosage one-hots, targets) for each planned micro-batch, in order."""
        self.plan.items = work_items(batches)
        for item in self.loader:
            for batch in item:
                onehot, target = batch.to(self.device, self.expander, non_blocking=self.device.type == "cuda")
                yield batch, onehot, target


def iterate(reader: GeneReader, batches: Sequence[MicroBatch], workers: int = 0, device: str = "cpu") -> Iterator[tuple[Batch, torch.Tensor, torch.Tensor]]:
    """One pass over planned micro-batches (a BatchLoader used once)."""
    yield from BatchLoader(reader, workers, device)(batches)
