"""The demo's `pstore run` config and the learning checks' choices, made from a simulated cohort's truth table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

DEMO_TRAINING = dict(config="tiny", window=2048, lr=5e-4, accumulation=1, max_epochs=20, patience=20)
"""A tiny random-init Enformer learns a common proximal causal SNV in a few CPU-minutes with these settings
(measured on the demo cohort's strongest such gene: test r 0.44, R2 0.19, vs r -0.11, R2 -0.08 with shuffled
targets). Tune r is right from the first epochs; R2 turns positive only once the output's scale has grown
(around epoch 12), and at lr 2e-3 the direction itself kept flipping. The method's lr 5e-6 is for pretrained
weights."""


def proximal_genes(truth_variants: Path, window: int, count: int, min_maf: float = 0.05) -> list[str]:
    """Genes whose common causal SNVs inside the centre `window` explain the most variance, strongest first."""
    truth = pd.read_csv(truth_variants, sep="\t")
    near = truth[(truth["tss_distance"].abs() < window // 2 - 100) & (truth["maf"] >= min_maf)]
    strength = (near["effect"] ** 2 * 2 * near["maf"] * (1 - near["maf"])).groupby(near["gene_id"]).sum()
    return list(strength.sort_values(ascending=False).index[:count])


def shuffle_targets(store: Path, gene_id: str, seed: int = 0) -> None:
    """Permute one gene's targets across people in place (a control that keeps their distribution)."""
    import zarr

    target = zarr.open_array(str(store / "genes" / gene_id / "target"), mode="r+")
    target[:] = np.random.default_rng(seed).permutation(target[:])



def demo_config(demo: Path, genes: int = 3) -> str:
    """The demo's `pstore run` config: the whole method on the demo cohort with tiny models on CPU, training
    on the `genes` genes whose common causal SNVs lie closest to the TSS (so a 2,048-bp window sees them)."""
    cohort = demo / "cohort"
    chosen = proximal_genes(cohort / "truth_variants.tsv", DEMO_TRAINING["window"], genes)
    settings = DEMO_TRAINING
    return f"""# Written by `python -m performer_store.demo {demo}`; run with `pstore run {demo}/config.toml`.
store = "whole_blood.zarr"
out = "pipeline"

[inputs]
fasta = "cohort/reference.fa"
vcf = "cohort/genotypes.vcf.gz"
gtf = "cohort/annotation.gtf.gz"
expression = "cohort/expression.bed.gz"
tissue = "whole_blood"
chromatin_states = "cohort/chromatin_states.bed"
finemapped = "cohort/finemapped_eqtls.tsv"
truth = "cohort/truth_variants.tsv"
truth_genes = "cohort/truth_genes.tsv"
mean_expression = "cohort/mean_expression.tsv"   # the across-gene check (report figure 13)

[build]
workers = 2

[enet]
genes = {json.dumps(chosen)}   # the trained genes only: all 24 would add ~4 CPU-minutes
folds = [0]
workers = 2

[train]
config = "{settings['config']}"   # a tiny random-init Enformer: the demo runs on CPU in minutes
folds = [0]
genes = {json.dumps(chosen)}
window = {settings['window']}
lr = {settings['lr']}
accumulation = {settings['accumulation']}
max_epochs = {settings['max_epochs']}
patience = {settings['patience']}
device = "cpu"

[ism]
batch = 64

[report]
genes = {json.dumps(chosen)}
"""


def main(demo: Path) -> None:
    """`python -m performer_store.demo DIR`: write DIR/config.toml for the demo cohort in DIR/cohort."""
    (demo / "config.toml").write_text(demo_config(demo))
    print(f"wrote {demo / 'config.toml'}")


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]))
