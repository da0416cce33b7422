"""Variant weights on the demo cohort: how well each model's ISM scores, and the elastic net, find the causal SNVs.

Per gene with simulated h2 >= 0.2, the auROC of |ISM score| (every model with ISM scores in the fold) and of
|elastic-net coefficient| for the causal SNVs of `truth_variants.tsv` against every other SNV of the window, and
the same against the fine-mapped eQTLs of `finemapped_eqtls.tsv`; then the other summaries of
`performer_store.analysis.summarize`: direction agreement with the elastic net, motif disruption by HSVs and
drivers against random SNVs, chromatin-state enrichment of HSVs, and their MAF and TSS distances.

Needs `pstore enet` and `pstore ism` results for the fold in the store, e.g.

    pstore enet --store demo/whole_blood.zarr --folds 0
    pstore ism --store demo/whole_blood.zarr ...          # a Performer run and/or base Enformer
    python benchmarks/variant_recovery.py [--cohort demo/cohort] [--store demo/whole_blood.zarr] [--fold 0] [--scheduler ADDRESS]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from performer_store import analysis

HIGH_H2 = 0.2  # as benchmarks/enet.py


def recovery_table(weights: pd.DataFrame, variants: Path, truth_genes: pd.DataFrame) -> pd.DataFrame:
    """auROC per gene (rows, with name and h2) and weight (columns) for a variant list."""
    auroc = analysis.recovery_auroc(weights, analysis.read_variant_list(variants))
    table = auroc.pivot(index="gene_id", columns="weight", values="auroc")
    listed = auroc.groupby("gene_id")["listed"].max().rename("listed")
    return truth_genes[["gene_name", "h2"]].join(listed).join(table, how="right").sort_values("h2")


def print_recovery(title: str, table: pd.DataFrame, weights: list[str]) -> None:
    """The per-gene table and, per weight, the mean, median and min auROC over genes with h2 >= HIGH_H2."""
    print(f"\n{title}")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    high = table[table["h2"] >= HIGH_H2]
    for weight in weights:
        values = high[weight].dropna()
        print(f"{weight:>12}: {len(values)} genes with h2 >= {HIGH_H2} and listed SNVs; auROC mean {values.mean():.3f}, "
              f"median {values.median():.3f}, min {values.min():.3f}")


def main() -> None:
    """Recovery of causal SNVs and fine-mapped eQTLs, then every other summary, printed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, default=Path("demo/cohort"))
    parser.add_argument("--store", type=Path, default=Path("demo/whole_blood.zarr"))
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--scheduler", help="Address of a running dask.distributed scheduler")
    args = parser.parse_args()
    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    weights = analysis.compute(analysis.variant_weights(args.store, args.fold, client), client)
    models = analysis.ism_model_names(weights)
    if not models or weights["enet_coefficient"].isna().all():
        sys.exit(f"{args.store}: fold {args.fold} needs `pstore enet` and `pstore ism` results (models with ISM scores: "
                 f"{', '.join(models) or 'none'})")
    truth_genes = pd.read_csv(args.cohort / "truth_genes.tsv", sep="\t").set_index("gene_id")
    print(f"{args.store}, fold {args.fold}: {weights['gene_id'].nunique()} genes, {len(weights)} SNVs; ISM models: {', '.join(models)}")
    columns = [analysis.ENET_MODEL, *models]
    print_recovery("causal SNVs (truth_variants.tsv): auROC of |weight|",
                   recovery_table(weights, args.cohort / "truth_variants.tsv", truth_genes), columns)
    print_recovery("fine-mapped eQTLs (finemapped_eqtls.tsv): auROC of |weight|",
                   recovery_table(weights, args.cohort / "finemapped_eqtls.tsv", truth_genes), columns)
    tables = analysis.summarize(args.store, args.fold, states=args.cohort / "chromatin_states.bed", client=client)
    for name in ("direction", "motif_rates", "distribution_summary", "enrichment"):
        print(f"\n{name}")
        print(tables[name].to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
