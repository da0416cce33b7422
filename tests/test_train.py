"""Training: the loss, resume after a kill, guard rails, multi-process DDP (gloo), evaluation into the store."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from enformer_pytorch import Enformer
from scipy.stats import pearsonr
from sklearn.metrics import r2_score

from conftest import pstore
from performer_store.inputs import InputError
from performer_store.loader import BatchLoader, GeneReader, epoch_blocks, micro_batches, rank_blocks, split_rows, train_people
from performer_store.model import CONFIGS, Performer, _prepare
from performer_store.pipeline import Run, evaluated
from performer_store.results import read_result
from performer_store.store import Store
from performer_store.train import Distributed, TrainConfig, TrainingError, pairwise_loss, run_epoch, store_identity, train



@pytest.mark.parametrize("missing", [[], [2, 6], [0, 1, 2, 3, 4, 5, 7, 8]])
def test_pairwise_loss_against_a_double_loop(missing):
    """0.5 MSE + 0.5 mean over i<j of squared difference errors, NaN targets left out (one left: no pairs)."""
    rng = np.random.default_rng(0)
    prediction, target = rng.normal(size=9), rng.normal(size=9)
    target[missing] = np.nan
    keep = ~np.isnan(target)
    p, t = prediction[keep], target[keep]
    pairs = [((p[i] - p[j]) - (t[i] - t[j])) ** 2 for i in range(len(p)) for j in range(i + 1, len(p))]
    expected = 0.5 * np.mean((p - t) ** 2) + 0.5 * (np.mean(pairs) if pairs else 0.0)
    loss = pairwise_loss(torch.tensor(prediction), torch.tensor(target))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def genes(store: Path) -> tuple[str, ...]:
    """The first two genes of a store."""
    return tuple(Store(store).genes.index[:2])


def tiny_config(store: Path, out: Path, **overrides) -> TrainConfig:
    """A short run: 2 genes, micro-batches of 8, blocks of 16 people, 3 epochs."""
    values = dict(store=store, genes=genes(store), fold=0, out=out, config="tiny", lr=1e-3, micro_batch=8, accumulation=2,
                  max_epochs=3, patience=10, progress=False, device="cpu")
    return TrainConfig(**{**values, **overrides})


def history(run: Path) -> list[dict]:
    """metrics.jsonl without timings."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (run / "metrics.jsonl").read_text().splitlines()]


def same_weights(first: Path, second: Path) -> bool:
    """Two checkpoints hold identical tensors."""
    a = torch.load(first, weights_only=True)["state_dict"]
    b = torch.load(second, weights_only=True)["state_dict"]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(sim_store, tmp_path_factory) -> Path:
    """A 3-epoch run on the simulated store."""
    run = tmp_path_factory.mktemp("runs") / "whole"
    train(tiny_config(sim_store, run))
    return run


def test_run_writes_checkpoints_and_log(uninterrupted):
    entries = history(uninterrupted)
    assert [e["epoch"] for e in entries] == [0, 1, 2]
    assert all(np.isfinite(e["train_loss"]) and np.isfinite(e["tune_r2"]) for e in entries)
    assert (uninterrupted / "best.pt").is_file() and (uninterrupted / "last.pt").is_file()
    best = max(range(3), key=lambda i: (entries[i]["tune_r2"], -i))
    assert entries[-1]["best_epoch"] == best


def test_resume_equals_an_uninterrupted_run(sim_store, uninterrupted, tmp_path):
    """Stopping after 1 epoch and resuming to 3 gives the same weights and history (deterministic on CPU)."""
    run = tmp_path / "resumed"
    train(tiny_config(sim_store, run, max_epochs=1))
    train(tiny_config(sim_store, run, resume=True))
    assert history(run) == history(uninterrupted)
    assert same_weights(run / "last.pt", uninterrupted / "last.pt")
    assert same_weights(run / "best.pt", uninterrupted / "best.pt")


def test_resume_restores_a_log_that_a_kill_left_an_epoch_behind(sim_store, uninterrupted, tmp_path):
    """A kill between the final epoch's save of last.pt and of metrics.jsonl leaves the log one line short; the
    --resume that finds the run finished writes it whole again (it used to exit with the epoch missing for good)."""
    run = tmp_path / "short_log"
    shutil.copytree(uninterrupted, run)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:-1]))
    train(tiny_config(sim_store, run, name="whole", resume=True))
    assert history(run) == history(uninterrupted)


def test_loader_workers_do_not_change_the_run(sim_store, uninterrupted, tmp_path):
    """A run with a DataLoader worker process ends with the weights and history of the in-process one (so
    `--resume` may change --workers)."""
    run = tmp_path / "worker"
    train(tiny_config(sim_store, run, workers=1))
    assert history(run) == history(uninterrupted)
    assert same_weights(run / "last.pt", uninterrupted / "last.pt")
    assert same_weights(run / "best.pt", uninterrupted / "best.pt")


def train_command(store: Path, run: Path) -> list[str]:
    """`pstore train` of the short run, as a separate process."""
    first, second = genes(store)
    return [sys.executable, "-m", "performer_store", "train", "--store", str(store), "--gene", first, "--gene", second,
            "--fold", "0", "--out", str(run), "--config", "tiny", "--lr", "1e-3", "--micro-batch", "8", "--accumulation", "2",
            "--max-epochs", "3", "--patience", "10", "--device", "cpu", "--quiet"]


def test_killed_run_resumes_to_the_same_result(sim_store, tmp_path):
    """SIGKILL during the second epoch; `--resume` ends with the weights of an uninterrupted run (both commands
    run the same way: CPU kernels are deterministic for a given process setup, not across setups)."""
    whole = tmp_path / "whole"
    subprocess.run(train_command(sim_store, whole), check=True, capture_output=True)
    run = tmp_path / "killed"
    args = train_command(sim_store, run)
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = run / "metrics.jsonl"
    while process.poll() is None and not (log.is_file() and log.read_text().count("\n") >= 1):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and log.read_text().count("\n") < 3
    subprocess.run(args + ["--resume"], check=True, capture_output=True)
    assert history(run) == history(whole)
    assert same_weights(run / "last.pt", whole / "last.pt") and same_weights(run / "best.pt", whole / "best.pt")


def test_resume_refuses_another_run(sim_store, uninterrupted, tmp_path):
    run = tmp_path / "other"
    shutil.copytree(uninterrupted, run)
    with pytest.raises(InputError, match="was made with fold 0, this run asks 1"):
        train(tiny_config(sim_store, run, fold=1, resume=True))
    with pytest.raises(InputError, match=f"was made with name '{uninterrupted.name}', this run asks 'other'; give --name '{uninterrupted.name}' to resume a moved run"):
        train(tiny_config(sim_store, run, resume=True))
    train(tiny_config(sim_store, run, name=uninterrupted.name, resume=True))  # a finished run: returns at once
    assert history(run) == history(uninterrupted) and same_weights(run / "best.pt", uninterrupted / "best.pt")


def test_checkpoints_from_before_newer_keys_still_resume(sim_store, uninterrupted, tmp_path):
    """A last.pt written before train_fraction/backbone/mode existed resumes as what it was made with
    (1.0, enformer, finetune), and is refused for anything else."""
    run = tmp_path / "legacy"
    shutil.copytree(uninterrupted, run)
    payload = torch.load(run / "last.pt", weights_only=True)
    meta = json.loads(payload["meta"])
    payload["meta"] = json.dumps({k: v for k, v in meta.items() if k not in ("train_fraction", "backbone", "mode")})
    torch.save(payload, run / "last.pt")
    assert train(tiny_config(sim_store, run, name=meta["name"], resume=True)).epoch == json.loads(payload["state"])["epoch"]
    with pytest.raises(InputError, match="was made with train_fraction 1.0, this run asks 0.5"):
        train(tiny_config(sim_store, run, name=meta["name"], train_fraction=0.5, resume=True))


def test_non_finite_loss_names_gene_and_step(sim_store, tmp_path):
    """An infinite target stops training with the gene and optimizer step named."""
    store = tmp_path / "inf.zarr"
    shutil.copytree(sim_store, store)
    gene = genes(store)[1]
    target = zarr.open_array(str(store / "genes" / gene / "target"), mode="r+")
    target[:] = np.full(target.shape, np.inf, dtype=np.float32)
    with pytest.raises(TrainingError, match=f"gene {gene} at optimizer step 1 of"):
        train(tiny_config(store, tmp_path / "run", genes=(gene,)))


def test_non_finite_loss_stops_before_its_step(sim_store, tmp_path):
    """A block of a gene with infinite targets after two good blocks: the error names its step; the weights keep steps 1-2."""
    store = tmp_path / "inf.zarr"
    shutil.copytree(sim_store, store)
    good, bad = genes(store)
    target = zarr.open_array(str(store / "genes" / bad / "target"), mode="r+")
    target[:] = np.full(target.shape, np.inf, dtype=np.float32)
    config = tiny_config(store, tmp_path)
    blocks = [(g, split_rows(Store(store), g, 0, "train")[:16]) for g in (good, good, bad)]
    model = ddp_test_model()
    loader = BatchLoader(GeneReader(store))
    run_epoch(model, sgd(model), loader, micro_batches(blocks[:2], config.micro_batch), config, Distributed("cpu"))
    after_two = {k: v.clone() for k, v in model.state_dict().items()}
    model = ddp_test_model()
    with pytest.raises(TrainingError, match=f"loss is (nan|inf) on gene {bad} at optimizer step 3 of 3"):
        run_epoch(model, sgd(model), loader, micro_batches(blocks, config.micro_batch), config, Distributed("cpu"))
    assert all(torch.equal(v, after_two[k]) for k, v in model.state_dict().items())


def test_a_run_without_any_tune_r2_says_so(tiny_store, tmp_path):
    """The tiny cohort has one tune person, so no epoch has a tune R2 and no best.pt: the run says so, exits 1."""
    run = tmp_path / "run"
    result = pstore("train", "--store", str(tiny_store), "--gene", genes(tiny_store)[0], "--fold", "0", "--config", "tiny",
                    "--out", str(run), "--micro-batch", "4", "--accumulation", "2", "--max-epochs", "1", "--device", "cpu",
                    "--quiet", expect=1)
    assert "none with a finite mean tune R2" in result.output and "last.pt holds the final weights" in result.output
    assert (run / "last.pt").is_file() and not (run / "best.pt").exists()


def test_window_must_fit_the_store(sim_store, uninterrupted, tmp_path):
    """Training at a wider window than the store's is refused; so is evaluating such a run."""
    with pytest.raises(InputError, match="windows are 1024 bp"):
        train(tiny_config(sim_store, tmp_path / "wide", window=2048))
    meta_run = tmp_path / "wide_run"
    shutil.copytree(uninterrupted, meta_run)
    payload = torch.load(meta_run / "best.pt", weights_only=True)
    meta = json.loads(payload["meta"])
    payload["meta"] = json.dumps({**meta, "window": 2048})
    torch.save(payload, meta_run / "best.pt")
    message = pstore("evaluate", "--store", str(sim_store), "--run", str(meta_run), expect=1).output
    assert "reads 2048 bp windows" in message and "--window 2048" in message


def test_evaluate_writes_predictions_and_metrics(sim_store, uninterrupted, tmp_path):
    """Predictions of the fold's tune/test people land in the store; r and R2 match scipy/sklearn on them."""
    store_path = tmp_path / "eval.zarr"
    shutil.copytree(sim_store, store_path)
    output = pstore("evaluate", "--store", str(store_path), "--run", str(uninterrupted), "--device", "cpu").output
    assert "HOP: 2 genes" in output and "HOGP: 1 genes" in output
    store = Store(store_path)
    for gene in store.genes.index:
        arrays, attrs = read_result(store_path, gene, "whole")
        assert attrs["kind"] == "performer" and attrs["folds"] == [0]
        held = np.concatenate([split_rows(store, gene, 0, s) for s in ("tune", "test")])
        assert np.isfinite(arrays["prediction"][0, held]).all()
        assert np.isnan(np.delete(arrays["prediction"][0], held)).all() and np.isnan(arrays["prediction"][1:]).all()
        test = split_rows(store, gene, 0, "test")
        target = store.gene(gene)["target"][:]
        prediction, test_target = arrays["prediction"][0, test].astype(np.float64), target[test].astype(np.float64)
        assert arrays["r2"][0] == pytest.approx(r2_score(test_target, prediction), abs=1e-6)
        expected_r = pearsonr(prediction, test_target).statistic if np.ptp(prediction) > 0 else np.nan  # scipy: NaN
        np.testing.assert_allclose(arrays["pearson_r"][0], expected_r, atol=1e-5, equal_nan=True)
        assert list(arrays["status"]) == ["ok", "not run", "not run"]
    info = pstore("info", str(store_path)).output
    assert "models (test-set metrics" in info and re.search(r"whole\s+performer\s+3\s+0\s", info)


def test_a_run_cannot_replace_another_runs_own_gene_result(sim_store, tmp_path):
    """Single-gene runs sharing a name: evaluating one on every gene would put its held-out-gene prediction
    where the other run's own-gene result was; it is refused, and the result stays the other run's."""
    store_path = tmp_path / "eval.zarr"
    shutil.copytree(sim_store, store_path)
    first, second = genes(store_path)
    runs = {}
    for gene in (first, second):
        runs[gene] = tmp_path / gene
        train(tiny_config(store_path, runs[gene], genes=(gene,), name="shared", max_epochs=1))
    evaluate = ("evaluate", "--store", str(store_path), "--device", "cpu", "--run")
    pstore(*evaluate, str(runs[first]), "--gene", first)
    result = pstore(*evaluate, str(runs[second]), expect=1)
    assert f"gene {first} fold 0 holds result 'shared' of run {runs[first].resolve()}, which trained on it" in result.output
    assert read_result(store_path, first, "shared")[1]["runs"]["0"] == str(runs[first].resolve())
    pstore(*evaluate, str(runs[second]), "--gene", second)
    pstore(*evaluate, str(runs[first]), expect=1)  # now the other way round
    assert read_result(store_path, second, "shared")[1]["runs"]["0"] == str(runs[second].resolve())
    assert read_result(store_path, second, "shared")[1]["settings"]["0"] == "HOP"


def test_a_result_goes_stale_when_the_best_checkpoint_moves(sim_store, tmp_path):
    """`pstore run` re-evaluates a run whose best.pt was saved again after its result (resumed training that
    found a better epoch): the result records the checkpoint's save, and a new save no longer matches it."""
    store_path = tmp_path / "stale.zarr"
    shutil.copytree(sim_store, store_path)
    gene = genes(store_path)[0]
    out = tmp_path / "run"
    train(tiny_config(store_path, out, genes=(gene,), name="performer", max_epochs=1))
    run = Run(out, "performer", (gene,), 0)
    assert not evaluated(store_path, run, gene)
    pstore("evaluate", "--store", str(store_path), "--device", "cpu", "--run", str(out), "--gene", gene)
    assert evaluated(store_path, run, gene)
    saved = (out / "best.pt").stat()
    os.utime(out / "best.pt", ns=(saved.st_atime_ns, saved.st_mtime_ns + 10**9))  # as a later save would
    assert not evaluated(store_path, run, gene)
    pstore("evaluate", "--store", str(store_path), "--device", "cpu", "--run", str(out), "--gene", gene)
    assert evaluated(store_path, run, gene)
    assert read_result(store_path, gene, "performer")[1]["checkpoints"]["0"] == f"{saved.st_mtime_ns + 10**9}:{saved.st_size}"


def test_a_store_rebuilt_from_the_same_inputs_keeps_its_runs(sim_store, tmp_path):
    """`pstore build --force` from the same inputs and seed gives the same people, splits and identity, so a run
    trained before is still scored HOP there (not as another cohort); another seed gives another identity."""
    inputs = {role: found["path"] for role, found in Store(sim_store).attrs["provenance"]["inputs"].items()}
    build = ("build", "--fasta", inputs["fasta"], "--vcf", inputs["vcf"], "--gtf", inputs["gtf"], "--expression",
             inputs["expression"], "--tissue", "whole_blood", "--window", "1024", "--quiet", "--store")
    store_path = tmp_path / "rebuilt.zarr"
    shutil.copytree(sim_store, store_path)
    gene = genes(store_path)[0]
    train(tiny_config(store_path, tmp_path / "run", genes=(gene,), max_epochs=1))
    pstore(*build, str(store_path), "--force")
    assert store_identity(Store(store_path)) == store_identity(Store(sim_store))
    output = pstore("evaluate", "--store", str(store_path), "--device", "cpu", "--run", str(tmp_path / "run")).output
    assert "cross" not in output and read_result(store_path, gene, "run")[1]["settings"] == {"0": "HOP"}
    pstore(*build, str(tmp_path / "seed2.zarr"), "--seed", "2", "--gene", gene)
    assert store_identity(Store(tmp_path / "seed2.zarr")) != store_identity(Store(sim_store))


def test_base_enformer_is_scored_on_every_fold(sim_store, tmp_path):
    """Base Enformer (CAGE track 4950, 3 centre bins) predicts every person; each fold gets its people."""
    store_path = tmp_path / "base.zarr"
    shutil.copytree(sim_store, store_path)
    pstore("evaluate", "--store", str(store_path), "--base", "--config", "tiny", "--device", "cpu")
    store = Store(store_path)
    gene = genes(store_path)[0]
    arrays, attrs = read_result(store_path, gene, "enformer")
    assert attrs["track"] == 4950 and attrs["folds"] == [0, 1, 2]
    for fold in range(3):
        held = np.concatenate([split_rows(store, gene, fold, s) for s in ("tune", "test")])
        assert np.isfinite(arrays["prediction"][fold, held]).all()


def _ddp_rank(rank: int, world_size: int, store: str, port: int, out: str) -> None:
    """One gloo rank: one optimizer step over its whole block; rank 0 saves the weights after the step."""
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed = Distributed("cpu")
    config = tiny_config(Path(store), Path(out))
    model = ddp_test_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    batches = micro_batches(rank_blocks(two_blocks(Path(store)), rank, world_size), config.micro_batch)
    genes = Store(Path(store)).genes.index
    for batch in batches:  # every micro-batch holds people of one gene, from that gene's train split
        assert batch.gene_id in genes and len(set(batch.rows)) == len(batch.rows)
    run_epoch(ddp, sgd(model), BatchLoader(GeneReader(Path(store))), batches, config, distributed)
    if rank == 0:
        torch.save(model.state_dict(), Path(out) / "ddp.pt")
    del ddp  # its reducer holds the process group: drop it before destroying the group
    distributed.close()


def sgd(model: Performer) -> torch.optim.Optimizer:
    """Plain SGD with lr 1: the step is the (clipped) gradient itself, so weights compare gradients.
    (Adam's first step is lr x sign(gradient), which flips on rounding noise for near-zero gradients.)"""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)


def ddp_test_model() -> Performer:
    """A tiny Performer without any dropout, so that ranks and a single process compute the same thing."""
    torch.manual_seed(0)
    enformer = Enformer.from_hparams(**{**CONFIGS["tiny"], "attn_dropout": 0.0, "pos_dropout": 0.0}, target_length=-1)
    return Performer(_prepare(enformer))


def two_blocks(store: Path) -> list:
    """The first two blocks of epoch 0 of the two tiny genes."""
    s = Store(store)
    rows = {g: split_rows(s, g, 0, "train") for g in genes(store)}
    return epoch_blocks(rows, 0, 0, 16)[:2]


def test_ddp_on_two_gloo_processes_equals_one_process(sim_store, tmp_path):
    """2 ranks x 1 block with DDP's gradient averaging = one process stepping once on both blocks' mean gradient."""
    import torch.multiprocessing as mp

    port = 29500 + os.getpid() % 1000
    mp.spawn(_ddp_rank, args=(2, str(sim_store), port, str(tmp_path)), nprocs=2, join=True)
    single = ddp_test_model()
    config = tiny_config(sim_store, tmp_path)
    blocks = two_blocks(sim_store)
    both = micro_batches([(blocks[0][0], blocks[0][1])], config.micro_batch) + micro_batches([(blocks[1][0], blocks[1][1])], config.micro_batch)
    parts = len(both)
    both = [b.__class__(b.gene_id, b.rows, i == parts - 1, parts) for i, b in enumerate(both)]
    before = {k: v.clone() for k, v in single.state_dict().items()}
    run_epoch(single, sgd(single), BatchLoader(GeneReader(sim_store)), both, config, Distributed("cpu"))
    distributed_state = torch.load(tmp_path / "ddp.pt", weights_only=True)
    moved = 0
    for name, value in single.state_dict().items():
        torch.testing.assert_close(distributed_state[name], value, rtol=1e-5, atol=1e-6, msg=name)
        moved += not torch.equal(value, before[name])
    assert moved > 50  # the step changed the weights, so equal weights mean equal gradients


def test_train_fraction_takes_nested_shares_of_the_train_people(sim_store, tmp_path, monkeypatch):
    store = Store(sim_store)
    train_split = np.flatnonzero(store.split(0) == 0)
    shares = {f: set(train_people(store, 0, f, seed=3)) for f in (0.25, 0.5, 0.75, 1.0)}
    assert shares[0.25] <= shares[0.5] <= shares[0.75] <= shares[1.0] == set(train_split)
    assert [len(shares[f]) for f in (0.25, 0.5)] == [round(0.25 * len(train_split)), round(0.5 * len(train_split))]
    assert shares[0.5] != set(train_people(store, 0, 0.5, seed=4))  # another seed, another share
    seen = []
    monkeypatch.setattr("performer_store.train.epoch_blocks", lambda rows, *a: seen.append(rows) or epoch_blocks(rows, *a))
    train(tiny_config(sim_store, tmp_path / "half", train_fraction=0.5, seed=3, max_epochs=1))
    for gene, rows in seen[0].items():  # only the half's people with a target, every one of them
        assert set(rows) == shares[0.5] & set(split_rows(store, gene, 0, "train"))
    assert json.loads((tmp_path / "half" / "run.json").read_text())["train_fraction"] == 0.5


def test_refused_resume_leaves_the_run_as_it_was(sim_store, uninterrupted, tmp_path):
    """A --resume refused for another fold rewrites nothing (run.json was written before the check)."""
    run = tmp_path / "kept"
    shutil.copytree(uninterrupted, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(InputError, match="was made with fold 0"):
        train(tiny_config(sim_store, run, fold=1, name="whole", resume=True))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_failed_start_leaves_no_directory(sim_store, tmp_path):
    """Arguments refused before training (no --config nor --weights) leave no --out behind."""
    run = tmp_path / "never"
    with pytest.raises(InputError, match="give exactly one of --config"):
        train(tiny_config(sim_store, run, config=None))
    assert not run.exists()


def test_a_second_trainer_of_a_run_is_refused_and_partial_files_of_killed_ones_are_deleted(sim_store, uninterrupted, tmp_path):
    """While one `pstore train` holds a run directory, another (a --resume started twice) is refused with one line and
    writes nothing; the partial checkpoint a killed save left ('.last.pt.<pid>.tmp', as large as the model) is deleted
    by the next run of it. (Both trainers used to run every remaining epoch and replace each other's checkpoints.)"""
    import fcntl

    from performer_store.results import temporary_path

    run = tmp_path / "busy"
    shutil.copytree(uninterrupted, run)
    partial = temporary_path(run / "last.pt").with_name(".last.pt.4194304.tmp")
    partial.write_bytes(b"half a checkpoint")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    held = os.open(run, os.O_RDONLY)  # the lock another trainer holds
    fcntl.flock(held, fcntl.LOCK_EX)
    with pytest.raises(InputError) as refused:
        train(tiny_config(sim_store, run, name="whole", max_epochs=4, resume=True))
    os.close(held)
    assert str(refused.value) == f"--out {run}: another pstore train is running in it; wait for it or stop it"
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    train(tiny_config(sim_store, run, name="whole", resume=True))
    assert not partial.exists() and history(run) == history(uninterrupted)


def test_out_holding_a_run_is_not_overwritten(sim_store, uninterrupted, tmp_path):
    run = tmp_path / "taken"
    shutil.copytree(uninterrupted, run)
    before = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(InputError, match="holds a run; pass --resume to continue it or choose another --out"):
        train(tiny_config(sim_store, run, name="whole", max_epochs=1))
    assert (run / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize("change, option", [({"lr": 0.5}, "--lr"), ({"config": "small"}, "--config"),
                                            ({"clip": 1.0}, "--clip"), ({"read_path": "stored"}, "--read-path")])
def test_resume_refuses_other_training_arguments(sim_store, uninterrupted, tmp_path, change, option):
    """Arguments the checkpoint's optimizer or weights would silently override are refused on --resume."""
    run = tmp_path / "args"
    shutil.copytree(uninterrupted, run)
    before = (run / "run.json").read_bytes()
    with pytest.raises(InputError, match=f"was made with {option} "):
        train(tiny_config(sim_store, run, name="whole", resume=True, **change))
    assert (run / "run.json").read_bytes() == before


def test_train_fraction_leaving_no_train_people_is_refused(sim_store, tmp_path):
    gene = genes(sim_store)[0]
    with pytest.raises(InputError, match=f"gene {gene}: --train-fraction 0.001 leaves no train people"):
        train(tiny_config(sim_store, tmp_path / "none", train_fraction=0.001))
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("args", [["--device", "gpu"], ["--window", "-256"], ["--clip", "0"], ["--clip", "-1"], ["--clip", "nan"],
                                  ["--clip", "inf"], ["--lr", "nan"], ["--lr", "inf"], ["--train-fraction", "nan"]])
def test_bad_train_options_are_one_line(sim_store, tmp_path, args):
    result = pstore("train", "--store", str(sim_store), "--gene", genes(sim_store)[0], "--fold", "0", "--config", "tiny",
                    "--out", str(tmp_path / "run"), *args, expect=2)
    assert "Traceback" not in result.output and "Invalid value" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("lr", ["1e38", "1e300", "1.01"])
def test_a_learning_rate_above_1_is_one_line(sim_store, tmp_path, lr):
    """AdamW moves each weight by about lr per step: above 1 nothing trains, and from ~3.4e37 (its first step, lr / 0.1,
    overflows float32) torch raised a traceback. Refused before anything is written."""
    result = pstore("train", "--store", str(sim_store), "--gene", genes(sim_store)[0], "--fold", "0", "--config", "tiny",
                    "--out", str(tmp_path / "run"), "--lr", lr, expect=2)
    assert result.output.strip().splitlines()[-1] == f"Error: Invalid value for '--lr': {float(lr)} is not in the range 0<x<=1."
    assert not (tmp_path / "run").exists()


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:2000])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "list":
        torch.save([1, 2], path)
    else:
        torch.save({"format": 1}, path)


@pytest.mark.parametrize("how", ["truncated", "empty", "list", "no_keys"])
def test_damaged_checkpoints_are_one_line(sim_store, uninterrupted, tmp_path, how):
    """evaluate --run, ism --run and train --resume name a damaged best.pt/last.pt instead of a traceback."""
    run = tmp_path / "whole"
    shutil.copytree(uninterrupted, run)
    _damage(run / "best.pt", how)
    _damage(run / "last.pt", how)
    for args in (["evaluate", "--store", str(sim_store), "--run", str(run), "--device", "cpu"],
                 ["ism", "--store", str(sim_store), "--run", str(run), "--device", "cpu", "--quiet"]):
        output = pstore(*args, expect=1).output
        assert f"checkpoint {run / 'best.pt'} is damaged or not a pstore checkpoint" in output and "Traceback" not in output
    with pytest.raises(InputError, match="is damaged or not a pstore checkpoint"):
        train(tiny_config(sim_store, run, resume=True))


def test_base_track_out_of_range_is_one_line(sim_store):
    output = pstore("evaluate", "--store", str(sim_store), "--base", "--config", "tiny", "--track", "99999", "--device", "cpu", expect=1).output
    assert "--track 99999: base Enformer has 5313 human tracks" in output
    assert "Invalid value" in pstore("evaluate", "--store", str(sim_store), "--base", "--config", "tiny", "--track", "-1", expect=2).output


def test_resume_of_an_older_checkpoint_checks_run_json(sim_store, uninterrupted, tmp_path):
    """A last.pt written before lr/config/clip/read-path were recorded is checked against its run.json's arguments."""
    run = tmp_path / "older"
    shutil.copytree(uninterrupted, run)
    payload = torch.load(run / "last.pt", weights_only=True)
    meta = json.loads(payload["meta"])
    payload["meta"] = json.dumps({k: v for k, v in meta.items() if k not in ("lr", "model_config", "weights", "clip", "read_path")})
    torch.save(payload, run / "last.pt")
    with pytest.raises(InputError, match="was made with --lr 0.001, this run asks 0.5"):
        train(tiny_config(sim_store, run, name="whole", lr=0.5, resume=True))
    (run / "run.json").unlink()  # no record at all: not checked, as before
    assert train(tiny_config(sim_store, run, name="whole", lr=0.5, resume=True)).epoch == 3


def test_resume_without_last_pt_keeps_the_run(sim_store, uninterrupted, tmp_path):
    """last.pt lost: --resume of other settings is refused by run.json; of the same settings it is refused too, as a
    restart would overwrite best.pt and metrics.jsonl. Nothing in --out changes."""
    run = tmp_path / "lost"
    shutil.copytree(uninterrupted, run)
    (run / "last.pt").unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(InputError, match=f"{run / 'run.json'}: was made with fold 0, this run asks 1; use another --out"):
        train(tiny_config(sim_store, run, fold=1, config="small", name="whole", resume=True))
    with pytest.raises(InputError, match="--resume needs last.pt, which is missing, and starting afresh would overwrite the run's "
                                         "best.pt and metrics.jsonl; move the folder away or choose another --out"):
        train(tiny_config(sim_store, run, name="whole", resume=True))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_of_a_run_killed_in_its_first_epoch_starts_afresh(sim_store, uninterrupted, tmp_path):
    """Only run.json (killed before the first epoch ended): --resume with its settings trains from the start, with
    others it is refused."""
    run = tmp_path / "early"
    run.mkdir()
    shutil.copy(uninterrupted / "run.json", run / "run.json")
    with pytest.raises(InputError, match="was made with --lr 0.001, this run asks 0.5"):
        train(tiny_config(sim_store, run, name="whole", lr=0.5, resume=True))
    assert [p.name for p in run.iterdir()] == ["run.json"]
    train(tiny_config(sim_store, run, name="whole", resume=True))
    assert history(run) == history(uninterrupted) and same_weights(run / "best.pt", uninterrupted / "best.pt")


def test_a_step_making_weights_non_finite_names_gene_and_step(sim_store, tmp_path):
    """An optimizer step that turns weights inf or nan stops the epoch at once, naming that step and its gene."""
    config = tiny_config(sim_store, tmp_path)
    first, second = genes(sim_store)
    blocks = [(g, split_rows(Store(sim_store), g, 0, "train")[:16]) for g in (first, second, first)]
    model = ddp_test_model()
    optimizer = sgd(model)
    optimizer.param_groups[0]["lr"] = math.inf
    with pytest.raises(TrainingError, match=f"weights are not finite after optimizer step 1 of 3 \\(gene {first}\\); the weights diverged: lower --lr"):
        run_epoch(model, optimizer, BatchLoader(GeneReader(sim_store)), micro_batches(blocks, config.micro_batch), config, Distributed("cpu"))


def test_diverged_tune_predictions_are_one_line_and_leave_no_finished_run(sim_store, tmp_path):
    """lr 1e10 and one optimizer step an epoch: finite but huge weights predict nan for the tune people; one line
    naming gene and epoch; --out holds only run.json, and a resume stops the same way. (The library, not the CLI,
    whose --lr stops at 1: with lr <= 1 the tiny model takes many epochs to diverge.)"""
    run, gene = tmp_path / "diverged", genes(sim_store)[0]
    for resume in (False, True):
        with pytest.raises(TrainingError) as error:
            train(tiny_config(sim_store, run, genes=(gene,), lr=1e10, accumulation=8, max_epochs=2, resume=resume))
        assert str(error.value) == (f"tune predictions of gene {gene} are not finite after epoch 0; the weights diverged: "
                                    "lower --lr and train anew into another --out")
        assert [p.name for p in run.iterdir()] == ["run.json"]
