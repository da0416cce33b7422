"""Mean expression across genes: the build keeps each gene's mean expression, `pstore evaluate --reference` stores
reference-window predictions equal to direct forward passes, and the across-gene r matches scipy."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build_args, pstore
from scipy.stats import pearsonr, spearmanr

from performer_store import schemas
from performer_store.build import BuildConfig, build_store
from performer_store.model import cage_prediction, enformer_from_config, load_checkpoint
from performer_store.reference import across_genes, mean_expression, reference_predictions
from performer_store.results import read_result
from performer_store.store import Store
from performer_store.validate import validate_store
from tiny import GENES


def test_build_keeps_mean_expression_per_gene(tiny, tmp_path):
    """Rows match GTF genes exactly or without the version suffix; a gene without a row or with NA has none."""
    table = tmp_path / "means.tsv"
    table.write_text("gene_id\tgene_name\tmean_expression\n"
                     f"{GENES[0][0]}\tGENE1\t3.25\nENSG00000000002\tGENE2\t-0.5\n{GENES[2][0]}\tGENE3\tNA\n")
    store_path = tmp_path / "store.zarr"
    pstore(*build_args(tiny, store_path, "--mean-expression", str(table)))
    means = mean_expression(Store(store_path))
    assert means[GENES[0][0]] == 3.25 and means[GENES[1][0]] == -0.5
    assert np.isnan(means[GENES[2][0]]) and np.isnan(means[GENES[3][0]])
    assert Store(store_path).gene(GENES[3][0]).attrs["mean_expression"] is None
    assert validate_store(store_path) == []
    assert "mean_expression" in Store(store_path).attrs["provenance"]["inputs"]


@pytest.mark.parametrize("text, message", [
    ("gene_id\tmean\nG\t1\n", "no column mean_expression"),
    ("gene_id\tmean_expression\nENSG00000000001.1\tabc\n", "line 2: value 'abc' is not a finite number"),
    ("gene_id\tmean_expression\nENSG00000000001.1\t1\nENSG00000000001.2\t2\n", "line 3: gene ENSG00000000001.2 has a second row"),
])
def test_bad_mean_expression_tables_are_one_line_errors(tiny, tmp_path, text, message):
    table = tmp_path / "means.tsv"
    table.write_text(text)
    output = pstore(*build_args(tiny, tmp_path / "store.zarr", "--mean-expression", str(table)), expect=1).output
    assert message in output and str(table) in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "store.zarr" / "genes").exists()


@pytest.fixture(scope="module")
def mean_store(sim_store, tmp_path_factory) -> Path:
    """The simulated cohort of `sim_store` (3 genes) built again with the simulator's mean_expression.tsv."""
    inputs = {role: Path(v["path"]) for role, v in Store(sim_store).attrs["provenance"]["inputs"].items()}
    store = tmp_path_factory.mktemp("mean") / "store.zarr"
    build_store(BuildConfig(store=store, fasta=inputs["fasta"], vcf=inputs["vcf"], gtf=inputs["gtf"], expression=inputs["expression"],
                            tissue="whole_blood", window=1024, mean_expression=inputs["fasta"].parent / "mean_expression.tsv",
                            progress=False))
    return store


def test_reference_predictions_and_across_gene_r(mean_store, tmp_path):
    """Base Enformer fills every fold with the CAGE prediction of each reference window; a run fills its fold for its
    genes, then for a gene asked for; stored values equal direct forward passes and r equals scipy's."""
    store_path = tmp_path / "store.zarr"
    shutil.copytree(mean_store, store_path)
    store = Store(store_path)
    genes = list(store.genes.index)
    table = pd.read_csv(Path(store.attrs["provenance"]["inputs"]["fasta"]["path"]).parent / "mean_expression.tsv", sep="\t")
    np.testing.assert_allclose(mean_expression(store)[table["gene_id"]].to_numpy(), table["mean_expression"], rtol=1e-12)

    output = pstore("evaluate", "--store", str(store_path), "--base", "--config", "tiny", "--reference", "--device", "cpu").output
    enformer = enformer_from_config("tiny").eval()
    for gene_id in genes:
        arrays, attrs = read_result(store_path, gene_id, "enformer", schemas.REFERENCE_GROUP)
        with torch.no_grad():
            expected = cage_prediction(enformer, torch.from_numpy(store.gene(gene_id)["reference_onehot"][:])[None], 4950)
        np.testing.assert_allclose(arrays["reference_prediction"], float(expected), rtol=1e-5)
        assert attrs["kind"] == "enformer" and list(arrays["status"]) == ["ok"] * 3
    stored = reference_predictions(store, 0)
    expected_r = pearsonr(stored["reference_prediction"], stored["mean_expression"]).statistic
    expected_rho = spearmanr(stored["reference_prediction"], stored["mean_expression"]).statistic
    (row,) = across_genes(stored).itertuples()
    assert row.genes == 3 and row.pearson_r == pytest.approx(expected_r, abs=1e-10) and row.spearman_r == pytest.approx(expected_rho, abs=1e-10)
    assert f"Pearson r {expected_r:.4f}, Spearman r {expected_rho:.4f}" in output

    run = tmp_path / "run"
    pstore("train", "--store", str(store_path), "--gene", genes[0], "--gene", genes[1], "--fold", "1", "--out", str(run), "--config",
           "tiny", "--max-epochs", "1", "--micro-batch", "8", "--accumulation", "1", "--lr", "1e-3", "--device", "cpu", "--quiet")
    output = pstore("evaluate", "--store", str(store_path), "--run", str(run), "--reference", "--device", "cpu").output
    assert "needs at least 3 predicted genes" in output  # its two training genes only
    assert read_result(store_path, genes[2], "run", schemas.REFERENCE_GROUP) is None
    pstore("evaluate", "--store", str(store_path), "--run", str(run), "--reference", "--device", "cpu", "--gene", genes[2])
    model, _, _ = load_checkpoint(run / "best.pt")
    for gene_id in genes:
        arrays, _ = read_result(store_path, gene_id, "run", schemas.REFERENCE_GROUP)
        with torch.no_grad():
            expected = model.eval()(torch.from_numpy(store.gene(gene_id)["reference_onehot"][:])[None])
        np.testing.assert_allclose(arrays["reference_prediction"][1], float(expected), rtol=1e-5)
        assert list(arrays["status"]) == ["not run", "ok", "not run"]
    fold1 = reference_predictions(store, 1)
    run_rows = fold1[fold1["model"] == "run"]
    got = across_genes(fold1).set_index("model").loc["run"]
    assert got["pearson_r"] == pytest.approx(pearsonr(run_rows["reference_prediction"], run_rows["mean_expression"]).statistic, abs=1e-10)
    assert validate_store(store_path) == []
