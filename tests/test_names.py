"""Results names and the options that choose them: a name is one safe path component, checked wherever it enters
(evaluate/ism --name, a run's recorded name, train's --name or --out, enet --from-store --name, and
`results.write_result` itself); a copied run does not take over its original's results; options that would be
ignored are refused; an empty --genes file is an error; query uses a repeated gene once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import pstore
from performer_store import schemas
from performer_store.inputs import InputError
from performer_store.model import Performer, enformer_from_config, save_checkpoint
from performer_store.results import blank_result, read_result, result_path, write_result
from performer_store.store import Store
from performer_store.train import store_identity


def save_run(run: Path, store: Path, **meta) -> Path:
    """A run directory whose best.pt is an untrained tiny Performer of fold 0 on the store's first gene, 1,024-bp windows."""
    run.mkdir(parents=True)
    gene = Store(store).genes.index[0]
    meta = {"genes": [gene], "fold": 0, "window": 1024, "store": store_identity(Store(store)), "name": run.name, **meta}
    save_checkpoint(run / "best.pt", Performer(enformer_from_config("tiny", seed=0)).eval(), meta)
    return run


@pytest.fixture
def store(sim_store, tmp_path) -> Path:
    """A private copy of the simulated store."""
    copy = tmp_path / "store.zarr"
    shutil.copytree(sim_store, copy)
    return copy


def evaluate(store: Path, run: Path, *args: str, expect: int = 0) -> str:
    """`pstore evaluate --run` on the store's first gene; its output."""
    gene = Store(store).genes.index[0]
    return pstore("evaluate", "--store", str(store), "--run", str(run), "--gene", gene, "--device", "cpu", *args,
                  expect=expect).output


def one_line(output: str) -> str:
    """The message of a one-line 'Error: ...' output."""
    assert output.startswith("Error: ") and output.count("\n") == 1, output
    return output


def snapshot(store: Path) -> list[str]:
    """Every path under the store's genes and staging directories (what a refused command must leave as it was)."""
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if "genes" in p.parts or schemas.STAGING_DIR in p.parts)


@pytest.mark.parametrize("name", [".", "..", "a/b", "", ".hidden", "x" * 129, "a b"])
def test_evaluate_refuses_a_name_that_is_not_a_results_name_and_writes_nothing(store, tmp_path, name):
    """`evaluate --name .` used to replace the whole results directory (every model's results of the gene)."""
    run = save_run(tmp_path / "run", store)
    evaluate(store, run)
    before = snapshot(store)
    message = one_line(evaluate(store, run, "--name", name, expect=1))
    assert f"--name {name!r}: not a results name" in message
    assert snapshot(store) == before


def test_ism_refuses_a_name_that_is_not_a_results_name(store, tmp_path):
    run = save_run(tmp_path / "run", store)
    before = snapshot(store)
    output = pstore("ism", "--store", str(store), "--run", str(run), "--name", ".", "--device", "cpu", "--quiet", expect=1).output
    assert "--name '.': not a results name" in one_line(output)
    assert snapshot(store) == before


def test_a_run_recorded_under_a_bad_name_needs_name(store, tmp_path):
    """A run trained before names were checked (`--out .` recorded '') is refused under its recorded name, and
    evaluates under a --name."""
    run = save_run(tmp_path / "run", store, name="")
    message = one_line(evaluate(store, run, expect=1))
    assert "the results name recorded at training '': not a results name" in message and "give --name" in message
    evaluate(store, run, "--name", "fixed")
    assert read_result(store, Store(store).genes.index[0], "fixed") is not None


@pytest.mark.parametrize("name", [".", "..", "a/b", ""])
def test_write_result_is_the_last_line_of_defence(store, name):
    gene = Store(store).genes.index[0]
    values = blank_result({"folds": 3, "samples": len(Store(store).sample_id)})
    with pytest.raises(InputError, match="not a results name"):
        write_result(store, gene, name, "performer", [0], values)
    with pytest.raises(InputError, match="not a results name"):
        result_path(store, gene, "..")
    assert not (store / schemas.STAGING_DIR).exists()
    assert not (store / "genes" / gene / schemas.RESULTS_GROUP).exists()


@pytest.mark.parametrize("args, message", [
    (["--name", "."], "--name '.': not a results name"),
    (["--name", "enet"], "--name 'enet': reserved for a baseline"),
    (["--out-name", "lasso"], "its directory's name (the default results name) 'lasso': reserved for a baseline"),
    (["--out-name", ".."], "its directory's name (the default results name) '..': not a results name"),
])
def test_train_refuses_a_results_name_evaluate_would_refuse_before_training(sim_store, tmp_path, args, message):
    out = tmp_path / "runs" / (args[1] if args[0] == "--out-name" else "run")
    named = args if args[0] == "--name" else []
    output = pstore("train", "--store", str(sim_store), "--gene", Store(sim_store).genes.index[0], "--fold", "0",
                    "--config", "tiny", "--max-epochs", "1", "--device", "cpu", "--quiet", "--out", str(out), *named,
                    expect=1).output
    assert message in one_line(output)
    assert not (tmp_path / "runs").exists()


def test_train_refuses_out_dot_without_name(sim_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = pstore("train", "--store", str(sim_store), "--gene", Store(sim_store).genes.index[0], "--fold", "0",
                    "--config", "tiny", "--max-epochs", "1", "--device", "cpu", "--quiet", "--out", ".", expect=1).output
    assert "--out .: its directory's name (the default results name) '': not a results name" in one_line(output)
    assert list(tmp_path.iterdir()) == []


def test_enet_from_store_refuses_a_bad_name(tiny_store, sim_store):
    output = pstore("enet", "--store", str(tiny_store), "--from-store", str(sim_store), "--name", "a/b", expect=1).output
    assert "--name 'a/b': not a results name" in one_line(output)


def test_a_copied_run_keeps_off_its_originals_results_and_a_moved_one_takes_them(store, tmp_path):
    """cp -r A B: B records A's name; evaluating B under it would replace A's results while A is there. With
    --name B the two are kept; a run moved away from A's path (A gone) evaluates under the recorded name."""
    gene = Store(store).genes.index[0]
    original = save_run(tmp_path / "A", store)
    evaluate(store, original)
    copy = tmp_path / "B"
    shutil.copytree(original, copy)
    message = one_line(evaluate(store, copy, expect=1))
    assert f"genes/{gene}/results/A fold 0 was made by run {original.resolve()}, which still exists" in message
    assert "give --name B to keep both, or --name A to replace them" in message
    assert read_result(store, gene, "A")[1]["runs"] == {"0": str(original.resolve())}
    evaluate(store, copy, "--name", "B")
    assert read_result(store, gene, "A")[1]["runs"] == {"0": str(original.resolve())}
    assert read_result(store, gene, "B")[1]["runs"] == {"0": str(copy.resolve())}
    moved = tmp_path / "C"
    original.rename(moved)
    evaluate(store, moved)
    assert read_result(store, gene, "A")[1]["runs"] == {"0": str(moved.resolve())}


def test_a_hop_result_replaces_another_runs_hogp_under_a_shared_name(store, tmp_path):
    """Single-gene runs sharing a name: one evaluated on every gene leaves HOGP results that the run of that
    gene replaces with its own (the copy check does not stop it)."""
    first, second = Store(store).genes.index[:2]
    wide = save_run(tmp_path / "wide", store, name="shared")
    pstore("evaluate", "--store", str(store), "--run", str(wide), "--gene", first, "--gene", second, "--device", "cpu")
    own = save_run(tmp_path / "own", store, name="shared", genes=[second])
    pstore("evaluate", "--store", str(store), "--run", str(own), "--gene", second, "--device", "cpu")
    attrs = read_result(store, second, "shared")[1]
    assert attrs["runs"] == {"0": str(own.resolve())} and attrs["settings"] == {"0": "HOP"}


@pytest.mark.parametrize("command", ["evaluate", "ism"])
@pytest.mark.parametrize("option, value", [("--window", "512"), ("--weights", "/nonexistent"), ("--track", "3"),
                                           ("--config", "small")])
def test_base_enformer_options_are_refused_with_a_run(store, tmp_path, command, option, value):
    run = save_run(tmp_path / "run", store)
    before = snapshot(store)
    output = pstore(command, "--store", str(store), "--run", str(run), option, value, "--device", "cpu", expect=1).output
    assert f"{option} applies to --base only" in one_line(output) and f"drop {option}" in output
    assert snapshot(store) == before


@pytest.mark.parametrize("command", ["evaluate", "ism"])
def test_name_is_refused_with_base(store, command):
    before = snapshot(store)
    output = pstore(command, "--store", str(store), "--base", "--config", "tiny", "--name", "foo", "--device", "cpu",
                    expect=1).output
    assert "--name applies to --run only" in one_line(output)
    assert snapshot(store) == before


def test_reference_writes_under_the_name_given(store, tmp_path):
    run = save_run(tmp_path / "run", store)
    evaluate(store, run, "--reference", "--name", "foo")
    gene = Store(store).genes.index[0]
    assert read_result(store, gene, "foo", schemas.REFERENCE_GROUP) is not None
    assert read_result(store, gene, "run", schemas.REFERENCE_GROUP) is None


def test_ism_name_gives_the_scores_another_name(store, tmp_path):
    run = save_run(tmp_path / "run", store)
    gene = Store(store).genes.index[0]
    pstore("ism", "--store", str(store), "--run", str(run), "--gene", gene, "--name", "other", "--device", "cpu", "--quiet")
    assert read_result(store, gene, "other", schemas.ISM_GROUP) is not None
    assert read_result(store, gene, "run", schemas.ISM_GROUP) is None


@pytest.mark.parametrize("genes_file", ["empty", "comments", "/dev/null"])
@pytest.mark.parametrize("command", ["evaluate", "ism", "report", "train", "build"])
def test_an_empty_gene_list_is_refused_everywhere(store, tmp_path, tiny, command, genes_file):
    """An empty --genes file used to mean every gene to evaluate, ism, report and build (train refused it)."""
    path = Path(genes_file) if genes_file.startswith("/") else tmp_path / "genes.txt"
    if not genes_file.startswith("/"):
        path.write_text("" if genes_file == "empty" else "# nothing here\n\n")
    run = save_run(tmp_path / "run", store)
    args = {"evaluate": ["evaluate", "--store", str(store), "--run", str(run)],
            "ism": ["ism", "--store", str(store), "--run", str(run)],
            "report": ["report", "--store", str(store), "--out", str(tmp_path / "report")],
            "train": ["train", "--store", str(store), "--fold", "0", "--config", "tiny", "--out", str(tmp_path / "trained")],
            "build": ["build", "--store", str(tmp_path / "built.zarr"), "--fasta", str(tiny.fasta), "--vcf", str(tiny.vcf),
                      "--gtf", str(tiny.gtf), "--expression", str(tiny.expression), "--tissue", "whole_blood"]}[command]
    before = snapshot(store)
    output = pstore(*args, "--genes", str(path), expect=1).output
    assert f"--genes {path}: empty gene list" in one_line(output)
    assert snapshot(store) == before
    assert not {"report", "trained", "built.zarr"} & {p.name for p in tmp_path.iterdir()}


def test_query_uses_a_repeated_gene_once(tiny_store, tmp_path):
    gene = Store(tiny_store).genes.index[0]
    once, twice = tmp_path / "once.tsv", tmp_path / "twice.tsv"
    pstore("query", "--store", str(tiny_store), "--gene", gene, "--out", str(once))
    output = pstore("query", "--store", str(tiny_store), "--gene", gene, "--gene", gene, "--out", str(twice)).output
    assert "Warning: 1 gene(s) given more than once" in output
    assert twice.read_text() == once.read_text() and len(once.read_text().splitlines()) > 1


def test_a_gene_list_from_a_pipe_is_read(tmp_path):
    """`--genes <(...)` (a pipe, not a regular file) is read like a file, not refused as missing."""
    import os

    from performer_store.cli import _gene_list

    read, write = os.pipe()
    os.write(write, b"ENSG1.1\n# note\nENSG2.1\n")
    os.close(write)
    try:
        assert _gene_list((), Path(f"/dev/fd/{read}")) == ("ENSG1.1", "ENSG2.1")
    finally:
        os.close(read)
