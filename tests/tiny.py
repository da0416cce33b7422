"""A tiny hand-written cohort with every case the build must handle, written in the real file formats.

Genes (window 1,024 bp in tests):
- GENE1 (+, chr1, TSS 1,500): het, hom-alt, missing, half-missing, haploid and phased calls, a multi-allelic
  site (1/2, 2/2), an indel next to an SNV, a symbolic allele, two records at one position, soft-masked bases.
- GENE2 (-, chr2, TSS 300): window runs off the contig start (N padding).
- GENE3 (+, chr1, TSS 400): window holds a run of N in the FASTA and runs off the contig start.
- GENE4 (-, chr1, TSS 3,900): window runs off the contig end; no variants.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysam

WINDOW = 1024
VCF_SAMPLES = [f"S{i}" for i in range(1, 14)]  # S13 has no expression
EXPRESSION_SAMPLES = [f"S{i}" for i in range(1, 13)] + ["X99"]  # X99 has no genotypes
GENES = [  # gene_id, name, contig, strand, start, end (GTF, 1-based inclusive)
    ("ENSG00000000001.1", "GENE1", "chr1", "+", 1501, 2600),
    ("ENSG00000000002.4", "GENE2", "chr2", "-", 100, 300),
    ("ENSG00000000003.2", "GENE3", "chr1", "+", 401, 900),
    ("ENSG00000000004.1", "GENE4", "chr1", "-", 3000, 3900),
]
CONTIG_LENGTHS = {"chr1": 4000, "chr2": 2500}


@dataclass(frozen=True)
class TinyCohort:
    """Paths of the tiny cohort's files."""

    fasta: Path
    vcf: Path
    gtf: Path
    expression: Path
    sequences: dict


def _sequences(seed: int) -> dict[str, str]:
    """Random contigs with an N run on chr1 and a soft-masked stretch."""
    rng = np.random.default_rng(seed)
    contigs = {}
    for name, length in CONTIG_LENGTHS.items():
        contigs[name] = "".join(rng.choice(list("ACGT"), length))
    chr1 = list(contigs["chr1"])
    chr1[150:230] = "N" * 80
    chr1[1600:1650] = [b.lower() for b in chr1[1600:1650]]
    contigs["chr1"] = "".join(chr1)
    return contigs


def _records(seq: dict[str, str]) -> list[tuple]:
    """(contig, pos, id, ref, alts, genotypes) with REF taken from the FASTA (case-insensitive)."""

    def ref(contig: str, pos: int, length: int = 1) -> str:
        return seq[contig][pos - 1 : pos - 1 + length].upper()

    def other(base: str, k: int = 1) -> str:
        bases = [b for b in "ACGT" if b != base]
        return bases[k - 1]

    r = []
    p = 1200  # GENE1 window is [988, 2012): POS 989..2012
    r.append(("chr1", 990, ".", ref("chr1", 990), [other(ref("chr1", 990))], ["0/1", "1/1", "./.", "0/0", "1|0", "0/0", "0/1"]))
    r.append(("chr1", p, "rs1", ref("chr1", p), [other(ref("chr1", p))], ["1/1", "0/1", "0/1", "./1", "1", "0/0", "0/0"]))
    r.append(("chr1", 1300, ".", ref("chr1", 1300), [other(ref("chr1", 1300), 1), other(ref("chr1", 1300), 2)],
              ["1/2", "2/2", "0/2", "1/1", "0/0", "2/1", "0/1"]))
    r.append(("chr1", 1400, ".", ref("chr1", 1400, 3), [ref("chr1", 1400)], ["0/1", "1/1", "0/0", "0/0", "0/1", "0/0", "0/0"]))
    r.append(("chr1", 1401, ".", ref("chr1", 1401), [other(ref("chr1", 1401))], ["0/1", "0/0", "1/1", "0/1", "0/0", "0/1", "0/0"]))
    r.append(("chr1", 1450, ".", ref("chr1", 1450), ["<DEL>"], ["0/1", "0/0", "0/0", "0/0", "0/0", "0/0", "0/0"]))
    r.append(("chr1", 1500, ".", ref("chr1", 1500), [other(ref("chr1", 1500), 3)], ["0/1", "1/1", "0/0", "1/1", "0/0", "0/0", "0/0"]))
    r.append(("chr1", 1500, ".", ref("chr1", 1500), [other(ref("chr1", 1500), 1)], ["1/1", "0/1", "0/1", "0/0", "0/0", "1/1", "0/0"]))
    r.append(("chr1", 1501, ".", ref("chr1", 1501), [ref("chr1", 1501) + "TT"], ["0/1", "0/0", "0/0", "0/0", "1/1", "0/0", "0/0"]))
    r.append(("chr1", 1620, ".", ref("chr1", 1620), [other(ref("chr1", 1620))], ["0/0", "0/1", "1/1", "0/1", "0/0", "./.", "0/0"]))
    r.append(("chr1", 2012, ".", ref("chr1", 2012), [other(ref("chr1", 2012))], ["1/1", "0/0", "0/1", "0/0", "0/0", "0/1", "0/0"]))
    r.append(("chr1", 2013, ".", ref("chr1", 2013), [other(ref("chr1", 2013))], ["1/1", "1/1", "1/1", "1/1", "1/1", "1/1", "1/1"]))
    # GENE3 window [-112, 912) on chr1: one SNV before and after the N run
    r.append(("chr1", 100, ".", ref("chr1", 100), [other(ref("chr1", 100))], ["0/1", "0/0", "1/1", "0/0", "0/1", "0/0", "0/0"]))
    r.append(("chr1", 600, ".", ref("chr1", 600), [other(ref("chr1", 600))], ["0/0", "0/1", "0/0", "1/1", "0/1", "0/1", "0/0"]))
    # GENE2 window [-213, 811) on chr2
    r.append(("chr2", 5, ".", ref("chr2", 5), [other(ref("chr2", 5))], ["0/1", "0/1", "0/1", "1/1", "0/0", "0/0", "0/1"]))
    r.append(("chr2", 700, ".", ref("chr2", 700), [other(ref("chr2", 700))], ["1/1", "0/0", "./.", "0/1", "0/1", "0/0", "0/0"]))
    return sorted([(*x[:5], x[5] + x[5][1:]) for x in r], key=lambda x: (x[0], x[1]))  # 7 written, 6 repeated


def write_fasta(path: Path, sequences: dict[str, str]) -> None:
    """A FASTA with 60-base lines (pyfaidx writes the .fai on first open)."""
    with open(path, "w") as handle:
        for name, seq in sequences.items():
            handle.write(f">{name}\n")
            handle.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))


def vcf_text(records: list[tuple], samples: list[str], contigs: dict[str, int]) -> str:
    """VCF 4.2 text of the given records."""
    lines = ["##fileformat=VCFv4.2"]
    lines += [f"##contig=<ID={name},length={length}>" for name, length in contigs.items()]
    lines += ['##ALT=<ID=DEL,Description="Deletion">', '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">']
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]))
    for contig, pos, vid, ref, alts, gts in records:
        lines.append("\t".join([contig, str(pos), vid, ref, ",".join(alts), ".", "PASS", ".", "GT", *gts]))
    return "\n".join(lines) + "\n"


def write_vcf(path: Path, text: str, index: bool = True) -> Path:
    """bgzip (and tabix-index) a VCF text; returns the .vcf.gz path."""
    plain = path.with_suffix("")
    plain.write_text(text)
    if index:
        return Path(pysam.tabix_index(str(plain), preset="vcf", force=True))
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    return path


def gtf_text(genes: list[tuple]) -> str:
    """GENCODE-style GTF gene lines."""
    lines = ["##description: tiny test annotation"]
    for gene_id, name, contig, strand, start, end in genes:
        attrs = f'gene_id "{gene_id}"; gene_type "protein_coding"; gene_name "{name}"; level 2;'
        lines.append("\t".join([contig, "HAVANA", "gene", str(start), str(end), ".", strand, ".", attrs]))
        lines.append("\t".join([contig, "HAVANA", "transcript", str(start), str(end), ".", strand, ".", attrs]))
    return "\n".join(lines) + "\n"


def expression_text(genes: list[tuple], samples: list[str], seed: int) -> str:
    """GTEx-style expression BED with random values (6 decimals)."""
    rng = np.random.default_rng(seed)
    lines = ["\t".join(["#chr", "start", "end", "gene_id", *samples])]
    for gene_id, _, contig, strand, start, end in genes:
        tss = start - 1 if strand == "+" else end - 1
        values = [f"{v:.6f}" for v in rng.normal(size=len(samples))]
        lines.append("\t".join([contig, str(tss), str(tss + 1), gene_id, *values]))
    return "\n".join(lines) + "\n"


def write_tiny_cohort(directory: Path, seed: int = 7) -> TinyCohort:
    """Write the tiny cohort's FASTA, VCF (+.tbi), GTF (gz) and expression BED into a directory."""
    directory.mkdir(parents=True, exist_ok=True)
    sequences = _sequences(seed)
    write_fasta(directory / "ref.fa", sequences)
    vcf = write_vcf(directory / "calls.vcf.gz", vcf_text(_records(sequences), VCF_SAMPLES, CONTIG_LENGTHS))
    with gzip.open(directory / "genes.gtf.gz", "wt") as handle:
        handle.write(gtf_text(GENES))
    (directory / "expression.bed").write_text(expression_text(GENES, EXPRESSION_SAMPLES, seed))
    return TinyCohort(directory / "ref.fa", vcf, directory / "genes.gtf.gz", directory / "expression.bed", sequences)
