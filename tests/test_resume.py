"""Builds killed with SIGKILL at random moments resume to the same store; a realistic cohort validates deeply."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from performer_store.simulate import simulate_cohort
from performer_store.store import Store, complete_gene_ids, is_complete
from performer_store.validate import validate_store
from test_build import assert_same_arrays

N_GENES = 8


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A simulated cohort: 300 people, 8 genes, full 49,152-bp windows, multi-allelic sites and indels."""
    return simulate_cohort(tmp_path_factory.mktemp("cohort"), individuals=300, genes=N_GENES, seed=5,
                           multiallelic=True, indels=True)


def build_command(cohort, store: Path) -> list[str]:
    """The build of the simulated cohort as a separate process."""
    return [sys.executable, "-m", "performer_store", "build", "--quiet", "--store", str(store), "--tissue", "whole_blood",
            "--fasta", str(cohort.reference), "--vcf", str(cohort.vcf), "--gtf", str(cohort.annotation),
            "--expression", str(cohort.expression)]


@pytest.fixture(scope="module")
def uninterrupted(cohort, tmp_path_factory) -> Path:
    """The store of an uninterrupted build."""
    store = tmp_path_factory.mktemp("whole") / "store.zarr"
    subprocess.run(build_command(cohort, store), check=True, capture_output=True)
    return store


def test_realistic_store_is_valid_and_complete(cohort, uninterrupted):
    """Every gene built, every dosage one-hot equal to its variant table, SNV counts as in the VCF."""
    store = Store(uninterrupted)
    assert len(store.genes) == N_GENES and validate_store(uninterrupted, deep=True) == []
    assert 400 < store.genes["gene_n_variants"].median() < 900
    maf = np.concatenate([store.gene(g)["variant_maf"][:] for g in store.genes.index])
    assert 0.5 < (maf < 0.01).mean() < 0.9


def kill_when(process: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILL the process as soon as `ready()` holds (polled every 2 ms), unless it ends first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait()


def test_killed_builds_resume_to_the_same_store(cohort, uninterrupted, tmp_path):
    """SIGKILL while the root is written, then mid-gene after 1, 3 and 5 genes; no gene ever looks complete
    unless it is, and the last run finishes a store equal to an uninterrupted build."""
    store = tmp_path / "killed.zarr"
    staging = store / ".pstore-staging"
    moments = [lambda: (store / "zarr.json").exists()]
    moments += [lambda k=k: len(complete_gene_ids(store)) >= k and staging.is_dir() and any(staging.iterdir()) for k in (1, 3, 5)]
    partial = []
    for ready in moments:
        process = subprocess.Popen(build_command(cohort, store), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        kill_when(process, ready)
        assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
        partial.append(len(complete_gene_ids(store)))
        for directory in (store / "genes").glob("*"):
            if directory.is_dir():
                assert is_complete(directory)  # a gene directory is only ever there complete
        if partial[-1]:
            problems = [p for p in validate_store(store, deep=True) if not p.startswith("gene index lists")]
            assert problems == []
    assert partial[1:] == sorted(partial[1:]) and 0 < partial[-1] < N_GENES, partial
    subprocess.run(build_command(cohort, store), check=True, capture_output=True)
    assert not staging.exists()
    assert validate_store(store) == []
    assert_same_arrays(uninterrupted, store)
