"""Elastic nets: solver speed against scikit-learn's default on simulated genes, and recovery of the truth.

Speed: genes of 300-3,000 SNVs (coalescent simulations as in `pstore simulate`: stdpopsim HomSap
OutOfAfrica_2T12, 87% EUR / 13% AFR, windows of 24-240 kb; 670 people in a seeded random order, the first
536 train, the other 134 test), targets from 1-6 causal SNVs at a heritability drawn as in the simulator.
Per gene the method's pipeline is fitted with `pstore enet`'s default solver (`early`) and with
scikit-learn's defaults, alternately in this process on one BLAS/OpenMP thread; prints CPU-time fits/s of
both, their ratio, and how far apart the chosen alphas, coefficients and test R2 are, per SNV-count bucket.

Agreement with few people: genes simulated as above for cohorts of 100-300 people (80% train), fitted with
the early exit and with the whole grid (`gram`, scikit-learn's path to rounding), elastic net and lasso; prints
how often the early exit picks the whole grid's alpha, and its CPU-time speed-up over the whole grid.

Recovery: `pstore enet` on every gene and fold of the demo store (2 worker processes; results stay in the
store), then for genes with simulated h2 >= 0.2 the auROC of |coefficient| (mean over the 3 folds) for the
causal SNVs of `truth_variants.tsv` against all other SNVs, and for every gene the held-out R2 (mean over
folds) beside the simulated h2.

    python benchmarks/enet.py [--genes-per-bucket 2] [--buckets ~300 ~750 ~1,500 ~3,000] [--skip-speed]
        [--agreement-people 100 150 200 300] [--agreement-genes 20] [--skip-agreement] [--skip-recovery]
        [--cohort demo/cohort] [--store demo/whole_blood.zarr] [--workers 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import pearsonr
from sklearn.metrics import r2_score, roc_auc_score
from threadpoolctl import threadpool_limits

from performer_store import enet, simulate
from performer_store.build import BuildConfig, build_store
from performer_store.results import read_result
from performer_store.simulate import simulate_cohort
from performer_store.store import Store

HIGH_H2 = 0.2
PEOPLE = 670
TRAIN_PEOPLE = 536
BUCKETS = {"~300": 24_000, "~750": 60_000, "~1,500": 120_000, "~3,000": 240_000}  # label: window (bp)


def demo_store(cohort: Path, path: Path, workers: int) -> Store:
    """The demo cohort (seed 1) and its store, made when missing."""
    if not (cohort / "truth_genes.tsv").is_file():
        simulate_cohort(cohort, seed=1, multiallelic=True, indels=True)
    if not (path / "zarr.json").is_file():
        build_store(BuildConfig(store=path, fasta=cohort / "reference.fa", vcf=cohort / "genotypes.vcf.gz",
                                gtf=cohort / "annotation.gtf.gz", expression=cohort / "expression.bed.gz",
                                tissue="whole_blood", workers=workers, progress=False))
    return Store(path)


def simulated_genes(window: int, count: int, seed: int, people: int = PEOPLE) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` genes of a `window`-bp coalescent simulation: (people x SNVs) 0/1/2 dosage and a target."""
    stdpopsim, _ = simulate._import_simulation_extras()
    species = stdpopsim.get_species("HomSap")
    model = species.get_demographic_model(simulate.DEMOGRAPHIC_MODEL)
    contig = species.get_contig(length=window, mutation_rate=model.mutation_rate,
                                recombination_rate=species.genome.mean_recombination_rate)
    rng = np.random.default_rng([seed, window] if people == PEOPLE else [seed, window, people])  # 670: the recorded speed genes
    genes = []
    for _ in range(count):
        ts = stdpopsim.get_engine("msprime").simulate(model, contig, simulate._population_sizes(people), seed=int(rng.integers(1, 2**31)))
        haplotypes = ts.genotype_matrix() > 0
        dosage = (haplotypes[:, 0::2].astype(np.float64) + haplotypes[:, 1::2]).T[rng.permutation(people)]
        dosage = dosage[:, np.ptp(dosage, axis=0) > 0]
        genes.append((dosage, simulated_target(dosage, rng)))
    return genes


def simulated_target(dosage: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Standardized genetic value of 1-6 causal SNVs (MAF >= 1%) plus noise, at an h2 drawn as in the simulator."""
    h2 = float(simulate._heritabilities(1, rng)[0])
    frequency = dosage.mean(axis=0) / 2
    causal = rng.choice(np.flatnonzero(np.minimum(frequency, 1 - frequency) >= 0.01), rng.integers(1, 7), replace=False)
    value = dosage[:, causal] @ rng.standard_normal(len(causal))
    return np.sqrt(h2) * (value - value.mean()) / value.std() + np.sqrt(1 - h2) * rng.standard_normal(len(dosage))


def speed(genes_per_bucket: int, buckets: list[str], seed: int = 1) -> None:
    """Fit each simulated gene with both solvers; print CPU-time rates, ratio and the largest differences per bucket."""
    for label in buckets:
        window = BUCKETS[label]
        seconds = {"early": 0.0, "sklearn": 0.0}
        alpha_equal, coefficient_gap, r2_gap, sizes = 0, 0.0, 0.0, []
        for dosage, target in simulated_genes(window, genes_per_bucket, seed):
            train, test = slice(0, TRAIN_PEOPLE), slice(TRAIN_PEOPLE, None)
            fits = {}
            for solver in seconds:
                started = time.process_time()
                fits[solver] = enet.fit_linear(dosage[train], target[train], enet.L1_RATIOS["enet"], solver)
                seconds[solver] += time.process_time() - started
            early, default = fits["early"], fits["sklearn"]
            alpha_equal += early.alpha == default.alpha
            coefficient_gap = max(coefficient_gap, float(np.abs(early.coefficient - default.coefficient).max()))
            r2 = [r2_score(target[test], dosage[test] @ f.coefficient + f.intercept) for f in (early, default)]
            r2_gap = max(r2_gap, abs(r2[0] - r2[1]))
            sizes.append(dosage.shape[1])
        n = genes_per_bucket
        print(f"{label} SNVs ({TRAIN_PEOPLE} train people x {min(sizes)}-{max(sizes)} SNVs, {n} genes): "
              f"scikit-learn defaults {n / seconds['sklearn']:.4f} fits/s ({seconds['sklearn']:.1f} CPU s), "
              f"early (pstore enet) {n / seconds['early']:.4f} fits/s ({seconds['early']:.1f} CPU s), "
              f"ratio {seconds['sklearn'] / seconds['early']:.1f}x; same alpha {alpha_equal}/{n}, "
              f"largest coefficient difference {coefficient_gap:.1e}, largest test R2 difference {r2_gap:.1e}", flush=True)


def agreement(people_counts: list[int], genes: int, window: int = 24_000, seed: int = 2) -> None:
    """Fit genes of small cohorts with the early exit and the whole grid; print how often the alphas agree and the speed-up."""
    for people in people_counts:
        train, same, fits, sizes = int(0.8 * people), 0, 0, []
        seconds = {"early": 0.0, "gram": 0.0}
        for dosage, target in simulated_genes(window, genes, seed, people):
            X, y = dosage[:train], target[:train]
            sizes.append(int((np.ptp(X, axis=0) > 0).sum()))
            for l1_ratio in (enet.L1_RATIOS["enet"], enet.L1_RATIOS["lasso"]):
                alphas = {}
                for solver in seconds:
                    started = time.process_time()
                    alphas[solver] = enet.fit_linear(X, y, l1_ratio, solver).alpha
                    seconds[solver] += time.process_time() - started
                same += alphas["early"] == alphas["gram"]
                fits += 1
        print(f"{people} people ({train} train) x {min(sizes)}-{max(sizes)} SNVs, {genes} genes, elastic net and lasso: "
              f"early exit picks the whole grid's alpha in {same}/{fits} fits; {seconds['gram'] / seconds['early']:.1f}x "
              f"faster than the whole grid ({seconds['early']:.1f} vs {seconds['gram']:.1f} CPU s)", flush=True)


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
    """Speed (simulated genes per SNV-count bucket), agreement with few people, then recovery on all demo genes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, default=Path("demo/cohort"))
    parser.add_argument("--store", type=Path, default=Path("demo/whole_blood.zarr"))
    parser.add_argument("--genes-per-bucket", type=int, default=2)
    parser.add_argument("--buckets", nargs="+", choices=list(BUCKETS), default=list(BUCKETS), help="SNV-count buckets to time")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--agreement-people", type=int, nargs="+", default=[100, 150, 200, 300], help="cohort sizes of the agreement check")
    parser.add_argument("--agreement-genes", type=int, default=20, help="genes per cohort size")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--skip-recovery", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with threadpool_limits(1):
        if not args.skip_speed:
            speed(args.genes_per_bucket, args.buckets)
        if not args.skip_agreement:
            agreement(args.agreement_people, args.agreement_genes)
    if not args.skip_recovery:
        recovery(demo_store(args.cohort, args.store, args.workers), args.cohort, args.workers)


if __name__ == "__main__":
    main()
