"""The schema, its document, validation of broken stores, `info`, and distributed builds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from conftest import build_args, pstore
from performer_store import schemas
from performer_store.cli import main
from performer_store.inputs import read_gtf_genes
from performer_store.store import Store
from performer_store.validate import validate_store
from test_build import assert_same_arrays

DOCS = Path(__file__).resolve().parent.parent / "docs" / "store.md"


def test_docs_match_schema():
    """docs/store.md is the schema's own Markdown (regenerate: python -m performer_store.schemas > docs/store.md)."""
    assert DOCS.read_text() == schemas.to_markdown()


def test_store_arrays_follow_schema(tiny_store):
    """Every array on disk has the schema's dtype, dimension names, chunking and description."""
    root = zarr.open_group(str(tiny_store), mode="r")
    groups = [(schemas.ROOT, root)] + [(schemas.GENE, g) for _, g in root["genes"].groups()]
    for spec, group in groups:
        assert {name for name, _ in group.arrays()} == {a.name for a in spec.arrays}
        for array_spec in spec.arrays:
            array = group[array_spec.name]
            assert array.dtype == array_spec.numpy_dtype, array_spec.name
            assert tuple(array.metadata.dimension_names) == array_spec.dims
            assert array.chunks == array_spec.chunk_shape(array.shape)
            assert array.attrs["description"] == array_spec.description
    assert validate_store(tiny_store, deep=True) == []


def test_validate_names_each_problem(tiny_store, tmp_path):
    """A removed array, a tampered one-hot and an incomplete gene are each reported."""
    broken = tmp_path / "broken.zarr"
    shutil.copytree(tiny_store, broken)
    genes = sorted(p for p in (broken / "genes").iterdir() if p.is_dir())
    shutil.rmtree(genes[0] / "variant_maf")
    group = zarr.open_group(str(genes[1]), mode="r+")
    delta = group["dosage_onehot_delta"]
    delta[3, 500, :] = np.float16(0.5)
    meta = json.loads((genes[2] / "zarr.json").read_text())
    meta["attributes"]["complete"] = False
    (genes[2] / "zarr.json").write_text(json.dumps(meta))
    problems = validate_store(broken, deep=True)
    text = "\n".join(problems)
    assert f"genes/{genes[0].name}: array variant_maf is missing" in text
    assert f"genes/{genes[1].name}/dosage_onehot_delta: people 0-11 differ from the variant table" in text
    assert f"genes/{genes[2].name}: incomplete" in text
    assert "gene index lists 4 genes but 3 are complete" in text
    result = pstore("validate", str(broken), expect=1)
    assert "variant_maf is missing" in result.output


def test_validate_deep_checks_the_variant_table_against_the_reference_and_the_calls(tiny, tiny_store, tmp_path):
    """A REF that is not the reference base at its position, a variant_maf that is not the calls' minor-allele frequency
    (0.9, above 0.5) and a reference_onehot row that is neither a base nor N are each one line; the row needs no --deep."""
    broken = tmp_path / "broken.zarr"
    shutil.copytree(tiny_store, broken)
    gene1, gene2, _, gene4 = (zarr.open_group(str(broken / "genes" / g), mode="r+") for g in Store(broken).genes.index)
    alleles = gene1["variant_allele"][:]
    position = int(gene1["variant_position"][1])
    base = tiny.sequences["chr1"][position - 1].upper()
    alleles[1, 0] = "A" if base != "A" else "C"
    gene1["variant_allele"][:] = alleles
    calls = gene2["call_genotype"][:].astype(int)
    frequency = (calls[0] == 1).sum() / (calls[0] >= 0).sum()
    gene2["variant_maf"][0] = 0.9
    gene4["reference_onehot"][100] = np.array([0.5, 0.5, 0, 0], np.float16)
    row = ("genes/ENSG00000000004.1/reference_onehot: 1 rows are neither a base (one 1, three 0) nor N (0.25 x 4); "
           f"first at position {gene4.attrs['window_start'] + 101}: [0.5, 0.5, 0.0, 0.0]")
    assert validate_store(broken) == [row]
    assert validate_store(broken, deep=True) == [
        f"genes/ENSG00000000001.1/variant_allele: the REF of 1 rows is not reference_onehot's base at their position; "
        f"first row 1 at {position}: REF {alleles[1, 0]}, reference {base}",
        "genes/ENSG00000000002.4/variant_maf: 1 rows disagree with call_genotype (minor-allele frequency among called "
        f"alleles); first row 0 at {gene2['variant_position'][0]}: 0.9, expected {min(frequency, 1 - frequency):.6g}",
        row]


def test_leftovers_of_interrupted_writes_are_warnings_and_the_next_writer_deletes_them(tiny_store, tmp_path):
    """What a kill -9 leaves (staging directories named as the writers name them, a zarr partial file) is listed by
    `pstore validate`, one line each saying what it is and the fix, as warnings: nothing reads them, so the store
    stays valid (exit 0). The next command that writes the store (here `pstore enet`) deletes the staging ones."""
    store = tmp_path / "store.zarr"
    shutil.copytree(tiny_store, store)
    gene, staging = "ENSG00000000001.1", store / schemas.STAGING_DIR
    entries = {kind: staging / f"{key}.{kind * 32}" for kind, key in
               (("a", gene), ("b", f"{gene}.results.enet"), ("c", f"{gene}.ism.my.run"), ("d", "gene-index"), ("e", "retired"))}
    for kind, entry in entries.items():
        zarr.open_group(str(entry), mode="w", attributes={"kind": "performer"} if kind == "c" else {})
    partial = store / "genes" / gene / "results" / f"zarr.{'f' * 32}.partial"
    partial.parent.mkdir()
    partial.write_text("{")
    again = "nothing reads it: run that command again to finish its work (any command that writes this store deletes this), or delete it"
    expected = [
        f"Warning: {entries['a']}: an unfinished gene {gene} of an interrupted `pstore build`; {again}",
        f"Warning: {entries['c']}: an unfinished ism 'my.run' of gene {gene} from an interrupted `pstore ism`; {again}",
        f"Warning: {entries['b']}: an unfinished results 'enet' of gene {gene} from an interrupted `pstore enet`, "
        f"`pstore enet --from-store` or `pstore evaluate`; {again}",
        f"Warning: {entries['d']}: an unfinished gene index of an interrupted `pstore build`; {again}",
        f"Warning: {entries['e']}: the previous version of a gene's group or gene-index array, moved aside by an interrupted "
        "replacement; nothing reads it: run the interrupted command again (any command that writes this store deletes "
        "this), or delete it",
        f"Warning: {partial}: a partial file of an interrupted zarr write; nothing reads it: delete it",
    ]
    assert validate_store(store) == []
    output = pstore("validate", str(store)).output.splitlines()
    assert output == expected + [f"{store}: valid (the 6 leftover(s) of interrupted writes above are not part of it)"]
    pstore("enet", "--store", str(store), "--gene", gene, "--folds", "0", "--quiet")
    assert not staging.exists()
    assert pstore("validate", str(store)).output.splitlines() == expected[-1:] + [
        f"{store}: valid (the 1 leftover(s) of interrupted writes above are not part of it)"]


def test_info_reports_sizes(tiny_store):
    """`pstore info` gives people, genes, and a compression ratio equal to raw bytes over stored bytes."""
    output = pstore("info", str(tiny_store)).output
    store = Store(tiny_store)
    stored = sum(f.stat().st_size for g in store.genes.index for f in (tiny_store / "genes" / g / "dosage_onehot_delta").rglob("*") if f.is_file())
    raw = len(store.sample_id) * len(store.genes) * store.window * 8
    assert "people: 12" in output and "genes: 4" in output
    assert f"compression ratio: {round(raw / stored, 1)}" in output
    assert "ENSG00000000001.1" in output


def test_dask_view_equals_eager_read(tiny_store):
    """The lazy dask view of the dosage one-hots equals reading them directly."""
    store = Store(tiny_store)
    gene = store.genes.index[0]
    np.testing.assert_array_equal(store.dosage_onehot_dask(gene).compute(), store.dosage_onehot(gene))


def test_build_on_local_cluster_equals_serial(tiny, tiny_store, tmp_path):
    """A build on a dask.distributed LocalCluster (2 worker processes) writes the same arrays as a serial build."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        store = tmp_path / "distributed.zarr"
        pstore(*build_args(tiny, store, "--scheduler", cluster.scheduler_address))
    assert_same_arrays(tiny_store, store)


def test_build_with_local_worker_processes_equals_serial(tiny, tiny_store, tmp_path):
    """--workers 2 (Dask's multiprocessing scheduler) writes the same arrays as a serial build."""
    store = tmp_path / "workers.zarr"
    pstore(*build_args(tiny, store, "--workers", "2"))
    assert_same_arrays(tiny_store, store)


def test_errors_in_workers_reach_the_user(tiny_copy, tmp_path):
    """An input error raised inside a worker process is the same one-line error, exit status 1."""
    from test_bad_inputs import rewrite_vcf, vcf_lines

    lines = vcf_lines(tiny_copy)
    row = next(i for i, line in enumerate(lines) if line.startswith("chr2\t700\t"))
    fields = lines[row].split("\t")
    fields[3] = next(b for b in "ACGT" if b not in (fields[3], fields[4]))
    lines[row] = "\t".join(fields)
    rewrite_vcf(tiny_copy, lines)
    result = pstore(*build_args(tiny_copy, tmp_path / "s.zarr", "--workers", "2"), expect=1)
    assert "record chr2:700" in result.output and str(tiny_copy.vcf) in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_reads_real_gencode_gtf():
    """GENCODE's own chr1 excerpt (shipped by pyranges): genes, names, strands and strand-aware TSS."""
    import importlib.resources

    path = Path(str(importlib.resources.files("pyranges") / "example_data" / "gencode_human.gtf.gz"))
    genes = read_gtf_genes(path)
    assert len(genes) == 119 and set(genes["strand"]) == {"+", "-"}
    ddx11l1 = genes.loc["ENSG00000223972.5"]  # chr1:11869-14409 +
    assert (ddx11l1.gene_name, ddx11l1.tss, ddx11l1.gene_type) == ("DDX11L1", 11868, "transcribed_unprocessed_pseudogene")
    wash7p = genes.loc["ENSG00000227232.5"]  # chr1:14404-29570 -
    assert (wash7p.gene_name, wash7p.tss) == ("WASH7P", 29569)


def test_a_gene_id_of_another_version_names_the_stores_id(tiny_store, tmp_path):
    """Within a store gene IDs match exactly; one that differs by version only is refused naming the store's ID."""
    import pytest

    from performer_store.inputs import InputError

    store = Store(tiny_store)
    hint = "the store has ENSG00000000001.1: give gene IDs with the store's version"
    for given in ("ENSG00000000001", "ENSG00000000001.99"):
        with pytest.raises(InputError, match=f"no complete gene {given}; {hint}"):
            store.gene(given)
        with pytest.raises(InputError, match=f"no gene {given}; {hint}"):
            store.check_genes([store.genes.index[-1], given])
    result = pstore("query", "--store", str(tiny_store), "--gene", "ENSG00000000001", "--out", str(tmp_path / "q.tsv"), expect=1)
    assert result.output.strip() == f"Error: store {tiny_store}: no gene ENSG00000000001; {hint}"
    with pytest.raises(InputError, match="no gene NOPE; genes are listed by `pstore info"):
        store.check_genes(["NOPE"])


class Killed(BaseException):
    """Stands for a SIGKILL: raised inside a build, nothing after it runs (not even the command's error handling)."""


def killing_at(moment: int, monkeypatch) -> list[int]:
    """Make the build's file system changes (renames, deletions) raise Killed at the `moment`-th one (never if < 0);
    returns the list that counts them."""
    import os

    count = [0]

    def counted(original):
        def step(*args, **kwargs):
            count[0] += 1
            if count[0] == moment:
                raise Killed
            return original(*args, **kwargs)
        return step

    for name in ("rename", "replace", "unlink", "rmdir"):
        monkeypatch.setattr(os, name, counted(getattr(os, name)))
    monkeypatch.setattr(shutil, "rmtree", counted(shutil.rmtree))
    return count


def test_a_force_rebuild_killed_at_any_step_is_finished_by_the_next_build(tiny, tiny_store, tmp_path, monkeypatch):
    """`pstore build --force` killed at any of its renames or deletions (emptying the old store, then writing the new
    one) leaves nothing that looks complete but is not, and running it again finishes a store equal to a fresh build.
    (Deleting the old store's files in place left, after a kill, a directory that no build would touch again.)"""
    with monkeypatch.context() as patch:
        steps = killing_at(-1, patch)
        first = tmp_path / "count.zarr"
        shutil.copytree(tiny_store, first)
        pstore(*build_args(tiny, first, "--force"))
    assert steps[0] > 20
    for moment in sorted({*range(1, 12), *np.linspace(12, steps[0], 8).astype(int)}):
        store = tmp_path / f"killed{moment}.zarr"
        shutil.copytree(tiny_store, store)
        with monkeypatch.context() as patch:
            killing_at(moment, patch)
            with pytest.raises(Killed):
                CliRunner().invoke(main, build_args(tiny, store, "--force"), catch_exceptions=False)
        complete = [d.name for d in (store / "genes").glob("*") if d.is_dir()] if (store / "zarr.json").is_file() else []
        if complete and "performer_store_format" in (store / "zarr.json").read_text():
            problems = validate_store(store, deep=True)  # a killed build's gene index may lag behind its genes
            assert [p for p in problems if not p.startswith("gene index lists")] == [], (moment, problems)
        pstore(*build_args(tiny, store, "--force"))
        assert_same_arrays(tiny_store, store)
        assert validate_store(store) == [] and not (store / schemas.STAGING_DIR).exists()


def test_writes_that_fail_on_the_store_are_one_line(tiny_store, tmp_path):
    """A full disk, a read-only or unwritable store stop a writer with one line naming the store, the cause and the fix;
    an error of another file (an unreadable input) is left as it is."""
    import errno

    from performer_store.inputs import InputError
    from performer_store.store import store_lock

    store = tmp_path / "store.zarr"
    shutil.copytree(tiny_store, store)
    again = "then run the same command again: it resumes where it stopped"
    cases = [(OSError(errno.ENOSPC, "No space left on device"), f"store {store}: cannot write (No space left on device); "
              f"free space on its disk, {again}"),
             (OSError(errno.EROFS, "Read-only file system", str(store / ".pstore-staging")),
              f"store {store}: cannot write {store / '.pstore-staging'} (Read-only file system); give a store on a writable "
              f"file system, {again}")]
    for error, message in cases:
        with pytest.raises(InputError) as raised, store_lock(store):
            raise error
        assert str(raised.value) == message
    elsewhere = OSError(errno.EACCES, "Permission denied", str(tmp_path / "input.vcf.gz"))
    with pytest.raises(OSError) as raised, store_lock(store):
        raise elsewhere
    assert raised.value is elsewhere


def test_a_full_disk_stops_enet_with_one_line_and_a_valid_store(tiny_store, tmp_path, monkeypatch):
    """`pstore enet` whose result cannot be written (the disk is full when its group is renamed into place): one line,
    exit 1, and the store still valid without that result; the re-run once there is space writes it."""
    import errno

    from performer_store import results

    store = tmp_path / "store.zarr"
    shutil.copytree(tiny_store, store)
    gene = "ENSG00000000001.1"

    def full(staging, final):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(results, "publish", full)
        output = pstore("enet", "--store", str(store), "--gene", gene, "--folds", "0", "--quiet", expect=1).output
    assert output.splitlines() == [f"Error: store {store}: cannot write (No space left on device); free space on its disk, "
                                   "then run the same command again: it resumes where it stopped"]
    assert validate_store(store, deep=True) == [] and not (store / "genes" / gene / "results" / "enet").exists()
    pstore("enet", "--store", str(store), "--gene", gene, "--folds", "0", "--quiet")
    assert (store / "genes" / gene / "results" / "enet" / "zarr.json").is_file()


def test_a_gene_index_behind_the_genes_on_disk_stops_readers_until_the_build_runs_again(tiny, tiny_store, tmp_path):
    """A build killed after publishing genes but before rewriting the gene index: `validate` lists it, and commands
    that read genes refuse with one line saying to run the build again (enet used to fit 0 genes with exit 0, info
    to say 0 genes, evaluate to end in a KeyError); the build run again refreshes the index."""
    from performer_store.store import complete_gene_ids

    first, *others = complete_gene_ids(tiny_store)
    store = tmp_path / "stale.zarr"
    pstore(*build_args(tiny, store, "--gene", first))
    for gene in others:  # what the killed build had published
        shutil.copytree(tiny_store / "genes" / gene, store / "genes" / gene)
    stale = (f"Error: store {store}: its gene index lists 1 genes but {1 + len(others)} are on disk (a `pstore build` was "
             "interrupted, or is running); run that build again (or let it finish)")
    for command in (["info", str(store)], ["enet", "--store", str(store), "--folds", "0", "--quiet"]):
        assert pstore(*command, expect=1).output.splitlines()[-1] == stale
    assert validate_store(store) == [f"gene index lists 1 genes but {1 + len(others)} are complete on disk; run `pstore "
                                     "build` again to refresh it"]
    pstore(*build_args(tiny, store, "--gene", first))
    assert list(Store(store).genes.index) == sorted([first, *others]) and validate_store(store) == []
    (store / "genes" / ".ipynb_checkpoints").mkdir()  # folders that are no gene group are no genes, as for the index
    assert list(Store(store).genes.index) == sorted([first, *others])
    shutil.rmtree(store / "genes" / others[0])  # as many folders as listed genes, but not the same ones
    shutil.copytree(tiny_store / "genes" / others[0], store / "genes" / "ENSG00000009999.1")
    assert pstore("info", str(store), expect=1).output.splitlines()[-1] == stale.replace(f"lists 1 genes but {1 + len(others)}",
                                                                                       f"lists {1 + len(others)} genes but {1 + len(others)}")
