"""`pstore compare`: per-gene means over folds, differences on shared folds, the paper's groups and headline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import pstore
from scipy.stats import pearsonr
from simulated import simulated_store
from sklearn.metrics import r2_score

from performer_store import schemas
from performer_store.compare import compare_models
from performer_store.results import blank_result, read_result, write_result
from performer_store.store import Store


def write_performer(store: Store, gene_id: str, folds: list[int], noise: float, seed: int) -> None:
    """A synthetic Performer run: target plus noise for the tune and test people, scored here."""
    target = store.gene(gene_id)["target"][:].astype(np.float64)
    n_folds = store.root["sample_split"].shape[0]
    values = blank_result({"folds": n_folds, "samples": len(target)})
    rng = np.random.default_rng(seed)
    for fold in folds:
        split = store.split(fold)
        held, test = split != 0, (split == 2) & ~np.isnan(target)
        prediction = np.where(held, target + noise * rng.normal(size=len(target)), np.nan)
        values["prediction"][fold] = prediction
        values["pearson_r"][fold] = pearsonr(prediction[test], target[test]).statistic
        values["r2"][fold] = r2_score(target[test], prediction[test])
        values["status"][fold] = "ok"
    write_result(store.path, gene_id, "my_run", "performer", folds, values, {"runs": {str(f): "synthetic" for f in folds}})


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A store with enet results (folds 0-1) and a synthetic Performer run (gene 0: fold 0 only)."""
    _, path = simulated_store(tmp_path_factory.mktemp("compare"), 16_384)
    pstore("enet", "--store", str(path), "--folds", "0,1", "--quiet")
    store = Store(path)
    for k, gene_id in enumerate(store.genes.index):
        write_performer(store, gene_id, [0] if k == 0 else [0, 1], noise=0.5 + k, seed=k)
    return path


def test_table_and_summary_match_the_stored_fold_metrics(scored):
    """Means over folds, differences over shared folds, groups and the headline, recomputed from the arrays."""
    comparison = compare_models(scored)
    table = comparison.table.set_index("gene_id")
    expected_within = []
    for gene_id in Store(scored).genes.index:
        enet, enet_attrs = read_result(scored, gene_id, "enet")
        run, run_attrs = read_result(scored, gene_id, "my_run")
        enet, run = ({k: v.astype(np.float64) for k, v in a.items() if k != "status"} for a in (enet, run))
        shared = sorted(set(enet_attrs["folds"]) & set(run_attrs["folds"]))
        enet_r2 = np.nanmean(enet["r2"][enet_attrs["folds"]])
        assert table.loc[gene_id, "enet_r2"] == pytest.approx(enet_r2, abs=1e-12)
        assert table.loc[gene_id, "my_run_r2"] == pytest.approx(np.mean(run["r2"][run_attrs["folds"]]), abs=1e-12)
        assert table.loc[gene_id, "my_run_r"] == pytest.approx(np.mean(run["pearson_r"][run_attrs["folds"]]), abs=1e-12)
        difference = np.nanmean(run["r2"][shared] - enet["r2"][shared])
        assert table.loc[gene_id, "my_run_minus_enet_r2"] == pytest.approx(difference, abs=1e-12)
        group = "none" if enet_r2 <= 0 else "low" if enet_r2 <= 0.06 else "medium/high"
        assert table.loc[gene_id, "group"] == group
        expected_within.append(difference >= -0.02)
    summary = comparison.summary.set_index("model")
    assert summary.loc["my_run", "kind"] == "performer" and summary.loc["my_run", "genes"] == 4
    assert summary.loc["my_run", "within_0.02_of_enet_or_better"] == pytest.approx(np.mean(expected_within))
    assert summary.loc["my_run", ["genes_none", "genes_low", "genes_medium/high"]].sum() == 4


def test_cli_prints_and_writes_tsv_and_parquet(scored, tmp_path):
    """The printed table names every gene; the TSV and Parquet files hold the same table."""
    result = pstore("compare", "--store", str(scored), "--out", str(tmp_path / "c.tsv"), "--out", str(tmp_path / "c.parquet"))
    expected = compare_models(scored).table
    assert all(gene in result.output for gene in expected["gene_id"]) and "within_0.02_of_enet_or_better" in result.output
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "c.parquet"), expected, check_dtype=False)
    tsv = pd.read_csv(tmp_path / "c.tsv", sep="\t")
    np.testing.assert_allclose(tsv["my_run_minus_enet_r2"], expected["my_run_minus_enet_r2"], rtol=1e-12)


def test_missing_results_are_one_line_errors(scored, tmp_path):
    """No baseline results, an unknown run, an unknown output format."""
    assert f"store {scored}: no lasso results" in pstore("compare", "--store", str(scored), "--baseline", "lasso", expect=1).output
    assert "no results named nope; results present: enet, my_run" in pstore("compare", "--store", str(scored), "--runs", "nope", expect=1).output
    assert "give a .tsv or .parquet file name" in pstore("compare", "--store", str(scored), "--out", str(tmp_path / "c.csv"), expect=2).output
    assert "no results besides enet yet" in pstore("compare", "--store", str(scored), "--runs", "enet").output


def test_a_result_name_cannot_change_kind(scored):
    """Writing a performer result under the name of the enet baseline is refused, the baseline kept."""
    store = Store(scored)
    gene_id = store.genes.index[0]
    with pytest.raises(ValueError, match="already has a result named 'enet' of kind enet; choose another name for this result of kind performer"):
        write_result(scored, gene_id, "enet", "performer", [0], blank_result({"folds": 3, "samples": len(store.sample_id)}))
    assert read_result(scored, gene_id, "enet")[1]["kind"] == "enet"
    assert schemas.RESULTS_GROUP in {p.name for p in (scored / "genes" / gene_id).iterdir()}


def test_write_table_is_atomic_and_makes_its_directory(tmp_path, monkeypatch):
    """A table goes into a new directory; a write that dies half-way keeps the previous file and leaves no temporary."""
    from performer_store.compare import write_table

    out = tmp_path / "new" / "table.tsv"
    write_table(pd.DataFrame({"a": [1, 2]}), out)
    good = out.read_bytes()

    def dies(self, path, *args, **kwargs):
        Path(path).write_text("a\n1")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", dies)
    with pytest.raises(KeyboardInterrupt):
        write_table(pd.DataFrame({"a": [3, 4]}), out)
    assert out.read_bytes() == good and sorted(p.name for p in out.parent.iterdir()) == ["table.tsv"]


def test_summary_means_are_over_the_genes_compared(scored, tmp_path):
    """A gene without the baseline and one without the model are left out of the count and of both means."""
    import shutil

    copy = tmp_path / "part.zarr"
    shutil.copytree(scored, copy)
    genes = list(Store(copy).genes.index)
    shutil.rmtree(copy / "genes" / genes[3] / "results" / "enet")
    shutil.rmtree(copy / "genes" / genes[2] / "results" / "my_run")
    comparison = compare_models(copy)
    row = comparison.summary.set_index("model").loc["my_run"]
    assert row["genes"] == 2
    expected = paired_means(copy, genes[:2])
    assert row["mean_r2"] == pytest.approx(expected["my_run"], abs=1e-12)
    assert row["mean_enet_r2"] == pytest.approx(expected["enet"], abs=1e-12)


def paired_means(path: Path, genes: list[str], model: str = "my_run") -> pd.Series:
    """Mean over genes of each model's and the elastic net's mean test R2 over the folds both have a finite R2 for,
    recomputed here with pandas from the stored per-fold arrays."""
    rows = []
    for gene_id in genes:
        for name in (model, "enet"):
            arrays, attrs = read_result(path, gene_id, name)
            rows += [{"gene_id": gene_id, "fold": f, "model": name, "r2": float(arrays["r2"][f])} for f in attrs["folds"]]
    wide = pd.DataFrame(rows).pivot(index=["gene_id", "fold"], columns="model", values="r2").dropna()
    return wide.groupby("gene_id").mean().mean()


def test_summary_means_pair_the_baseline_with_the_models_folds(scored):
    """A gene the model has one fold of (the elastic net has two): both means of the summary row are over the
    folds both have, so mean_r2 - mean_enet_r2 is the mean difference (one group: the group's difference)."""
    genes = list(Store(scored).genes.index)
    assert read_result(scored, genes[0], "my_run")[1]["folds"] == [0] and read_result(scored, genes[0], "enet")[1]["folds"] == [0, 1]
    comparison = compare_models(scored)
    row = comparison.summary.set_index("model").loc["my_run"]
    expected = paired_means(scored, genes)
    assert row["mean_r2"] == pytest.approx(expected["my_run"], abs=1e-12)
    assert row["mean_enet_r2"] == pytest.approx(expected["enet"], abs=1e-12)
    difference = comparison.table["my_run_minus_enet_r2"].mean()
    assert row["mean_r2"] - row["mean_enet_r2"] == pytest.approx(difference, abs=1e-12)



def test_summary_of_a_one_fold_run_compares_its_fold(scored, tmp_path):
    """A run of one gene and fold 0 (the elastic net has folds 0-1): mean_enet_r2 is the elastic net's fold 0 R2,
    and mean_r2 - mean_enet_r2 the row's group difference."""
    import shutil

    copy = tmp_path / "one.zarr"
    shutil.copytree(scored, copy)
    genes = list(Store(copy).genes.index)
    for gene_id in genes[1:]:
        shutil.rmtree(copy / "genes" / gene_id / "results" / "my_run")
    comparison = compare_models(copy)
    row = comparison.summary.set_index("model").loc["my_run"]
    group = comparison.table.set_index("gene_id").loc[genes[0], "group"]
    assert row["genes"] == 1 and row["mean_enet_r2"] == pytest.approx(read_result(copy, genes[0], "enet")[0]["r2"][0], abs=1e-12)
    assert row["mean_r2"] - row["mean_enet_r2"] == pytest.approx(row[f"minus_enet_r2_{group}"], abs=1e-12)
