"""Build speed and store size against the method's original pipeline, measured in the same run.

The original pipeline (the method's reference code): per gene, the window's FASTA and the SNVs of the
region; per person and haplotype, `bcftools consensus -H 1|2`; the FASTA read back and one-hot encoded;
the two one-hots averaged. It is timed on a sample of people and genes (its rate per window does not
depend on how many) and compared with `pstore build` of the whole demo cohort (670 people x 49,152 bp).

    python benchmarks/build.py [--cohort DIR] [--workers 2] [--baseline-people 48] [--baseline-genes 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from performer_store.build import BuildConfig, build_store
from performer_store.encode import onehot
from performer_store.inputs import Reference
from performer_store.store import Store, directory_size


def bcftools_pipeline(cohort: Path, store: Store, genes: list[str], people: list[str], work: Path) -> tuple[float, int]:
    """Seconds and windows of the consensus pipeline for these genes and people (checked against the store)."""
    reference = Reference(cohort / "reference.fa")
    started = time.perf_counter()
    windows = 0
    for gene_id in genes:
        row = store.genes.loc[gene_id]
        start, stop, contig = int(row.gene_window_start), int(row.gene_window_stop), row.gene_contig
        inner = max(start, 0), min(stop, reference.lengths[contig])
        fasta = work / "window.fa"
        fasta.write_text(f">{contig}:{inner[0] + 1}-{inner[1]}\n{reference.fetch(contig, *inner).decode()}\n")
        snvs = work / "snvs.vcf.gz"
        subprocess.run(f"bcftools view -r {contig}:{inner[0] + 1}-{inner[1]} {cohort / 'genotypes.vcf.gz'} -Ou | "
                       f"bcftools norm -m- -Ou | bcftools view -v snps -Oz -o {snvs} && bcftools index -f -t {snvs}",
                       shell=True, check=True, capture_output=True)
        for person in people:
            haplotypes = []
            for haplotype in ("1", "2"):
                out = subprocess.run(["bcftools", "consensus", "-f", str(fasta), "-s", person, "-H", haplotype, str(snvs)],
                                     check=True, capture_output=True).stdout
                sequence = b"".join(out.splitlines()[1:])
                padded = b"N" * (inner[0] - start) + sequence + b"N" * (stop - inner[1])
                haplotypes.append(onehot(padded).astype(np.float32))
            dosage = (haplotypes[0] + haplotypes[1]) / 2
            row_index = int(np.flatnonzero(store.sample_id == person)[0])
            assert np.array_equal(dosage, store.dosage_onehot(gene_id, np.array([row_index]))[0].astype(np.float32))
            windows += 1
    return time.perf_counter() - started, windows


def main() -> None:
    """Simulate (or reuse) the demo cohort, build it, time the baseline, print rates and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, help="A `pstore simulate --demo` directory (default: simulate one).")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-people", type=int, default=48)
    parser.add_argument("--baseline-genes", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pstore-bench-"))
    cohort = args.cohort
    if cohort is None:
        from performer_store.simulate import simulate_cohort

        cohort = work / "cohort"
        simulate_cohort(cohort, individuals=670, genes=24, seed=1, multiallelic=True, indels=True)
    config = BuildConfig(store=work / "store.zarr", fasta=cohort / "reference.fa", vcf=cohort / "genotypes.vcf.gz",
                         gtf=cohort / "annotation.gtf.gz", expression=cohort / "expression.bed.gz", tissue="whole_blood",
                         workers=args.workers, progress=False)
    started = time.perf_counter()
    report = build_store(config)
    build_seconds = time.perf_counter() - started
    store = Store(config.store)
    n_windows = len(store.sample_id) * len(store.genes)
    genes = list(store.genes.index[: args.baseline_genes])
    people = list(store.sample_id[: args.baseline_people])
    baseline_seconds, baseline_windows = bcftools_pipeline(cohort, store, genes, people, work)
    stored = sum(directory_size(config.store / "genes" / g / "dosage_onehot_delta") for g in store.genes.index)
    raw = n_windows * store.window * 4 * 2
    ours, theirs = n_windows / build_seconds, baseline_windows / baseline_seconds
    print(f"cohort: {len(store.sample_id)} people x {len(store.genes)} genes x {store.window} bp; {report.counts['variants']} SNV rows")
    print(f"pstore build ({args.workers} worker processes, incl. planning and worker start): {n_windows} windows in {build_seconds:.1f} s = {ours:,.0f} windows/s")
    print(f"bcftools consensus pipeline: {baseline_windows} windows in {baseline_seconds:.1f} s = {theirs:,.1f} windows/s")
    print(f"speed ratio (pstore / bcftools): {ours / theirs:,.0f}x")
    print(f"dosage one-hots: {stored / n_windows:,.0f} B per window stored vs {raw / n_windows:,.0f} B raw float16 "
          f"({raw / stored:,.0f}x smaller); whole store {directory_size(config.store) / n_windows:,.0f} B per window")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
