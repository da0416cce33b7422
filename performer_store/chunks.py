"""Blocks of rows of a Zarr v3 array, one chunk each, decoded straight from their files in the store's layout.

zarr-python spends 4-7 ms of Python and event-loop work around the 0.8 ms it takes zstd to decode one
(32, 49152, 4) float16 chunk of `dosage_onehot_delta`. For an array on local disk whose chunks span all but
its first axis, with the codecs `pstore build` writes (little-endian bytes, then zstd), a chunk is its file,
one zstd frame: this module reads the file and decodes it, into the caller's buffer when given. Any other
layout (other codecs, sharding, other chunking, a remote store) is read through zarr-python, with the same result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.storage import LocalStore

from .inputs import InputError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ChunkFiles:
    """An array read in blocks of rows, as many as its chunks hold along the first axis."""

    def __init__(self, array: zarr.Array):
        self.array = array
        self.rows = int(array.chunks[0])
        self.shape = (self.rows, *array.shape[1:])  # of a block
        self.directory = direct_directory(array)
        self.zstd = numcodecs.Zstd()

    def __len__(self) -> int:
        """Number of chunks."""
        return -(-self.array.shape[0] // self.rows)

    def read_all(self) -> np.ndarray:
        """The whole array (a small one stored as one chunk reads faster than through zarr-python)."""
        blocks = [self.read(i) for i in range(len(self))]
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks) if blocks else np.empty((0, *self.shape[1:]), self.array.dtype)

    def buffer(self) -> np.ndarray:
        """An uninitialized block of rows to decode into (reused, it saves page faults)."""
        return np.empty(self.shape, dtype=self.array.dtype)

    def read(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Chunk `index`, its rows only (the last chunk may be shorter), decoded into `out` (a `buffer()`) if given."""
        out = self.buffer() if out is None else out
        start = index * self.rows
        rows = min(self.rows, self.array.shape[0] - start)
        if self.directory is None:
            out[:rows] = self.array[start : start + rows]
            return out[:rows]
        path = self.directory / self.array.metadata.encode_chunk_key((index,) + (0,) * (self.array.ndim - 1))
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if not (self.directory / "zarr.json").is_file():
                raise InputError(f"{self.directory}: the array is gone (was the store rebuilt or moved while it was read?); "
                                 f"run the command again") from None
            out.fill(self.array.metadata.fill_value)  # a chunk never written: the fill value, as Zarr reads it
            return out[:rows]
        size = frame_content_size(raw)
        if size is not None and size != out.nbytes:
            raise InputError(f"{path}: a chunk of {out.nbytes} bytes was expected, its zstd frame holds {size}; "
                             f"rebuild the gene with `pstore build --force`")
        try:  # a frame that does not state its size is decoded on its own first, then checked
            decoded = self.zstd.decode(raw, out=out) if size is not None else self.zstd.decode(raw)
        except (RuntimeError, ValueError) as error:
            raise InputError(f"{path}: not a readable zstd chunk ({error}); rebuild the gene with `pstore build --force`") from None
        if size is None:
            if len(decoded) != out.nbytes:
                raise InputError(f"{path}: a chunk of {out.nbytes} bytes was expected, it decodes to {len(decoded)}; "
                                 f"rebuild the gene with `pstore build --force`")
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(decoded, np.uint8)
        return out[:rows]


def frame_content_size(frame: bytes) -> int | None:
    """Decoded size a zstd frame's header states (RFC 8878, 3.1.1.1), None when it states none."""
    if len(frame) < 6 or frame[:4] != ZSTD_MAGIC:
        return None
    descriptor = frame[4]
    size_flag, single_segment, dictionary_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    field = (1 if single_segment else 0, 2, 4, 8)[size_flag]
    if field == 0:
        return None
    start = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dictionary_flag]
    value = int.from_bytes(frame[start : start + field], "little")
    return value + 256 if field == 2 else value


def direct_directory(array: zarr.Array) -> Path | None:
    """The array's directory when its chunks are whole blocks of rows, each a plain little-endian zstd frame on
    local disk; else None."""
    store = array.store_path.store
    codecs = tuple(getattr(array.metadata, "codecs", ()))
    plain = (len(codecs) == 2 and isinstance(codecs[0], BytesCodec) and isinstance(codecs[1], ZstdCodec)
             and (array.dtype.itemsize == 1 or (codecs[0].endian is not None and codecs[0].endian.value == sys.byteorder)))
    rows = tuple(array.chunks[1:]) == tuple(array.shape[1:])
    if not (plain and rows and isinstance(store, LocalStore) and array.shards is None):
        return None
    return Path(store.root) / array.store_path.path
