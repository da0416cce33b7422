"""Chunks decoded straight from their files: equal to zarr-python's reads, zarr's rules for what is missing,
and a one-line error naming the file for what is broken."""

from __future__ import annotations

import shutil

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from performer_store.chunks import ChunkFiles, direct_directory, frame_content_size
from performer_store.inputs import InputError
from performer_store.store import Store


def raw_frame(payload: bytes) -> bytes:
    """A zstd frame that does not state its content size: one raw (stored) block (RFC 8878)."""
    header = ((len(payload) << 3) | 1).to_bytes(3, "little")  # last block, type raw
    return b"\x28\xb5\x2f\xfd" + bytes([0x00, 0x00]) + header + payload  # descriptor 0, window 1 KiB


def every_chunk(files: ChunkFiles) -> np.ndarray:
    """All chunks through the direct reader, concatenated (one reused buffer)."""
    scratch = files.buffer()
    return np.concatenate([files.read(i, scratch).copy() for i in range(len(files))])


def test_store_chunks_decode_like_zarr(sim_store):
    """The store's dosage differences (60 people: a full and a partial 32-person chunk) and its one-chunk arrays
    (targets, reference, calls, positions) read directly equal zarr's read."""
    store = Store(sim_store)
    for gene_id in store.genes.index:
        group = store.gene(gene_id)
        files = ChunkFiles(group["dosage_onehot_delta"])
        assert files.directory is not None and len(files) == 2
        np.testing.assert_array_equal(every_chunk(files), group["dosage_onehot_delta"][:])
        np.testing.assert_array_equal(files.read_all(), group["dosage_onehot_delta"][:])
        for name in ("target", "reference_onehot", "call_genotype", "variant_position"):
            assert ChunkFiles(group[name]).directory is not None
            np.testing.assert_array_equal(ChunkFiles(group[name]).read_all(), group[name][:])


def test_an_empty_array_reads_empty(tmp_path):
    """A gene without variants has empty variant arrays: read as empty arrays of their dtype."""
    array = zarr.create_array(str(tmp_path / "a"), shape=(0, 5, 2), chunks=(1, 5, 2), dtype="int8", compressors=ZstdCodec())
    empty = ChunkFiles(array).read_all()
    assert empty.shape == (0, 5, 2) and empty.dtype == np.int8


@pytest.mark.parametrize("layout", ["blosc", "sharded", "window chunks", "dot-separated"])
def test_other_layouts(tmp_path, layout):
    """Arrays the direct reader does not know go through zarr-python; a '.' chunk-key separator is read directly."""
    data = np.random.default_rng(0).integers(-2, 3, (70, 40, 4)).astype(np.float16) / 2
    options = {"blosc": {"compressors": BloscCodec()}, "sharded": {"shards": (64, 40, 4)}, "window chunks": {"chunks": (32, 16, 4)},
               "dot-separated": {"chunk_key_encoding": {"name": "default", "separator": "."}}}[layout]
    array = zarr.create_array(str(tmp_path / "a"), shape=data.shape, dtype="float16",
                              **{"chunks": (32, 40, 4), "compressors": ZstdCodec(level=3), **options})
    array[:] = data
    files = ChunkFiles(zarr.open_array(str(tmp_path / "a"), mode="r"))
    assert (files.directory is not None) == (layout == "dot-separated")
    np.testing.assert_array_equal(every_chunk(files), data)


def chunk_file(store_path, gene_id: str, index: int = 1):
    """A gene's chunk file of `dosage_onehot_delta`, and the array."""
    array = Store(store_path).gene(gene_id)["dosage_onehot_delta"]
    return direct_directory(array) / array.metadata.encode_chunk_key((index, 0, 0)), array


@pytest.fixture
def sim_copy(sim_store, tmp_path):
    """A private copy of the simulated store, free to break."""
    return shutil.copytree(sim_store, tmp_path / "store.zarr")


def test_missing_chunk_reads_as_the_fill_value(sim_copy):
    """A chunk file that was never written is the fill value (0: no difference), as zarr reads it."""
    gene_id = Store(sim_copy).genes.index[0]
    path, array = chunk_file(sim_copy, gene_id)
    path.unlink()
    np.testing.assert_array_equal(ChunkFiles(array).read(1), array[32:])
    assert not ChunkFiles(array).read(1).any()


def test_an_array_removed_while_read_is_an_error_not_zeros(sim_copy):
    """A gene rebuilt (its directory replaced) under a running reader: an error, never the fill value."""
    gene_id = Store(sim_copy).genes.index[0]
    path, array = chunk_file(sim_copy, gene_id)
    files = ChunkFiles(array)
    shutil.rmtree(path.parents[3])
    with pytest.raises(InputError, match="the array is gone"):
        files.read(1)


@pytest.mark.parametrize("damage", ["garbage", "short frame", "short raw frame"])
def test_broken_chunk_is_a_one_line_error(sim_copy, damage):
    """Bytes that are no zstd frame, or a frame of the wrong size (stated or not): InputError naming the file."""
    gene_id = Store(sim_copy).genes.index[0]
    path, array = chunk_file(sim_copy, gene_id)
    small = np.zeros(10, np.float16).tobytes()
    path.write_bytes({"garbage": b"not zstd at all", "short frame": numcodecs.Zstd().encode(small),
                      "short raw frame": raw_frame(small)}[damage])
    with pytest.raises(InputError, match="pstore build --force") as error:
        ChunkFiles(array).read(1)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_frame_without_its_size_is_still_read(tmp_path):
    """A frame that does not state its content size (another writer's) decodes and is checked after."""
    data = np.arange(2 * 8 * 4, dtype=np.float16).reshape(2, 8, 4)
    array = zarr.create_array(str(tmp_path / "a"), shape=data.shape, chunks=data.shape, dtype="float16",
                              compressors=ZstdCodec(level=3))
    array[:] = data
    path = direct_directory(array) / array.metadata.encode_chunk_key((0, 0, 0))
    path.write_bytes(raw_frame(data.tobytes()))
    assert frame_content_size(path.read_bytes()) is None
    np.testing.assert_array_equal(ChunkFiles(array).read(0), data)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 300, 65_791, 65_792, 100_000, 12_582_912])
def test_frame_content_size_reads_what_zstd_wrote(size):
    """Every size field width of the frame header (1, 2 with its 256 offset, 4 bytes) as numcodecs writes them."""
    assert frame_content_size(numcodecs.Zstd().encode(np.zeros(size, np.uint8))) == size
