"""Elastic nets on the demo cohort: solver speed against scikit-learn's default, and recovery of the truth.

Speed: per gene (fold 0's 525 train people x the window's SNVs), the method's pipeline fitted with
`pstore enet`'s default solver (`gram`: scikit-learn's coordinate descent on precomputed Gram matrices) and
with scikit-learn's defaults, alternately in this process; prints fits/s of both, their ratio, and how far
apart the chosen alphas, coefficients and test R2 are.

Recovery: `pstore enet` on every gene and fold (2 worker processes; results stay in the store), then for
genes with simulated h2 >= 0.2 the auROC of |coefficient| (mean over the 3 folds) for the causal SNVs of
`truth_variants.tsv` against all other SNVs, and for every gene the held-out R2 (mean over folds) beside
the simulated h2.

    python benchmarks/enet.py [--cohort demo/cohort] [--store demo/whole_blood.zarr] [--speed-genes 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import pearsonr
from sklearn.metrics import r2_score, roc_auc_score

from performer_store import enet
from performer_store.build import BuildConfig, build_store
from performer_store.results import read_result
from performer_store.simulate import simulate_cohort
from performer_store.store import Store

HIGH_H2 = 0.2


def demo_store(cohort: Path, path: Path, workers: int) -> Store:
    """The demo cohort (seed 1) and its store, made when missing."""
    if not (cohort / "truth_genes.tsv").is_file():
        simulate_cohort(cohort, seed=1, multiallelic=True, indels=True)
    if not (path / "zarr.json").is_file():
        build_store(BuildConfig(store=path, fasta=cohort / "reference.fa", vcf=cohort / "genotypes.vcf.gz",
                                gtf=cohort / "annotation.gtf.gz", expression=cohort / "expression.bed.gz",
                                tissue="whole_blood", workers=workers, progress=False))
    return Store(path)


def speed(store: Store, genes: list[str]) -> None:
    """Fit each gene's fold 0 with both solvers; print rates, ratio and the largest differences."""
    seconds = {"gram": 0.0, "sklearn": 0.0}
    alpha_equal, coefficient_gap, r2_gap = 0, 0.0, 0.0
    split = store.split(0)
    for gene_id in genes:
        group = store.gene(gene_id)
        dosage, target = enet.genotype_dosage(group), group["target"][:].astype(np.float64)
        train, test = (split == 0) & ~np.isnan(target), (split == 2) & ~np.isnan(target)
        fits = {}
        for solver in seconds:
            started = time.perf_counter()
            fits[solver] = enet.fit_linear(dosage[train], target[train], enet.L1_RATIOS["enet"], solver)
            seconds[solver] += time.perf_counter() - started
        gram, default = fits["gram"], fits["sklearn"]
        alpha_equal += gram.alpha == default.alpha
        coefficient_gap = max(coefficient_gap, float(np.abs(gram.coefficient - default.coefficient).max()))
        r2 = [r2_score(target[test], dosage[test] @ f.coefficient + f.intercept) for f in (gram, default)]
        r2_gap = max(r2_gap, abs(r2[0] - r2[1]))
        print(f"  {gene_id}: {train.sum()} people x {dosage.shape[1]} SNVs, {np.count_nonzero(gram.coefficient)} non-zero")
    n = len(genes)
    print(f"scikit-learn defaults: {n} fits in {seconds['sklearn']:.1f} s = {n / seconds['sklearn']:.3f} fits/s")
    print(f"gram (pstore enet):    {n} fits in {seconds['gram']:.1f} s = {n / seconds['gram']:.3f} fits/s")
    print(f"speed ratio (gram / scikit-learn defaults): {seconds['sklearn'] / seconds['gram']:.2f}x")
    print(f"same alpha in {alpha_equal}/{n} fits; largest coefficient difference {coefficient_gap:.1e}; "
          f"largest test R2 difference {r2_gap:.1e}")


def recovery(store: Store, cohort: Path, workers: int) -> None:
    """Fit every gene and fold; print auROC of |coefficient| for causal SNVs and held-out R2 against h2."""
    enet.run_enet(store.path, workers=workers, progress=False)
    truth_genes = pd.read_csv(cohort / "truth_genes.tsv", sep="\t").set_index("gene_id")
    causal = pd.read_csv(cohort / "truth_variants.tsv", sep="\t")
    rows = []
    for gene_id in store.genes.index:
        arrays, attrs = read_result(store.path, gene_id, "enet")
        group = store.gene(gene_id)
        weight = np.abs(arrays["enet_coefficient"][attrs["folds"]]).mean(axis=0)
        keys = pd.MultiIndex.from_arrays([group["variant_position"][:], group["variant_allele"][:][:, 1].astype(object)])
        truth = causal[causal["gene_id"] == gene_id]
        label = keys.isin(pd.MultiIndex.from_arrays([truth["position"], truth["alt"]]))
        h2 = truth_genes.loc[gene_id, "h2"]
        auroc = roc_auc_score(label, weight) if h2 >= HIGH_H2 and 0 < label.sum() < len(label) else np.nan
        rows.append({"gene": truth_genes.loc[gene_id, "gene_name"], "h2": h2, "h2_realized": truth_genes.loc[gene_id, "h2_realized"],
                     "causal": int(label.sum()), "snvs": len(label), "r2": float(np.nanmean(arrays["r2"])),
                     "non_zero": float(np.mean(arrays["enet_n_nonzero"][attrs["folds"]])), "auroc": auroc})
    table = pd.DataFrame(rows).sort_values("h2")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    high = table[table["h2"] >= HIGH_H2]
    print(f"genes with h2 >= {HIGH_H2}: {len(high)}; auROC of |coefficient|, causal vs other SNVs: "
          f"mean {high['auroc'].mean():.3f}, median {high['auroc'].median():.3f}, min {high['auroc'].min():.3f}")
    print(f"held-out R2 vs simulated h2 over {len(table)} genes: Pearson r {pearsonr(table['r2'], table['h2']).statistic:.3f}; "
          f"mean R2 / mean h2_realized for h2 >= {HIGH_H2}: {high['r2'].mean():.3f} / {high['h2_realized'].mean():.3f}; "
          f"for h2 = 0: mean R2 {table[table['h2'] == 0]['r2'].mean():.3f}")


def main() -> None:
    """Speed first (on the genes in store order), then recovery on all genes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, default=Path("demo/cohort"))
    parser.add_argument("--store", type=Path, default=Path("demo/whole_blood.zarr"))
    parser.add_argument("--speed-genes", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    store = demo_store(args.cohort, args.store, args.workers)
    speed(store, list(store.genes.index[: args.speed_genes]))
    recovery(store, args.cohort, args.workers)


if __name__ == "__main__":
    main()
