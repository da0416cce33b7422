"""Cross-cohort elastic nets on two simulated demo-like cohorts: trained on A, tested on B, against B's own.

Simulates one population split into cohort A (GTEx-like, 670 people) and cohort B (400 other people, gene
versions + 3) with `pstore simulate --second-cohort` (seed 1, 24 genes), builds both stores, fits `pstore enet`
in both (every fold), transfers A's models to B (`pstore enet --store B --from-store A`) and prints, per gene,
B's own elastic net against A's on B's people: test R2 on the same people (B's folds, mean over folds), A's R2 on
all of B's people, and the share of A's non-zero coefficients found in B. The baseline is B's own elastic net.

    python benchmarks/crosscohort.py [--out /tmp/crosscohort] [--window 8192] [--workers 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from performer_store.build import BuildConfig, build_store
from performer_store.compare import compare_models
from performer_store.enet import run_enet
from performer_store.simulate import simulate_cohorts
from performer_store.transfer import run_transfer

PEOPLE = (670, 400)
SEED = 1
GENES = 24


def stores(out: Path, window: int, workers: int) -> tuple[Path, Path]:
    """The two cohorts and their stores, made when missing."""
    cohorts = [out / "cohort_a", out / "cohort_b"]
    if not all((c / "cohort.json").is_file() for c in cohorts):
        simulate_cohorts(cohorts, individuals=PEOPLE, genes=GENES, seed=SEED, multiallelic=True, indels=True)
    paths = []
    for cohort in cohorts:
        store = out / f"{cohort.name.removeprefix('cohort_')}.zarr"
        build_store(BuildConfig(store=store, fasta=cohort / "reference.fa", vcf=cohort / "genotypes.vcf.gz",
                                gtf=cohort / "annotation.gtf.gz", expression=cohort / "expression.bed.gz", tissue="whole_blood",
                                window=window, workers=workers, progress=False))
        paths.append(store)
    return paths[0], paths[1]


def main() -> None:
    """Fit, transfer and print the per-gene table and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/crosscohort"))
    parser.add_argument("--window", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    a, b = stores(args.out, args.window, args.workers)
    start = time.perf_counter()
    for store in (a, b):
        run_enet(store, workers=args.workers, progress=False)
    fitted = time.perf_counter() - start
    start = time.perf_counter()
    report = run_transfer(b, a)
    moved = time.perf_counter() - start
    print(report.genes.summary(a.name, b.name))
    table = compare_models(b, [report.name]).table.set_index("gene_id")
    transfer = report.table.groupby("gene_id")[["cross_r2", "n_nonzero", "n_found", "variant_share"]].mean()
    truth = pd.read_csv(args.out / "cohort_b" / "truth_genes.tsv", sep="\t").set_index("gene_id")["h2"]
    rows = pd.DataFrame({"gene": table["gene_name"], "h2": truth.reindex(table.index), "B_enet_r2": table["enet_r2"],
                         "A_enet_r2": table[f"{report.name}_r2"], "A_minus_B_r2": table[f"{report.name}_minus_enet_r2"],
                         "A_r2_all_B": transfer["cross_r2"], "nonzero": transfer["n_nonzero"], "share_found": transfer["variant_share"]})
    print(rows.sort_values("h2").to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    heritable = rows["h2"] >= 0.2
    for label, part in (("all genes", rows), ("h2 >= 0.2", rows[heritable])):
        print(f"{label} ({len(part)}): mean test R2 on B's people: B's own enet {part['B_enet_r2'].mean():.3f}, "
              f"A's enet {part['A_enet_r2'].mean():.3f} (ratio {part['A_enet_r2'].mean() / part['B_enet_r2'].mean():.2f}); "
              f"A's enet on all of B {part['A_r2_all_B'].mean():.3f}")
    share = report.table["n_found"].clip(lower=0).sum() / report.table["n_nonzero"].clip(lower=0).sum()
    print(f"A's non-zero coefficients found in B: {share:.3f} (median per gene and fold {np.nanmedian(report.table['variant_share']):.3f})")
    print(f"enet fits in both stores {fitted:.1f} s; transfer of {len(report.table)} gene-folds {moved:.1f} s")


if __name__ == "__main__":
    main()
