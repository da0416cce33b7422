"""Shared fixtures: the tiny hand-written cohort, its store, and a CLI runner."""

from __future__ import annotations

import os

# One torch/OpenMP thread per test process (and the processes tests start): pytest -n 2 runs two on 2 cores,
# and tiny models gain nothing from a second thread while oversubscribed OpenMP threads wait on each other
# for milliseconds per op (measured 40x slower).
os.environ["OMP_NUM_THREADS"] = "1"

import shutil
import traceback
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from performer_store.cli import main
from tiny import WINDOW, TinyCohort, write_tiny_cohort

torch.set_num_threads(1)


def build_args(cohort: TinyCohort, store: Path, *extra: str) -> list[str]:
    """`pstore build` arguments for the tiny cohort."""
    return ["build", "--quiet", "--store", str(store), "--fasta", str(cohort.fasta), "--vcf", str(cohort.vcf),
            "--gtf", str(cohort.gtf), "--expression", str(cohort.expression), "--tissue", "whole_blood",
            "--window", str(WINDOW), *extra]


def pstore(*args: str, expect: int = 0):
    """Run the CLI in-process; check its exit code and return the click Result."""
    result = CliRunner().invoke(main, list(args))
    if result.exit_code != expect:
        trace = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
        raise AssertionError(f"exit {result.exit_code} (expected {expect}); output:\n{result.output}\n{trace}")
    return result


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyCohort:
    """The tiny cohort's files (read-only for tests: copy before changing)."""
    return write_tiny_cohort(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_store(tiny, tmp_path_factory) -> Path:
    """A store built serially from the tiny cohort."""
    store = tmp_path_factory.mktemp("tiny_store") / "store.zarr"
    pstore(*build_args(tiny, store))
    return store


@pytest.fixture
def tiny_copy(tiny, tmp_path) -> TinyCohort:
    """A private copy of the tiny cohort's files, free to break."""
    directory = tmp_path / "inputs"
    shutil.copytree(tiny.fasta.parent, directory)
    return TinyCohort(*(directory / Path(p).name for p in (tiny.fasta, tiny.vcf, tiny.gtf, tiny.expression)), tiny.sequences)


@pytest.fixture(scope="session")
def sim_store(tmp_path_factory) -> Path:
    """A simulated cohort (60 people, 3 genes) built with 1,024-bp windows: enough tune people for training tests."""
    from performer_store.build import BuildConfig, build_store
    from performer_store.simulate import simulate_cohort

    cohort = simulate_cohort(tmp_path_factory.mktemp("sim"), individuals=60, genes=3, seed=11)
    store = tmp_path_factory.mktemp("sim_store") / "store.zarr"
    build_store(BuildConfig(store=store, fasta=cohort.reference, vcf=cohort.vcf, gtf=cohort.annotation,
                            expression=cohort.expression, tissue="whole_blood", window=1024, progress=False))
    return store
