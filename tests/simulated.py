"""A small simulated cohort built into a store: realistic genotypes for the linear-model tests."""

from __future__ import annotations

from pathlib import Path

from performer_store.build import BuildConfig, build_store
from performer_store.simulate import CohortFiles, simulate_cohort

PEOPLE = 160  # ~125 train people per fold, ~100 per inner fold


def simulated_store(directory: Path, window: int) -> tuple[CohortFiles, Path]:
    """Simulate 160 people x 4 genes (seed 11) and build their store (with its mean expression) with the given window.

    With the full 49,152 bp window genes have 270-420 SNVs, more than an inner fold's people (scikit-learn's
    default then runs coordinate descent without a Gram matrix); with 8,192 bp they have fewer.
    """
    cohort = simulate_cohort(directory / "cohort", individuals=PEOPLE, genes=4, seed=11)
    store = directory / "store.zarr"
    build_store(BuildConfig(store=store, fasta=cohort.reference, vcf=cohort.vcf, gtf=cohort.annotation,
                            expression=cohort.expression, tissue="whole_blood", window=window,
                            mean_expression=cohort.mean_expression, progress=False))
    return cohort, store
