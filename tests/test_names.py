"""Results names: a name is one safe path component, checked wherever it enters (evaluate --name, a run's
recorded name, train's --name or --out, enet --from-store --name, and `results.write_result` itself)."""

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
