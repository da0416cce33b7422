"""Open, create and read stores: typed access by schema name, atomic publishing of gene groups.

A gene group is written under `<store>/.pstore-staging/` and renamed into `<store>/genes/<gene_id>` only
after its last array and its `complete: true` attribute are on disk, so a reader (or a re-run after a
kill) never mistakes a half-written gene for a complete one. Writers stage only while they hold the store lock,
so whatever the staging directory holds when the lock is taken was left by a killed writer, and is deleted then.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import ZstdCodec

from . import schemas
from .encode import add_reference
from .inputs import InputError, unversioned

COMPRESSOR = ZstdCodec(level=5)  # chosen by benchmarks/store_layout.py: smallest and fastest for the one-hots


def create_array(group: zarr.Group, spec: schemas.ArraySpec, shape: tuple[int, ...]) -> zarr.Array:
    """An empty array of the layout, chunked by its rule, zstd-compressed, with dims and description."""
    if len(shape) != len(spec.dims):
        raise AssertionError(f"{spec.name}: shape {shape} does not match dims {spec.dims}")
    return group.create_array(
        spec.name,
        shape=shape,
        chunks=spec.chunk_shape(shape),
        dtype=str if spec.dtype == "str" else spec.dtype,
        compressors=COMPRESSOR,
        fill_value=spec.fill_value(),
        dimension_names=spec.dims,
        attributes={"description": spec.description},
        config={"write_empty_chunks": True},  # skips a slow all-fill check; zero chunks compress to bytes
    )


def write_array(group: zarr.Group, spec: schemas.ArraySpec, data: np.ndarray) -> zarr.Array:
    """Create an array of the layout and write all of it."""
    array = create_array(group, spec, data.shape)
    if data.size:
        array[...] = data
    return array


def gene_path(store: Path, gene_id: str) -> Path:
    """Directory of a gene's group."""
    return store / schemas.GENES_GROUP / gene_id


RETIRED = "retired"
"""The staging key of a group's previous version that `publish` moves aside."""

EMPTIED = "emptied"
"""The staging key of what `pstore build --force` moves out of a store before deleting it."""

GENE_INDEX = "gene-index"
"""The staging key of the root's gene index that the build writes."""


def staging_path(store: Path, key: str) -> Path:
    """A fresh staging directory '<key>.<uuid hex>' for a group (a gene ID, 'gene-index', or '<gene>.<group>.<model>'
    for a result): unique, inside the store so the rename stays on one filesystem."""
    return store / schemas.STAGING_DIR / f"{key}.{uuid.uuid4().hex}"


def clear_staging(store: Path) -> None:
    """Delete what killed writers left in the staging directory: call only while holding the store lock, under which
    every writer stages, so nothing there is in use."""
    shutil.rmtree(store / schemas.STAGING_DIR, ignore_errors=True)


def publish(staging: Path, final: Path) -> None:
    """Move a finished group into place atomically, replacing an older version of it."""
    if final.exists():
        retired = staging.parent / f"{RETIRED}.{uuid.uuid4().hex}"
        os.rename(final, retired)
        os.rename(staging, final)
        shutil.rmtree(retired)
    else:
        os.rename(staging, final)
    try:
        staging.parent.rmdir()  # no empty staging directory left for Zarr clients to warn about
    except OSError:
        pass  # other writers still stage there


@contextmanager
def directory_lock(path: Path, busy: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on a directory (released even on kill -9); when another process holds it, wait for it or,
    without `wait`, raise the one-line error `busy`."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(descriptor)
        raise InputError(busy) from None
    try:
        yield
    finally:
        os.close(descriptor)


@contextmanager
def store_lock(path: Path, wait: bool = False) -> Iterator[None]:
    """Hold the store's lock while writing it, and first delete the leftovers of killed writers (`clear_staging`):
    every command that writes a store cleans up after interrupted ones. A write the store refuses (full disk,
    read-only) is one line (`write_error`).

    Builds refuse to wait (two builds of one store are a mistake); short writes of results wait their turn.
    """
    path.mkdir(parents=True, exist_ok=True)
    with directory_lock(path, f"store {path}: another pstore command is writing it; wait for it or stop it", wait):
        try:
            clear_staging(path)
            yield
        except OSError as error:
            raise write_error(path, error) from None


WRITE_FIXES = {errno.ENOSPC: "free space on its disk", errno.EDQUOT: "free space within your disk quota",
               errno.EROFS: "give a store on a writable file system", errno.EACCES: "make it writable for you",
               errno.EPERM: "make it writable for you"}
"""What to do about each error that stops a store from being written."""


def write_error(path: Path, error: OSError) -> OSError | InputError:
    """A failed write to the store as one line naming the store, the cause and the fix (the command resumes once fixed,
    its staged work deleted by the next writer); other errors (such as an unreadable input) unchanged."""
    ours = error.filename is None or Path(os.path.abspath(error.filename)).is_relative_to(os.path.abspath(path))
    if error.errno not in WRITE_FIXES or not (ours or error.errno in (errno.ENOSPC, errno.EDQUOT)):
        return error
    where = f" {error.filename}" if error.filename else ""
    return InputError(f"store {path}: cannot write{where} ({error.strerror}); {WRITE_FIXES[error.errno]}, then run the "
                      "same command again: it resumes where it stopped")


def is_complete(group_dir: Path) -> bool:
    """True when a gene group's metadata says it was finished."""
    try:
        meta = json.loads((group_dir / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("attributes", {}).get("complete") is True


def complete_gene_ids(store: Path) -> list[str]:
    """IDs of the complete gene groups on disk, sorted."""
    genes_dir = store / schemas.GENES_GROUP
    if not genes_dir.is_dir():
        return []
    return sorted(d.name for d in genes_dir.iterdir() if d.is_dir() and is_complete(d))


def check_format(root: zarr.Group, path: Path) -> None:
    """Refuse a store of another format version, saying what to do."""
    found = root.attrs.get(schemas.FORMAT_ATTRIBUTE)
    if found is None and schemas.EMPTYING_ATTRIBUTE in root.attrs:
        raise InputError(f"store {path}: a `pstore build --force` was stopped while it emptied the store; run that build again")
    if found is None:
        raise InputError(f"store {path}: not a performer-store store (no {schemas.FORMAT_ATTRIBUTE} attribute); build one with `pstore build`")
    if found != schemas.FORMAT_VERSION:
        raise InputError(
            f"store {path}: format version {found}, this pstore reads version {schemas.FORMAT_VERSION}; rebuild it with "
            f"`pstore build --force` or use the performer-store release that wrote it"
        )


def directory_size(path: Path) -> int:
    """Bytes of all files under a directory."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class NoStore(InputError):
    """The path holds no Zarr store (no zarr.json)."""


class StaleIndex(InputError):
    """The store's gene index does not list the genes on disk."""

    def __init__(self, path: Path, listed: int, on_disk: int) -> None:
        self.facts = (f"store {path}: its gene index lists {listed} genes but {on_disk} are on disk (a `pstore build` was "
                      "interrupted, or is running)")
        super().__init__(f"{self.facts}; run that build again (or let it finish)")


@dataclass
class Store:
    """A store opened for reading: people, splits, gene index and per-gene arrays by schema name."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not (self.path / "zarr.json").is_file():
            raise NoStore(f"store {self.path}: not a Zarr store (no zarr.json); build one with `pstore build`")
        self.root = zarr.open_group(str(self.path), mode="r")
        check_format(self.root, self.path)

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes: tissue, window, seed, provenance, ..."""
        return dict(self.root.attrs)

    @property
    def window(self) -> int:
        """Window length in bp."""
        return int(self.root.attrs["window"])

    @cached_property
    def sample_id(self) -> np.ndarray:
        """Person IDs in store order."""
        return self.root["sample_id"][:]

    def split(self, fold: int) -> np.ndarray:
        """Split codes of every person for one fold (0 train, 1 tune, 2 test)."""
        splits = self.root["sample_split"]
        if not 0 <= fold < splits.shape[0]:
            raise InputError(f"store {self.path}: fold {fold} does not exist; folds are 0-{splits.shape[0] - 1}")
        return splits[fold]

    @cached_property
    def gene_index(self) -> pd.DataFrame:
        """The gene index as stored (one row per gene complete when it was written, indexed by gene_id)."""
        columns = [spec.name for spec in schemas.ROOT.arrays if spec.dims == ("genes",)]
        try:
            frame = pd.DataFrame({name: self.root[name][:] for name in columns})
        except (KeyError, ValueError):
            raise InputError(f"store {self.path}: its gene index is missing or half-written (an interrupted build?); run `pstore build` again") from None
        return frame.astype({c: object for c in columns if frame[c].dtype.kind == "T"}).set_index("gene_id", drop=False)

    @cached_property
    def genes(self) -> pd.DataFrame:
        """The gene index, refused (`StaleIndex`) when it does not list the complete gene groups on disk: a build
        killed before it rewrote the index (or one still running) would hide its genes from every command. Folders
        that are no complete gene group (`.ipynb_checkpoints`) are not genes, as for the index (`validate` lists them)."""
        genes_dir = self.path / schemas.GENES_GROUP
        folders = {entry.name for entry in os.scandir(genes_dir) if entry.is_dir()} if genes_dir.is_dir() else set()
        listed = set(self.gene_index.index)
        unlisted = [name for name in folders - listed if is_complete(genes_dir / name)]  # only the few folders not listed
        if unlisted or listed - folders:
            raise StaleIndex(self.path, len(listed), len(listed & folders) + len(unlisted))
        return self.gene_index

    def other_versions(self, gene_ids: Sequence[str]) -> dict[str, str]:
        """Of gene IDs the store lacks, those it holds under another version (or none): ID given -> the store's ID
        (a PAR gene's chrX and chrY copies are told apart)."""
        by_bare = {unversioned(g): g for g in self.genes.index}
        return {g: by_bare[unversioned(g)] for g in gene_ids if g not in self.genes.index and unversioned(g) in by_bare}

    def check_genes(self, gene_ids: Sequence[str]) -> None:
        """Refuse gene IDs the store's index lacks, naming the store's ID of those it holds under another version."""
        unknown = [g for g in gene_ids if g not in self.genes.index]
        if unknown:
            raise InputError(f"store {self.path}: no gene {', '.join(unknown[:5])}; "
                             + (self._version_hint(unknown) or f"genes are listed by `pstore info {self.path}`"))

    def _version_hint(self, gene_ids: Sequence[str]) -> str | None:
        """'the store has X.14: give IDs with the store's version' when some IDs differ from the store's by version only."""
        found = self.other_versions(gene_ids)
        if not found:
            return None
        return f"the store has {', '.join(list(found.values())[:5])}: give gene IDs with the store's version"

    def gene(self, gene_id: str) -> zarr.Group:
        """A complete gene's group."""
        directory = gene_path(self.path, gene_id)
        if not is_complete(directory):
            known = ", ".join(self.genes.index[:5])
            raise InputError(f"store {self.path}: no complete gene {gene_id}; "
                             + (self._version_hint([gene_id]) or f"genes include {known}; run `pstore build` for it"))
        return zarr.open_group(str(directory), mode="r")

    def dosage_onehot(self, gene_id: str, samples: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Dosage one-hots (people x window x 4, float16) of chosen people: reference + stored difference."""
        group = self.gene(gene_id)
        delta = group["dosage_onehot_delta"].get_orthogonal_selection((samples, slice(None), slice(None)))
        return add_reference(delta, group["reference_onehot"][:])

    def dosage_onehot_dask(self, gene_id: str):
        """The same as a lazy dask array over the stored chunks, for whole-gene or cross-gene work."""
        import dask.array as da

        group = self.gene(gene_id)
        delta = da.from_zarr(group["dosage_onehot_delta"])
        return delta.map_blocks(add_reference, group["reference_onehot"][:], dtype=np.float16)
