"""Bad inputs: one clear line naming the file and record, exit status 1, and no gene that looks complete."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pysam
import pytest

from conftest import build_args, pstore
from performer_store.store import complete_gene_ids
from tiny import write_vcf


def fails(args: list[str], *fragments: str) -> str:
    """Run a build expected to fail; check the one-line message and that no gene looks complete."""
    result = pstore(*args, expect=1)
    message = result.output.strip()
    assert message.startswith("Error: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    store = Path(args[args.index("--store") + 1])
    assert not store.is_dir() or complete_gene_ids(store) == []
    return message


def vcf_lines(cohort) -> list[str]:
    """The tiny VCF as text lines."""
    return gzip.open(cohort.vcf, "rt").read().splitlines()


def rewrite_vcf(cohort, lines: list[str], index: bool = True) -> None:
    """Replace the cohort's VCF (and index) by these lines."""
    Path(str(cohort.vcf) + ".tbi").unlink(missing_ok=True)
    write_vcf(cohort.vcf, "\n".join(lines) + "\n", index=index)


def flipped(data: bytes, start: int, stop: int) -> bytes:
    """A corrupt copy of `data`: bytes [start, stop) inverted."""
    return data[:start] + bytes(b ^ 0xFF for b in data[start:stop]) + data[stop:]


def set_expression_cell(cohort, value: str) -> None:
    """Write `value` into line 3, sample S3 of the cohort's expression BED."""
    lines = cohort.expression.read_text().splitlines()
    fields = lines[2].split("\t")
    fields[6] = value
    lines[2] = "\t".join(fields)
    cohort.expression.write_text("\n".join(lines) + "\n")


def test_missing_index(tiny_copy, tmp_path):
    os.unlink(str(tiny_copy.vcf) + ".tbi")
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "no index", "bcftools index")


def test_truncated_vcf(tiny_copy, tmp_path):
    data = tiny_copy.vcf.read_bytes()
    tiny_copy.vcf.write_bytes(data[: len(data) // 2])
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "truncated")


def test_corrupt_vcf_header_block(tiny_copy, tmp_path):
    tiny_copy.vcf.write_bytes(flipped(tiny_copy.vcf.read_bytes(), 40, 60))  # inside the first BGZF block, which holds the header; the index stays fresh
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "corrupt gzip data", "copy or download it again")


def test_plain_gzip_vcf(tiny_copy, tmp_path):
    tiny_copy.vcf.write_bytes(gzip.compress(gzip.decompress(tiny_copy.vcf.read_bytes())))
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "compressed with gzip, not bgzip", "`bgzip`")


def test_empty_vcf(tiny_copy, tmp_path):
    tiny_copy.vcf.write_bytes(b"")
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "is empty")


def test_uncompressed_vcf_named_gz(tiny_copy, tmp_path):
    tiny_copy.vcf.write_bytes(gzip.decompress(tiny_copy.vcf.read_bytes()))
    message = fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "not bgzip-compressed", "calls.sorted.vcf.gz")
    assert ".gz.gz" not in message


def test_unindexed_bcf(tiny_copy, tmp_path):
    bcf = tiny_copy.vcf.with_name("calls.bcf")
    with pysam.VariantFile(str(tiny_copy.vcf)) as source, pysam.VariantFile(str(bcf), "wb", header=source.header) as out:
        for record in source:
            out.write(record)
    args = build_args(tiny_copy, tmp_path / "s.zarr")
    args[args.index("--vcf") + 1] = str(bcf)
    fails(args, str(bcf), "a BCF needs", f"bcftools index {bcf}")


def test_stale_csi_next_to_fresh_tbi(tiny_copy, tmp_path):
    csi = Path(pysam.tabix_index(str(tiny_copy.vcf), preset="vcf", csi=True, force=True) + ".csi")
    pysam.tabix_index(str(tiny_copy.vcf), preset="vcf", force=True)  # a fresh .tbi; htslib still reads the .csi
    os.utime(csi, (0, 0))
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(csi), "older than the file", "bcftools index -f -c")


def test_dosage_only_vcf(tiny_copy, tmp_path):
    lines = [line.replace("ID=GT,Number=1,Type=String", "ID=DS,Number=1,Type=Float") for line in vcf_lines(tiny_copy)]
    body = [line.split("\t") for line in lines if not line.startswith("#")]
    dosages = ["\t".join(fields[:8] + ["DS"] + ["0.5"] * (len(fields) - 9)) for fields in body]
    rewrite_vcf(tiny_copy, [line for line in lines if line.startswith("#")] + dosages)
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "FORMAT/GT", "hard genotype calls (GT)")


def test_corrupt_record(tiny_copy, tmp_path):
    lines = vcf_lines(tiny_copy)
    row = next(i for i, line in enumerate(lines) if "\t1300\t" in line)
    lines[row] = lines[row].replace("\t1/2\t", "\tfoo\t", 1)
    rewrite_vcf(tiny_copy, lines)
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "corrupt record", "chr1:")


def test_unsorted_vcf(tiny_copy, tmp_path):
    lines = vcf_lines(tiny_copy)
    header = [line for line in lines if line.startswith("#")]
    body = [line for line in lines if not line.startswith("#")]
    rewrite_vcf(tiny_copy, header + body[::-1], index=False)
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "not sorted", "bcftools sort")


def test_ref_mismatch_stops_or_is_skipped(tiny_copy, tmp_path):
    lines = vcf_lines(tiny_copy)
    row = next(i for i, line in enumerate(lines) if "\t1200\t" in line)
    fields = lines[row].split("\t")
    wrong = next(b for b in "ACGT" if b not in (fields[3], fields[4]))
    fields[3] = wrong
    lines[row] = "\t".join(fields)
    rewrite_vcf(tiny_copy, lines)
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "chr1:1200", f"REF {wrong}", "--skip-ref-mismatch")
    result = pstore(*build_args(tiny_copy, tmp_path / "skip.zarr", "--skip-ref-mismatch"))
    assert "1 REF mismatches" in result.output


def test_a_bad_record_found_mid_build_leaves_a_valid_store(tiny_copy, tmp_path):
    """A REF mismatch in the second gene stops the build; the first gene stays complete, listed and valid."""
    from performer_store.store import Store
    from performer_store.validate import validate_store

    lines = vcf_lines(tiny_copy)
    row = next(i for i, line in enumerate(lines) if "\t1200\t" in line)
    fields = lines[row].split("\t")
    fields[3] = next(b for b in "ACGT" if b not in (fields[3], fields[4]))
    lines[row] = "\t".join(fields)
    rewrite_vcf(tiny_copy, lines)
    store = tmp_path / "s.zarr"
    pstore(*build_args(tiny_copy, store, "--gene", "GENE2", "--gene", "GENE1"), expect=1)
    assert validate_store(store) == []
    assert list(Store(store).genes.index) == complete_gene_ids(store) == ["ENSG00000000002.4"]


def test_a_damaged_block_inside_the_vcf_stops_the_read(tiny_copy, tmp_path):
    """A BGZF block with a bad CRC mid-file (header, end block and index intact) is an error, not a short region."""
    import numpy as np

    from performer_store.inputs import InputError, Reference, VariantSource

    reference = Reference(tiny_copy.fasta)
    sequence = reference.fetch("chr1", 0, 4000).decode()
    samples = [f"S{i}" for i in range(200)]
    calls = np.random.default_rng(0).choice(["0/0", "0/1", "1/1"], (4000, len(samples)))
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=chr1,length=4000>", '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples])]
    lines += [f"chr1\t{p}\t.\t{sequence[p - 1]}\t{'G' if sequence[p - 1] == 'C' else 'C'}\t.\tPASS\t.\tGT\t" + "\t".join(calls[p - 1])
              for p in range(1, 4001)]
    vcf = write_vcf(tmp_path / "calls.vcf.gz", "\n".join(lines) + "\n")
    data = bytearray(vcf.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 40] = bytes(b ^ 0x5A for b in data[middle : middle + 40])
    index_time = Path(str(vcf) + ".tbi").stat().st_mtime
    vcf.write_bytes(bytes(data))
    os.utime(vcf, (index_time, index_time))
    source = VariantSource(vcf, samples)
    for _ in range(2):  # the second read would silently find nothing: the handle is dead after the error
        with pytest.raises(InputError, match=f"VCF {vcf}: cannot read region chr1:1-4000 .*the file is damaged"):
            source.window("chr1", 0, 4000, reference, "chr1", skip_ref_mismatch=False)


@pytest.mark.parametrize("dropped", ["chr2\t", "##contig=<ID=chr2,"], ids=["header lists chr2", "header without chr2"])
def test_genes_on_contigs_without_vcf_records(tiny_copy, tmp_path, dropped):
    """A per-chromosome VCF (chr1 records; chr2 in its header or not): chr2's gene is left out and said so, never
    built as all-reference; asked for by name, it is an error."""
    rewrite_vcf(tiny_copy, [line for line in vcf_lines(tiny_copy) if not line.startswith(("chr2\t", dropped))])
    store = tmp_path / "s.zarr"
    result = pstore(*build_args(tiny_copy, store))
    assert "left out 1 genes on contigs the VCF has no records on: chr2 (1)" in result.output
    assert "ENSG00000000002.4" not in complete_gene_ids(store) and len(complete_gene_ids(store)) == 3
    fails(build_args(tiny_copy, tmp_path / "named.zarr", "--gene", "GENE2"), str(tiny_copy.vcf),
          "has no records on contig chr2 (gene ENSG00000000002.4)", "bcftools concat")


@pytest.mark.parametrize("suffix", [".tbi", ".csi"])
@pytest.mark.parametrize("other", ["longer header", "other contig", "not an index"])
def test_index_of_another_vcf(tiny_copy, tmp_path, suffix, other):
    """An index made for another file (newer than the VCF, so not stale) is named as such, with the command that
    re-indexes; htslib would read it silently or as noise and the build call the contig empty."""
    lines = vcf_lines(tiny_copy)
    if other == "longer header":
        lines.insert(1, "##source=another_caller_version_2")
    elif other == "other contig":
        lines = [line for line in lines if not line.startswith("chr1\t")]
    foreign = write_vcf(tmp_path / "other.vcf.gz", "\n".join(lines) + "\n", index=False)
    index = Path(str(tiny_copy.vcf) + suffix)
    if other == "not an index":
        index.write_bytes(gzip.compress(b"neither TBI nor CSI"))
        problem = "cannot be read (damaged, or not a"
    else:
        pysam.tabix_index(str(foreign), preset="vcf", csi=suffix == ".csi", force=True)
        shutil.copy(str(foreign) + suffix, index)
        problem = "does not match the file"
    flag = {".tbi": "-t", ".csi": "-c"}[suffix]
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), f"VCF {tiny_copy.vcf}: index {index} {problem}",
          f"re-index with `bcftools index -f {flag} {tiny_copy.vcf}`")


@pytest.mark.parametrize("position,call,alts", [(1200, "0/3", 1), (1200, "2", 1), (1300, "3/1", 2)])
def test_allele_index_beyond_the_alts(tiny_copy, tmp_path, position, call, alts):
    """A GT allele index beyond the record's ALTs is a malformed VCF: one line naming the record and the sample,
    not a silent reference call."""
    lines = vcf_lines(tiny_copy)
    row = next(i for i, line in enumerate(lines) if line.startswith(f"chr1\t{position}\t"))
    fields = lines[row].split("\t")
    assert len(fields[4].split(",")) == alts
    fields[9 + 2] = call  # sample S3
    lines[row] = "\t".join(fields)
    rewrite_vcf(tiny_copy, lines)
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), f"VCF {tiny_copy.vcf}: record chr1:{position} gives sample S3 GT {call}",
          f"{alts} ALT allele(s)", f"bcftools view -t ^chr1:{position} ")


def add_bed_rows(cohort, contig: str, gene_ids: list[str]) -> None:
    """Append expression rows for these gene IDs (a copy of the first row's values) to the cohort's BED."""
    lines = cohort.expression.read_text().splitlines()
    values = lines[1].split("\t")[4:]
    rows = ["\t".join([contig, "100", "101", gene_id, *values]) for gene_id in gene_ids]
    cohort.expression.write_text("\n".join([*lines, *rows]) + "\n")


def test_bed_genes_the_gtf_lacks_are_left_out_with_a_warning(tiny_copy, tmp_path):
    """The default build names the BED genes the GTF lacks (another GENCODE release): their count and the first 5;
    a BED none of whose genes the GTF has is an error."""
    add_bed_rows(tiny_copy, "chr1", [f"ENSG0000099999{i}.1" for i in range(7)])
    gtf_ids = {line.split('gene_id "')[1].split('"')[0] for line in gzip.open(tiny_copy.gtf, "rt") if "gene_id" in line}
    bed_ids = list(pd.read_csv(tiny_copy.expression, sep="\t")["gene_id"])
    missing = [g for g in bed_ids if g not in gtf_ids]
    store = tmp_path / "s.zarr"
    result = pstore(*build_args(tiny_copy, store))
    assert (f"Warning: left out {len(missing)} genes of expression BED {tiny_copy.expression} that GTF {tiny_copy.gtf} "
            f"lacks: {', '.join(missing[:5])} and {len(missing) - 5} more; use the GTF the expression was quantified with") in result.output
    assert sorted(complete_gene_ids(store)) == sorted(gtf_ids)
    tiny_copy.gtf.write_bytes(gzip.compress(b"chr1\tX\tgene\t10\t20\t.\t+\t.\tgene_id \"ENSG00000000077.1\";\n"))
    fails(build_args(tiny_copy, tmp_path / "none.zarr"), f"GTF {tiny_copy.gtf}: has none of the {len(bed_ids)} genes of expression BED",
          missing[0], "use the GTF the expression was quantified with")


def test_genes_on_contigs_the_fasta_lacks(tiny_copy, tmp_path):
    """The default build leaves a gene on a contig the FASTA lacks (chrM) out with a warning counting it per contig;
    asked for by name it is an error, and so is a FASTA that has no gene's contig (another naming or build)."""
    with gzip.open(tiny_copy.gtf, "at") as handle:
        handle.write('chrM\tENSEMBL\tgene\t3307\t4262\t.\t+\t.\tgene_id "ENSG00000198888.2"; gene_name "MT-ND1";\n')
    add_bed_rows(tiny_copy, "chrM", ["ENSG00000198888.2"])
    store = tmp_path / "s.zarr"
    result = pstore(*build_args(tiny_copy, store))
    assert (f"Warning: left out 1 genes on contigs FASTA {tiny_copy.fasta} lacks: chrM (1); build them with a FASTA of "
            "the same genome build that has those contigs") in result.output
    assert len(complete_gene_ids(store)) == 4
    fails(build_args(tiny_copy, tmp_path / "named.zarr", "--gene", "MT-ND1"), str(tiny_copy.fasta),
          "no contig 'chrM' (gene ENSG00000198888.2", "use a FASTA of the same genome build")
    tiny_copy.fasta.write_text(tiny_copy.fasta.read_text().replace(">chr", ">chrom"))
    Path(f"{tiny_copy.fasta}.fai").unlink(missing_ok=True)
    fails(build_args(tiny_copy, tmp_path / "renamed.zarr"), str(tiny_copy.fasta), "no contig 'chr", "chrom1",
          "use a FASTA of the same genome build")


def test_unversioned_ids_pick_the_chrx_copy_of_a_par_gene():
    """GENCODE lists a PAR gene twice (ENSG...N on chrX, ENSG...N_PAR_Y on chrY): a bare ID means the chrX one."""
    from performer_store.inputs import select_genes

    rows = [("ENSG00000182378.14", "PLCXD1", "protein_coding", "chrX", "+", 100),
            ("ENSG00000182378.14_PAR_Y", "PLCXD1", "protein_coding", "chrY", "+", 100)]
    gtf = pd.DataFrame(rows, columns=["gene_id", "gene_name", "gene_type", "contig", "strand", "tss"]).set_index("gene_id", drop=False)
    for query in ("ENSG00000182378", "ENSG00000182378.13", "ENSG00000182378.14"):
        assert [g.contig for g in select_genes(gtf, [query], Path("x.gtf"))] == ["chrX"], query
    assert [g.contig for g in select_genes(gtf, ["ENSG00000182378.14_PAR_Y"], Path("x.gtf"))] == ["chrY"]


def test_contig_naming_mismatch(tiny_copy, tmp_path):
    lines = [line.replace("chr1", "chrom1").replace("chr2", "chrom2") for line in vcf_lines(tiny_copy)]
    rewrite_vcf(tiny_copy, lines)
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "no contig 'chr", "chrom1", "--rename-chrs")


def test_gene_not_in_gtf(tiny_copy, tmp_path):
    fails(build_args(tiny_copy, tmp_path / "s.zarr", "--gene", "ENSG99999999999"), str(tiny_copy.gtf), "ENSG99999999999")


def test_no_sample_overlap(tiny_copy, tmp_path):
    text = tiny_copy.expression.read_text()
    tiny_copy.expression.write_text(text.replace("\tS", "\tP"))
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.expression), str(tiny_copy.vcf), "--sample-map")


def test_duplicate_sample_in_vcf(tiny_copy, tmp_path):
    lines = vcf_lines(tiny_copy)
    row = next(i for i, line in enumerate(lines) if line.startswith("#CHROM"))
    lines[row] = lines[row].replace("\tS2\t", "\tS1\t")
    rewrite_vcf(tiny_copy, lines)
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.vcf), "sample S1 appears twice")


def test_duplicate_sample_in_expression(tiny_copy, tmp_path):
    text = tiny_copy.expression.read_text()
    tiny_copy.expression.write_text(text.replace("\tS2\t", "\tS1\t", 1))
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.expression), "sample S1 appears twice")


def test_non_numeric_expression(tiny_copy, tmp_path):
    set_expression_cell(tiny_copy, "1.2.3")
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.expression), "line 3", "'1.2.3'", "S3")


@pytest.mark.parametrize("value", ["inf", "-Infinity", "1e999"])
def test_non_finite_expression(tiny_copy, tmp_path, value):
    set_expression_cell(tiny_copy, value)
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.expression), "line 3", repr(value), "S3", "not a finite number")


@pytest.mark.parametrize("keep_header, problem", [(False, "line 1: header must be"), (True, "no gene rows")])
def test_expression_without_rows(tiny_copy, tmp_path, keep_header, problem):
    header = tiny_copy.expression.read_text().splitlines(keepends=True)[0]
    tiny_copy.expression.write_text(header if keep_header else "")
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.expression), problem)


@pytest.mark.parametrize("damage, problem", [
    (lambda data: flipped(data, 100, 104), "corrupt gzip data"),
    (lambda data: data[: len(data) // 2], "truncated"),
    (lambda data: b"\x1f\x8bgarbage", "not gzip"),
], ids=["corrupt", "truncated", "garbage"])
def test_damaged_gzip_gtf(tiny_copy, tmp_path, damage, problem):
    tiny_copy.gtf.write_bytes(damage(tiny_copy.gtf.read_bytes()))
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.gtf), problem, "copy or download it again")


@pytest.mark.parametrize("change", ["rewrapped", "truncated"])
def test_fasta_index_of_another_file(tiny_copy, tmp_path, change):
    """A .fai made before the FASTA was re-wrapped or truncated is refused, not read as shifted or short windows."""
    import pyfaidx

    pyfaidx.Fasta(str(tiny_copy.fasta)).close()  # the .fai of the original file
    text = tiny_copy.fasta.read_text()
    if change == "rewrapped":
        records = [r.split("\n", 1) for r in text.split(">")[1:]]
        text = "".join(f">{name}\n" + "\n".join(s[i : i + 7] for i in range(0, len(s), 7)) + "\n"
                       for name, body in records for s in [body.replace("\n", "")])
    else:
        text = text[: len(text) * 2 // 3]
    tiny_copy.fasta.write_text(text)
    fails(build_args(tiny_copy, tmp_path / "s.zarr"), str(tiny_copy.fasta), ".fai does not match the file", "delete the .fai")


def test_store_path_is_a_file(tiny_copy, tmp_path):
    target = tmp_path / "file.zarr"
    target.write_text("not a store")
    fails(build_args(tiny_copy, target), str(target), "is a file")
    assert target.read_text() == "not a store"


def test_read_only_output_directory(tiny_copy, tmp_path):
    if os.geteuid() == 0:
        parent = Path("/sys")  # root writes through permission bits; sysfs refuses new files even to root
    else:
        parent = tmp_path / "locked"
        parent.mkdir()
        parent.chmod(0o555)
    fails(build_args(tiny_copy, parent / "s.zarr"), "cannot write in", str(parent))


def test_store_from_other_inputs_is_refused(tiny_copy, tiny, tmp_path):
    store = tmp_path / "s.zarr"
    pstore(*build_args(tiny, store, "--gene", "GENE1"))
    text = tiny_copy.expression.read_text()
    tiny_copy.expression.write_text(text.replace("0.", "1.", 1))
    message = pstore(*build_args(tiny_copy, store), expect=1).output
    assert "was built from another expression" in message and "--force" in message
    assert complete_gene_ids(store) == ["ENSG00000000001.1"]


def test_other_format_version_is_refused(tiny_store, tmp_path):
    copy = tmp_path / "old.zarr"
    shutil.copytree(tiny_store, copy)
    meta = copy / "zarr.json"
    meta.write_text(meta.read_text().replace('"performer_store_format": 1', '"performer_store_format": 0'))
    message = pstore("info", str(copy), expect=1).output
    assert "format version 0" in message and "pstore build --force" in message


@pytest.mark.parametrize("problem", ["no such file", "is a directory"])
@pytest.mark.parametrize("missing", ["fasta", "vcf", "gtf", "expression"])
def test_missing_input_file(tiny_copy, tmp_path, missing, problem):
    given = tmp_path / "nope.txt"
    if problem == "is a directory":
        given.mkdir()
    args = build_args(tiny_copy, tmp_path / "s.zarr")
    args[args.index(f"--{missing}") + 1] = str(given)
    fails(args, str(given), problem)


GENES_FILE = """# genes to build
   # an indented comment is a comment too

ENSG00000000001.1
\t
ENSG00000000003.2   # trailing note
ENSG00000000001.1
"""


def test_genes_file_skips_comments_and_blank_lines_and_repeats(tiny_copy, tmp_path):
    """Indented and trailing comments and whitespace-only lines are no gene IDs; a gene given twice is built once."""
    genes = tmp_path / "genes.txt"
    genes.write_text(GENES_FILE)
    store = tmp_path / "s.zarr"
    result = pstore(*build_args(tiny_copy, store, "--genes", str(genes), "--gene", "ENSG00000000003.2"))
    assert "Warning: 2 gene(s) given more than once (first: ENSG00000000003.2); each is used once" in result.output
    assert complete_gene_ids(store) == ["ENSG00000000001.1", "ENSG00000000003.2"]


def test_a_run_records_each_gene_once(tiny_store, tmp_path):
    """run.json lists a gene given by --gene and twice in --genes once, in first-seen order. (The tiny cohort has one
    tune person, so the run ends without a best epoch, exit 1, but with its run.json.)"""
    genes = tmp_path / "genes.txt"
    genes.write_text("ENSG00000000003.2\nENSG00000000001.1\n  # more\nENSG00000000003.2\n")
    run = tmp_path / "run"
    pstore("train", "--store", str(tiny_store), "--gene", "ENSG00000000001.1", "--genes", str(genes), "--fold", "0",
           "--config", "tiny", "--out", str(run), "--micro-batch", "4", "--accumulation", "2", "--max-epochs", "1",
           "--device", "cpu", "--quiet", expect=1)
    assert json.loads((run / "run.json").read_text())["genes"] == ["ENSG00000000001.1", "ENSG00000000003.2"]


def damaged_copy(tiny_store, tmp_path) -> tuple[Path, Path]:
    """A private copy of the tiny store and its first gene's directory."""
    copy = tmp_path / "damaged.zarr"
    shutil.copytree(tiny_store, copy)
    return copy, sorted((copy / "genes").iterdir())[0]


def validate_fails(store: Path, *args: str) -> list[str]:
    """Run `pstore validate` expected to find problems; the problem lines (no traceback)."""
    result = pstore("validate", *args, str(store), expect=1)
    assert result.exc_info is None or result.exc_info[0] is SystemExit, result.exc_info
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "problems" in lines[-1]
    return lines[:-1]


@pytest.mark.parametrize("deep", [[], ["--deep"]])
@pytest.mark.parametrize("array", ["dosage_onehot_delta", "variant_position"])
def test_validate_names_a_truncated_chunk_file(tiny_store, tmp_path, deep, array):
    store, gene = damaged_copy(tiny_store, tmp_path)
    chunk = sorted(p for p in (gene / array / "c").rglob("*") if p.is_file())[0]
    chunk.write_bytes(chunk.read_bytes()[:20])
    key = chunk.relative_to(gene).as_posix()
    assert validate_fails(store, *deep) == [
        f"genes/{gene.name}/{key}: chunk file is truncated or not a zstd frame (20 bytes); "
        f"delete {gene} and run `pstore build` again to rebuild the gene"]


def test_validate_deep_names_a_chunk_that_does_not_decode(tiny_store, tmp_path):
    store, gene = damaged_copy(tiny_store, tmp_path)
    chunk = gene / "variant_position" / "c" / "0"
    data = chunk.read_bytes()
    chunk.write_bytes(flipped(data, 12, len(data) - 4))
    assert "a chunk does not decode" in validate_fails(store)[0]
    (problem,) = validate_fails(store, "--deep")
    assert problem.startswith(f"genes/{gene.name}/variant_position/c/0: chunk file does not decode")


def test_validate_names_an_unreadable_zarr_json(tiny_store, tmp_path):
    store, gene = damaged_copy(tiny_store, tmp_path)
    (gene / "target" / "zarr.json").write_text('{"bad json')
    (problem,) = validate_fails(store)
    assert problem.startswith(f"genes/{gene.name}/target/zarr.json: unreadable array metadata (JSONDecodeError")


def one_line_error(result) -> str:
    """The one 'Error: ...' line of a refused command (no traceback)."""
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("Error: ") and result.exc_info[0] is SystemExit, result.output
    return message


def test_replace_atomically_names_an_output_that_cannot_be_written(tmp_path):
    from performer_store.inputs import InputError
    from performer_store.results import replace_atomically

    (tmp_path / "afile").write_text("")
    with pytest.raises(InputError, match=r"afile is a file, not a folder\); choose another path"):
        replace_atomically(tmp_path / "afile" / "w.tsv", lambda temporary: temporary.write_text("x"))
    with pytest.raises(InputError, match=r"w.tsv: cannot write it \("):
        replace_atomically(unwritable_folder(tmp_path) / "w.tsv", lambda temporary: temporary.write_text("x"))


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder in which no new file can be made, for this user (root writes through permission bits: sysfs)."""
    if os.geteuid() == 0:
        return Path("/sys")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked


@pytest.mark.parametrize("name", ["a" * 251 + ".tsv", "\u00e9" * 125 + ".tsv"])
def test_replace_atomically_writes_the_longest_legal_names(tmp_path, name):
    """A file name of up to 255 bytes (NAME_MAX) is written, though '.<name>.<pid>.tmp' would be longer."""
    from performer_store.results import replace_atomically

    replace_atomically(tmp_path / name, lambda temporary: temporary.write_text("x"))
    assert [p.name for p in tmp_path.iterdir()] == [name] and (tmp_path / name).read_text() == "x"


def test_an_output_name_too_long_is_one_error_and_leaves_nothing(tmp_path):
    """A name over 255 bytes: one InputError naming the path and the reason (not the partial file's clean-up); no
    partial file is left."""
    from performer_store.inputs import InputError
    from performer_store.results import replace_atomically

    out = tmp_path / ("a" * 252 + ".tsv")
    with pytest.raises(InputError) as error:
        replace_atomically(out, lambda temporary: temporary.write_text("x"))
    assert str(error.value) == f"{out}: cannot write it (File name too long); choose another path"
    assert list(tmp_path.iterdir()) == []


def test_query_writes_an_output_name_of_255_bytes(tiny_store, tmp_path):
    out = tmp_path / ("a" * 251 + ".tsv")
    pstore("query", "--store", str(tiny_store), "--out", str(out))
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@pytest.mark.parametrize("command", [["query", "--out", "{file}/w.tsv"], ["report", "--out", "{file}"]])
def test_an_output_under_a_file_is_a_one_line_error(tiny_store, tmp_path, command):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    args = [arg.format(file=blocker) for arg in command]
    message = one_line_error(pstore(args[0], "--store", str(tiny_store), *args[1:], expect=1))
    assert f"{blocker} is a file, not a folder" in message


def test_simulate_into_a_file_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    message = one_line_error(pstore("simulate", str(blocker), "--individuals", "20", "--genes", "1", "--window", "8192", "--quiet", expect=1))
    assert f"{blocker} is a file, not a folder" in message


def test_compare_refuses_a_table_name_before_computing(tiny_store, tmp_path):
    result = pstore("compare", "--store", str(tiny_store), "--out", str(tmp_path / "c.tsv"), "--out", str(tmp_path / "c.csv"), expect=2)
    assert result.output.strip().splitlines()[-1] == f"Error: Invalid value for --out: {tmp_path / 'c.csv'}: give a .tsv or .parquet file name"
    assert "no enet results" not in result.output and list(tmp_path.iterdir()) == []


def test_query_refuses_min_maf_above_max_maf(tiny_store, tmp_path):
    result = pstore("query", "--store", str(tiny_store), "--min-maf", "0.4", "--max-maf", "0.1", "--out", str(tmp_path / "q.tsv"), expect=2)
    assert result.output.strip().splitlines()[-1] == ("Error: Invalid value for --min-maf: 0.4 is above --max-maf 0.1, which keeps "
                                                      "no SNV; give --min-maf <= --max-maf")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["--min-maf", "--max-maf"])
def test_query_refuses_a_nan_maf(tiny_store, tmp_path, option):
    result = pstore("query", "--store", str(tiny_store), option, "nan", "--out", str(tmp_path / "q.tsv"), expect=2)
    assert result.output.strip().splitlines()[-1] == f"Error: Invalid value for '{option}': nan is not a finite number."
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("deep", [[], ["--deep"]])
def test_validate_names_a_damaged_result_chunk(tiny_store, tmp_path, deep):
    """A result group's chunk files are checked like a gene's: a truncated one is named with the command that writes
    the result again, and a chunk that does not decode is one line, not a traceback."""
    store, gene = damaged_copy(tiny_store, tmp_path)
    pstore("enet", "--store", str(store), "--gene", gene.name, "--folds", "0")
    result = gene / "results" / "enet"
    chunk = result / "pearson_r" / "c" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    assert validate_fails(store, *deep) == [
        f"genes/{gene.name}/results/enet/pearson_r/c/0: chunk file is truncated or not a zstd frame (20 bytes); "
        f"delete {result} and run `pstore enet` again to write it anew"]


def test_validate_names_a_result_status_that_does_not_decode(tiny_store, tmp_path):
    store, gene = damaged_copy(tiny_store, tmp_path)
    pstore("enet", "--store", str(store), "--gene", gene.name, "--folds", "0")
    chunk = gene / "results" / "enet" / "status" / "c" / "0"
    data = chunk.read_bytes()
    chunk.write_bytes(flipped(data, 12, len(data) - 4))
    (problem,) = validate_fails(store)
    assert problem.startswith(f"genes/{gene.name}/results/enet/status: a chunk does not decode")
    (problem,) = validate_fails(store, "--deep")
    assert problem.startswith(f"genes/{gene.name}/results/enet/status/c/0: chunk file does not decode")


def test_version_hint_keeps_a_par_genes_copies_apart():
    """The 'the store has X.14' hint names the copy asked for: an ID with _PAR_Y its chrY copy, a bare one its chrX copy."""
    from types import SimpleNamespace

    from performer_store.store import Store

    store = SimpleNamespace(genes=pd.DataFrame(index=["ENSG00000182378.14", "ENSG00000182378.14_PAR_Y", "ENSG00000000001.2"]))
    asked = ["ENSG00000182378.13_PAR_Y", "ENSG00000182378", "ENSG00000182378.13", "ENSG00000000001.1", "ENSG00000000009.1"]
    assert Store.other_versions(store, asked) == {"ENSG00000182378.13_PAR_Y": "ENSG00000182378.14_PAR_Y",
                                                  "ENSG00000182378": "ENSG00000182378.14",
                                                  "ENSG00000182378.13": "ENSG00000182378.14",
                                                  "ENSG00000000001.1": "ENSG00000000001.2"}


def test_replace_atomically_keeps_links_and_refuses_devices(tiny_store, tmp_path):
    """An output path that is a symlink has its target rewritten (the link stays); a pipe or device (e.g. /dev/stdout
    given as --out) is refused and left as it is, not replaced by a regular file."""
    import os

    from performer_store.inputs import InputError
    from performer_store.results import replace_atomically

    target = tmp_path / "real.tsv"
    target.write_text("old")
    link = tmp_path / "link.tsv"
    link.symlink_to(target)
    replace_atomically(link, lambda temporary: temporary.write_text("new"))
    assert link.is_symlink() and target.read_text() == "new"
    pipe = tmp_path / "pipe.tsv"
    os.mkfifo(pipe)
    with pytest.raises(InputError, match=f"{pipe}: not a regular file"):
        replace_atomically(pipe, lambda temporary: temporary.write_text("x"))
    assert pipe.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["link.tsv", "pipe.tsv", "real.tsv"]
    result = pstore("query", "--store", str(tiny_store), "--out", str(pipe), expect=1)  # through a command
    assert pipe.is_fifo() and f"{pipe}: not a regular file" in result.output


LONG = "n" * 256
"""A file or folder name one byte over NAME_MAX: every use of a path holding it is ENAMETOOLONG, even exists()."""


def too_long(option: str, name: str, folder: Path) -> str:
    """click's line for a name over the file system's NAME_MAX (read from pathconf here, not from the code)."""
    limit = os.pathconf(folder, "PC_NAME_MAX")
    return (f"Error: Invalid value for '{option}': '{name[:21]}...' is {len(name.encode())} bytes, longer than the {limit} "
            "bytes a file or folder name can have; choose a shorter name")


@pytest.mark.parametrize("command, option", [
    (["train", "--store", "{store}", "--gene", "ENSG00000000001.1", "--fold", "0", "--config", "tiny", "--out", "{long}"], "--out"),
    (["train", "--store", "{store}", "--gene", "ENSG00000000001.1", "--fold", "0", "--config", "tiny", "--name", "x",
      "--out", "{long}/run"], "--out"),
    (["report", "--store", "{store}", "--out", "{long}"], "--out"),
    (["export", "predictdb", "--store", "{store}", "--out", "{long}/model.db"], "--out"),
    (["query", "--store", "{store}", "--out", "{long}/w.tsv"], "--out"),
    (["compare", "--store", "{store}", "--out", "{long}/c.tsv"], "--out"),
    (["simulate", "{long}", "--individuals", "20", "--genes", "1", "--quiet"], "OUT_DIR"),
    (["simulate", "{tmp}/a", "--second-cohort", "{long}", "--individuals", "20", "--genes", "1", "--quiet"], "--second-cohort"),
    (["enet", "--store", "{long}/s.zarr"], "--store"),
    (["evaluate", "--store", "{store}", "--run", "{long}"], "--run"),
])
def test_a_name_too_long_for_the_file_system_is_one_line(tiny_store, tmp_path, command, option):
    """An output (or any) path with a name over 255 bytes ended in an OSError traceback from the first exists() or
    mkdir (make_directory's own error message called exists() again); now click's one line naming the option and the
    limit, before anything is written."""
    args = [arg.format(store=tiny_store, long=tmp_path / LONG, tmp=tmp_path) for arg in command]
    result = pstore(*args, expect=2)
    assert result.output.strip().splitlines()[-1] == too_long(option, LONG, tmp_path), result.output
    assert list(tmp_path.iterdir()) == []


def test_build_into_a_store_name_too_long_is_one_line(tiny, tmp_path):
    result = pstore(*build_args(tiny, tmp_path / LONG / "store.zarr"), expect=2)
    assert result.output.strip().splitlines()[-1] == too_long("--store", LONG, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_input_name_too_long_is_one_line(tiny_store, tmp_path):
    """Input files too (here a --mask-variants TSV, a plain string option read by `require_file`)."""
    path = tmp_path / (LONG + ".tsv")
    result = pstore("train", "--store", str(tiny_store), "--gene", "ENSG00000000001.1", "--fold", "0", "--config", "tiny",
                    "--out", str(tmp_path / "run"), "--mask-variants", str(path), expect=1)
    assert result.output == (f"Error: variant list {path}: '{LONG[:21]}...' is 260 bytes, longer than the "
                             f"{os.pathconf(tmp_path, 'PC_NAME_MAX')} bytes a file or folder name can have; choose a shorter name\n")
    assert list(tmp_path.iterdir()) == []


def test_a_results_name_too_long_is_one_line(tiny_store, tmp_path):
    """A results name becomes a folder name: --name is held to 128 characters (already before the other fixes)."""
    result = pstore("ism", "--store", str(tiny_store), "--run", str(tmp_path), "--name", LONG, expect=1)
    assert result.output.startswith(f"Error: --name '{LONG}': not a results name; ") and "at most 128 characters" in result.output
