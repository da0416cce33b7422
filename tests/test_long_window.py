"""196,608-bp windows (Enformer's full input) through simulate, build, train with gradient checkpointing,
evaluate and ISM; gradient checkpointing changes memory, not results."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import pstore
from performer_store.build import BuildConfig, build_store
from performer_store.loader import split_rows
from performer_store.model import Performer, enformer_from_config, load_checkpoint, recompute_activations
from performer_store.results import read_result
from performer_store.simulate import simulate_cohort
from performer_store.store import Store

LONG = 196_608


def test_gradient_checkpointing_gives_the_same_gradients():
    """Recomputed activations give bit-identical float64 gradients (dropout masks replayed) and the same keys."""
    plain = Performer(enformer_from_config("tiny", seed=3)).double()
    recomputed = copy.deepcopy(plain)
    recompute_activations(recomputed.enformer)
    assert plain.state_dict().keys() == recomputed.state_dict().keys()
    onehot = torch.rand(3, 4096, 4, dtype=torch.float64)
    target = torch.randn(3, dtype=torch.float64)
    for model in (plain, recomputed):
        torch.manual_seed(7)  # the same dropout draws
        model.train()
        prediction = model.net(onehot)[:, 16, 0]
        ((prediction - target) ** 2).mean().backward()
    gradients = [(a.grad, b.grad) for a, b in zip(plain.parameters(), recomputed.parameters()) if a.grad is not None]
    assert len(gradients) > 40
    for a, b in gradients:
        assert torch.equal(a, b)


@pytest.mark.slow
def test_long_windows_run_through_the_whole_pipeline(tmp_path):
    """Simulated 196,608-bp windows hold distal variants past the 49,152-bp window; a tiny model trains on them
    with gradient checkpointing; evaluate equals a direct forward pass; ISM scores every SNV of the window."""
    cohort = simulate_cohort(tmp_path / "cohort", individuals=30, genes=2, seed=4, window=LONG)
    assert json.loads((tmp_path / "cohort" / "cohort.json").read_text())["window"] == LONG
    truth = pd.read_csv(cohort.truth_genes, sep="\t")
    for _, group in truth.groupby("contig"):
        assert (np.diff(np.sort(group.tss)) >= LONG).all(), "simulated windows overlap"
    store_path = tmp_path / "store.zarr"
    build_store(BuildConfig(store=store_path, fasta=cohort.reference, vcf=cohort.vcf, gtf=cohort.annotation,
                            expression=cohort.expression, tissue="whole_blood", window=LONG, progress=False))
    store = Store(store_path)
    gene = store.genes.index[0]
    genes = store.genes.loc[gene]
    position = store.gene(gene)["variant_position"][:] - 1
    distance = np.abs(position - int(genes["gene_tss"]))
    assert store.window == LONG and (distance > 49_152 // 2).mean() > 0.5, "most SNVs lie beyond the short window"

    run = tmp_path / "run"
    pstore("train", "--store", str(store_path), "--gene", gene, "--fold", "0", "--out", str(run), "--config", "tiny",
           "--gradient-checkpointing", "--train-fraction", "0.25", "--micro-batch", "3", "--accumulation", "2",
           "--max-epochs", "1",
           "--lr", "1e-3", "--device", "cpu", "--quiet")
    assert json.loads((run / "run.json").read_text())["config"]["gradient_checkpointing"] is True
    pstore("evaluate", "--store", str(store_path), "--run", str(run), "--gene", gene, "--device", "cpu")
    arrays, _ = read_result(store_path, gene, "run")
    test = split_rows(store, gene, 0, "test")
    model, meta, _ = load_checkpoint(run / "best.pt")
    assert meta["window"] == LONG
    with torch.no_grad():
        direct = model.eval()(torch.from_numpy(store.dosage_onehot(gene, test).astype(np.float32))).numpy()
    np.testing.assert_allclose(arrays["prediction"][0, test], direct, rtol=1e-4, atol=1e-6)

    pstore("ism", "--store", str(store_path), "--run", str(run), "--gene", gene, "--device", "cpu", "--quiet")
    scores, _ = read_result(store_path, gene, "run", group="ism")
    assert scores["ism_score"].shape[1] == position.size and np.isfinite(scores["ism_score"][0]).all()
