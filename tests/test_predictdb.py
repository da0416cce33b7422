"""`pstore export predictdb`: PredictDB's tables, read back and used to predict expression from the VCF."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from conftest import pstore
from cyvcf2 import VCF
from scipy.stats import pearsonr
from simulated import simulated_store
from test_bad_inputs import one_line_error, unwritable_folder

from performer_store.results import read_result
from performer_store.store import Store


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A simulated cohort (VCF and store) with fold-0 elastic nets of every gene."""
    cohort, store = simulated_store(tmp_path_factory.mktemp("predictdb"), 16_384)
    pstore("enet", "--store", str(store), "--folds", "0", "--quiet")
    return cohort, store


def vcf_dosage(vcf_path, samples, var_ids) -> np.ndarray:
    """(people, variants) ALT dosage of the named variants (contig_POS_REF_ALT), read from the VCF itself."""
    wanted = {v: k for k, v in enumerate(var_ids)}
    dosage = np.zeros((len(samples), len(var_ids)))
    vcf = VCF(str(vcf_path), samples=list(samples))
    order = [vcf.samples.index(s) for s in samples]
    for record in vcf:
        for alt_index, alt in enumerate(record.ALT, start=1):
            column = wanted.get(f"{record.CHROM}_{record.POS}_{record.REF}_{alt}")
            if column is not None:
                calls = record.genotype.array()[order, :2]
                dosage[:, column] = (calls == alt_index).sum(axis=1)
    return dosage


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """q-values: min over ranks >= i of p_(j) n / j."""
    order = np.argsort(p)
    scaled = p[order] * len(p) / np.arange(1, len(p) + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty_like(q)
    out[order] = np.minimum(q, 1)
    return out


def test_database_predicts_the_stored_predictions(fitted, tmp_path):
    """Weights x VCF dosages = the store's predictions minus the intercept; extra holds R2, p- and q-values."""
    cohort, path = fitted
    db = tmp_path / "model.db"
    result = pstore("export", "predictdb", "--store", str(path), "--out", str(db))
    with sqlite3.connect(db) as connection:
        weights = pd.read_sql("SELECT * FROM weights", connection)
        extra = pd.read_sql("SELECT * FROM extra", connection).set_index("gene")
        indexes = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert list(weights.columns) == ["gene", "rsid", "varID", "ref_allele", "eff_allele", "weight"]
    assert list(extra.columns) == ["genename", "gene_type", "n.snps.in.model", "pred.perf.R2", "pred.perf.pval", "pred.perf.qval"]
    assert indexes == {"weights_gene", "weights_rsid", "weights_rsid_gene", "extra_gene"}
    store = Store(path)
    test = store.split(0) == 2
    assert f"{len(extra)} genes, {len(weights)} weights" in result.output and len(extra) >= 2
    for gene_id, gene_weights in weights.groupby("gene"):
        arrays, _ = read_result(path, gene_id, "enet")
        target = store.gene(gene_id)["target"][:]
        scored = test & ~np.isnan(target)
        assert extra.loc[gene_id, "n.snps.in.model"] == arrays["enet_n_nonzero"][0] == len(gene_weights)
        assert extra.loc[gene_id, "genename"] == store.genes.loc[gene_id, "gene_name"]
        dosage = vcf_dosage(cohort.vcf, store.sample_id[test], gene_weights["varID"].tolist())
        predicted = dosage @ gene_weights["weight"].to_numpy()
        stored = arrays["prediction"][0][test] - arrays["enet_intercept"][0]
        np.testing.assert_allclose(predicted, stored, atol=1e-4)
        assert extra.loc[gene_id, "pred.perf.R2"] == pytest.approx(arrays["r2"][0], rel=1e-6)
        pvalue = pearsonr(arrays["prediction"][0][scored], target[scored]).pvalue
        assert extra.loc[gene_id, "pred.perf.pval"] == pytest.approx(pvalue, rel=1e-6)
    np.testing.assert_allclose(extra["pred.perf.qval"], benjamini_hochberg(extra["pred.perf.pval"].to_numpy()), rtol=1e-12)


def test_a_fold_without_models_writes_nothing(fitted, tmp_path):
    """Fold 1 was not run: a one-line error, and no database file."""
    _, path = fitted
    result = pstore("export", "predictdb", "--store", str(path), "--out", str(tmp_path / "m.db"), "--fold", "1", expect=1)
    assert f"no gene has a non-zero enet weight in fold 1; run `pstore enet --store {path} --folds 1` first" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_folder_sqlite_cannot_write_in_is_one_line(fitted, tmp_path):
    """SQLite's own error (not an OSError) on a file it cannot create: one line naming --out, nothing left behind."""
    _, path = fitted
    folder = unwritable_folder(tmp_path)
    out = folder / "model.db"
    message = one_line_error(pstore("export", "predictdb", "--store", str(path), "--out", str(out), expect=1))
    assert message == f"Error: {out}: cannot write it (SQLite: unable to open database file); choose another path"
    assert not out.exists() and not any(p.name.startswith(".model.db.") for p in folder.iterdir())


def test_a_database_name_of_255_bytes_is_written(fitted, tmp_path):
    _, path = fitted
    out = tmp_path / ("m" * 252 + ".db")
    pstore("export", "predictdb", "--store", str(path), "--out", str(out))
    with sqlite3.connect(out) as connection:
        assert connection.execute("SELECT COUNT(*) FROM extra").fetchone()[0] > 0
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
