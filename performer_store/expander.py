"""Dense dosage one-hots from compact batches (a gene's reference + each person's one-hot where people differ).

A micro-batch is 32 x 49,152 x 4 float16 (12.6 MB), of which ~0.5% differs from the gene's reference. Writing
all of it every time costs more than everything else a batch needs (and a fresh 12.6 MB allocation adds page
faults), so the expander keeps a few buffers and rewrites only what changed: a buffer that last held the same
gene keeps the reference everywhere but at the positions it last wrote. A buffer is reused only when nothing
else holds its memory (its storage's reference count: a batch still in use, a view of it, a tensor autograd
saved) and nothing wrote into it since (its version counter); otherwise another buffer, or a fresh tensor, is
used. Writes run on the tensors' device, so on CUDA the windows are built on the GPU, in stream order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BUFFERS = 3  # a consumer holds one batch while the next is built; one more spare


def storage_users(tensor: torch.Tensor) -> int | None:
    """How many tensors (and other holders) share this tensor's memory; None where torch cannot say."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    return None if use_count is None else int(use_count(tensor.untyped_storage()._cdata))


@dataclass(eq=False)  # a buffer is itself: `list.remove` must not compare tensors
class _Buffer:
    """A reusable (rows, window * 4) tensor and what it holds."""

    data: torch.Tensor
    users: int  # storage_users(data) while only this buffer holds it
    key: str = ""  # the gene (and reader) whose reference it holds
    rows: int = 0  # leading rows holding that reference everywhere outside `flat`
    flat: torch.Tensor | None = None  # positions of those rows that may hold a person's values
    version: int = -1  # data._version after the expander's last write

    def free(self) -> bool:
        """Nothing outside the expander holds the buffer's memory."""
        return storage_users(self.data) == self.users


class Expander:
    """Builds (B, window, 4) dosage one-hots from (reference, flat positions, values) into recycled buffers."""

    def __init__(self, buffers: int = BUFFERS):
        self.limit = buffers if storage_users(torch.zeros(1)) is not None else 0
        self.buffers: list[_Buffer] = []

    def __call__(self, key: str, reference: torch.Tensor, flat: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The dosage one-hots: `reference` (window, 4) everywhere, `values` (B, K) at flat indices `flat` (K,).

        `key` names the reference (the same key must always come with the same reference)."""
        rows, width = values.shape[0], reference.numel()
        buffer = self._take(key, rows, width, reference)
        if buffer is None:
            out = reference.reshape(1, width).expand(rows, width).clone()
            return out.index_copy_(1, flat, values).view(rows, *reference.shape)
        data = buffer.data
        if buffer.key != key or buffer.version != data._version:
            buffer.key, buffer.rows, buffer.flat = key, 0, None
        if buffer.flat is not None and not (buffer.flat is flat or torch.equal(buffer.flat, flat)):
            stale = buffer.flat[~torch.isin(buffer.flat, flat)]  # last written, not overwritten now: back to the reference
            data[: buffer.rows].index_copy_(1, stale, reference.reshape(-1)[stale].expand(buffer.rows, -1))
        if buffer.rows < rows:
            data[buffer.rows : rows].copy_(reference.reshape(1, width).expand(rows - buffer.rows, width))
            buffer.rows = rows
        data[:rows].index_copy_(1, flat, values)
        buffer.flat, buffer.version = flat, data._version
        return data[:rows].view(rows, *reference.shape)

    def _take(self, key: str, rows: int, width: int, reference: torch.Tensor) -> _Buffer | None:
        """A free buffer that fits, preferring one holding this key's reference; else a new one, in place of the
        oldest free buffer once the pool is full, or of the oldest held one (the expander forgets it, its holder
        keeps it); None when the expander keeps no buffers."""
        free = [b for b in self.buffers if b.free()]
        fits = [b for b in free if b.data.shape[0] >= rows and b.data.shape[1] == width
                and b.data.device == reference.device and b.data.dtype == reference.dtype]
        if fits:
            chosen = next((b for b in fits if b.key == key), fits[0])
            self.buffers.remove(chosen)
            self.buffers.append(chosen)  # most recently used last
            return chosen
        if not self.limit:
            return None
        if len(self.buffers) >= self.limit:
            self.buffers.remove((free or self.buffers)[0])
        data = torch.empty(rows, width, dtype=reference.dtype, device=reference.device)
        self.buffers.append(_Buffer(data, storage_users(data)))
        return self.buffers[-1]
