"""`pstore export predictdb`: a store's elastic nets as a PredictDB SQLite model database (GTEx v8 layout).

PrediXcan and S-PrediXcan (MetaXcan) read two tables:

- `weights` (gene, rsid, varID, ref_allele, eff_allele, weight): one row per non-zero coefficient. varID is
  `<contig>_<POS>_<REF>_<ALT>` (contig as in the FASTA); rsid is the VCF ID, or the varID where the VCF has
  none; eff_allele is the ALT whose 0/1/2 dosage the weight multiplies.
- `extra` (gene, genename, gene_type, n.snps.in.model, pred.perf.R2, pred.perf.pval, pred.perf.qval): the
  fold's test R2, the p-value of its test Pearson r (scipy) and Benjamini-Hochberg q-values over the
  exported genes.

One fold's models are exported (fold 0 by default, as the paper uses for variant analyses); genes whose
fold has no model or no non-zero coefficient are left out. PrediXcan predicts sum(weight x dosage) with no
intercept, so its predictions differ from the store's by the intercept, a constant per gene.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, pearsonr

from . import schemas
from .inputs import InputError
from .results import read_result, replace_atomically
from .store import Store

WEIGHT_COLUMNS = ["gene", "rsid", "varID", "ref_allele", "eff_allele", "weight"]
EXTRA_COLUMNS = ["gene", "genename", "gene_type", "n.snps.in.model", "pred.perf.R2", "pred.perf.pval", "pred.perf.qval"]
INDEXES = {"weights_gene": "weights (gene)", "weights_rsid": "weights (rsid)", "weights_rsid_gene": "weights (rsid, gene)",
           "extra_gene": "extra (gene)"}


@dataclass
class ExportReport:
    """What an export wrote and what it left out (gene -> reason)."""

    out: Path
    genes: int = 0
    weights: int = 0
    left_out: dict[str, str] = field(default_factory=dict)


def gene_model(store: Store, gene_id: str, model: str, fold: int) -> tuple[pd.DataFrame, dict] | str:
    """A gene's weights rows and extra row for one fold, or why it has none."""
    result = read_result(store.path, gene_id, model)
    if result is None:
        return f"no {model} result"
    arrays, attrs = result
    if fold not in attrs["folds"]:
        return f"fold {fold} not run"
    coefficient = arrays["enet_coefficient"][fold].astype(np.float64)
    chosen = np.flatnonzero(coefficient)
    if len(chosen) == 0:
        return f"no SNV in the model ({arrays['status'][fold]})"
    group = store.gene(gene_id)
    position, allele = group["variant_position"][:][chosen], group["variant_allele"][:][chosen].astype(object)
    variant_id = group["variant_id"][:][chosen].astype(object)
    var_ids = [f"{group.attrs['contig']}_{p}_{ref}_{alt}" for p, (ref, alt) in zip(position, allele)]
    weights = pd.DataFrame({"gene": gene_id, "rsid": np.where(variant_id == ".", var_ids, variant_id), "varID": var_ids,
                            "ref_allele": allele[:, 0], "eff_allele": allele[:, 1], "weight": coefficient[chosen]})
    test = (store.split(fold) == schemas.SPLIT_CODES["test"]) & ~np.isnan(group["target"][:])
    prediction, target = arrays["prediction"][fold][test], group["target"][:][test]
    finite = np.isfinite(arrays["pearson_r"][fold])
    extra = {"gene": gene_id, "genename": group.attrs["gene_name"], "gene_type": group.attrs["gene_type"],
             "n.snps.in.model": len(chosen), "pred.perf.R2": float(arrays["r2"][fold]),
             "pred.perf.pval": float(pearsonr(prediction, target).pvalue) if finite else np.nan}
    return weights, extra


def export_predictdb(path: Path, out: Path, model: str = "enet", fold: int = 0) -> ExportReport:
    """Write one fold's linear models of every gene into a PredictDB SQLite file (replaced atomically)."""
    store = Store(path)
    store.split(fold)  # refuses a fold the store does not have
    report = ExportReport(Path(out))
    weights, extras = [], []
    for gene_id in store.genes.index:
        found = gene_model(store, gene_id, model, fold)
        if isinstance(found, str):
            report.left_out[gene_id] = found
            continue
        weights.append(found[0])
        extras.append(found[1])
    if not extras:
        lasso = " --model lasso" * (model == "lasso")
        raise InputError(f"store {path}: no gene has a non-zero {model} weight in fold {fold}; "
                         f"run `pstore enet --store {path} --folds {fold}{lasso}` first")
    extra = pd.DataFrame(extras)
    pvalues = extra["pred.perf.pval"].to_numpy()
    extra["pred.perf.qval"] = np.nan
    extra.loc[np.isfinite(pvalues), "pred.perf.qval"] = false_discovery_control(pvalues[np.isfinite(pvalues)])
    _write_database(report.out, pd.concat(weights, ignore_index=True)[WEIGHT_COLUMNS], extra[EXTRA_COLUMNS])
    report.genes, report.weights = len(extra), sum(len(w) for w in weights)
    return report


def _write_database(out: Path, weights: pd.DataFrame, extra: pd.DataFrame) -> None:
    """Both tables and PredictDB's indexes, in a temporary file renamed over `out` when complete."""
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory; give a file name such as {out / 'model.db'}")
    replace_atomically(out, lambda partial: _write_tables(partial, weights, extra))


def _write_tables(path: Path, weights: pd.DataFrame, extra: pd.DataFrame) -> None:
    """Both tables and PredictDB's indexes into a new SQLite file; a file SQLite cannot create or fill (a read-only
    folder, a full disk) is an OSError, which `replace_atomically` reports as one line naming --out."""
    try:
        with closing(sqlite3.connect(path)) as connection, connection:  # closed even when a statement fails
            weights.to_sql("weights", connection, index=False)
            extra.to_sql("extra", connection, index=False)
            for name, target in INDEXES.items():
                connection.execute(f"CREATE INDEX {name} ON {target}")
    except sqlite3.OperationalError as error:
        raise OSError(f"SQLite: {error}") from None
