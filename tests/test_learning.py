"""The method learns: a tiny Performer on a simulated high-heritability gene beats a shuffled-target control."""

from __future__ import annotations

import shutil

import pytest

from performer_store.build import BuildConfig, build_store
from performer_store.demo import DEMO_TRAINING, proximal_genes, shuffle_targets
from performer_store.evaluate import EvaluateConfig, evaluate_run
from performer_store.simulate import simulate_cohort
from performer_store.train import TrainConfig, train


@pytest.mark.slow
def test_tiny_model_beats_shuffled_targets(tmp_path):
    """Demo cohort (seed 1), the gene with the strongest common causal SNV near its TSS, 2,048-bp windows.

    Measured on 2026-12-03 (`pytest -s tests/test_learning.py` prints them): test r 0.44 (R2 0.16) against -0.15
    (R2 -0.08) with targets shuffled.
    """
    cohort = simulate_cohort(tmp_path / "cohort", individuals=670, genes=24, seed=1)
    gene = proximal_genes(cohort.truth_variants, DEMO_TRAINING["window"], 1)[0]
    store = tmp_path / "store.zarr"
    build_store(BuildConfig(store=store, fasta=cohort.reference, vcf=cohort.vcf, gtf=cohort.annotation, expression=cohort.expression,
                            tissue="whole_blood", genes=(gene,), window=DEMO_TRAINING["window"], progress=False))
    control = tmp_path / "shuffled.zarr"
    shutil.copytree(store, control)
    shuffle_targets(control, gene)
    scores = {}
    for name, path in (("real", store), ("shuffled", control)):
        train(TrainConfig(store=path, genes=(gene,), fold=0, out=tmp_path / name, progress=False, device="cpu", **DEMO_TRAINING))
        scores[name] = evaluate_run(EvaluateConfig(store=path, device="cpu"), tmp_path / name).iloc[0]
        print(f"{name} targets: test r {scores[name]['pearson_r']:.3f}, R2 {scores[name]['r2']:.3f}")
    assert scores["real"]["pearson_r"] > 0.3 and scores["real"]["r2"] > 0.05
    assert scores["real"]["pearson_r"] > scores["shuffled"]["pearson_r"] + 0.2
