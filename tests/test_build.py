"""The store's numbers against independent computations: per-person consensus sequences, the BED, the VCF."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from conftest import build_args, pstore
from test_bad_inputs import rewrite_vcf, vcf_lines
from performer_store.store import Store
from performer_store.validate import validate_store
from tiny import GENES, WINDOW

BASE_ROWS = {"A": [1, 0, 0, 0], "C": [0, 1, 0, 0], "G": [0, 0, 1, 0], "T": [0, 0, 0, 1]}


def parse_vcf(path: Path) -> tuple[list[str], list[list[str]]]:
    """Samples and records of a VCF read as plain text (independent of cyvcf2)."""
    samples, records = [], []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if line.startswith("#CHROM"):
                samples = line.rstrip("\n").split("\t")[9:]
            elif not line.startswith("#"):
                records.append(line.rstrip("\n").split("\t"))
    return samples, records


def python_consensus(sequence: str, start: int, records: list[list[str]], column: int, haplotype: int) -> str:
    """One haplotype of one person: apply its SNV alleles to the window; the first record at a position wins."""
    bases = list(sequence)
    changed = set()
    for _contig, pos, _id, ref, alts, *rest in records:
        offset = int(pos) - 1 - start
        if not 0 <= offset < len(bases) or offset in changed:
            continue
        gt = rest[4 + column].replace("|", "/").split("/")
        allele = gt[haplotype] if haplotype < len(gt) else "0"  # haploid: the second haplotype is the reference
        if allele in (".", "0"):
            continue
        alt = alts.split(",")[int(allele) - 1]
        if len(ref) == 1 and len(alt) == 1 and alt in BASE_ROWS:
            bases[offset] = alt
            changed.add(offset)
    return "".join(bases)


def encode(sequence: str) -> np.ndarray:
    """One-hot of a sequence, written independently of the package (N and anything else 0.25)."""
    return np.array([BASE_ROWS.get(b.upper(), [0.25] * 4) for b in sequence], dtype=np.float32)


def window_sequence(tiny, contig: str, start: int, window: int = WINDOW) -> str:
    """The FASTA window with N beyond contig edges."""
    seq = tiny.sequences[contig]
    return "".join(seq[i] if 0 <= i < len(seq) else "N" for i in range(start, start + window))


def gene_rows():
    """(gene_id, contig, tss) of the tiny genes."""
    return [(g[0], g[2], g[4] - 1 if g[3] == "+" else g[5] - 1) for g in GENES]


def assert_python_consensus(tiny, path: Path, gene_id: str, contig: str, tss: int, window: int = WINDOW) -> None:
    """Every person's stored dosage one-hot of a gene equals the mean of their two consensus one-hots, made from the
    VCF's records that have GT (the others call nobody)."""
    store = Store(path)
    samples, records = parse_vcf(tiny.vcf)
    records = [r for r in records if r[0] == contig and "GT" in r[8].split(":")]
    start = tss - window // 2
    assert store.genes.loc[gene_id, "gene_window_start"] == start
    reference = window_sequence(tiny, contig, start, window)
    stored = store.dosage_onehot(gene_id).astype(np.float32)
    np.testing.assert_array_equal(store.gene(gene_id)["reference_onehot"][:], encode(reference))
    for row, person in enumerate(store.sample_id):
        column = samples.index(person)
        haplotypes = [encode(python_consensus(reference, start, records, column, h)) for h in (0, 1)]
        np.testing.assert_array_equal(stored[row], (haplotypes[0] + haplotypes[1]) / 2, err_msg=f"{gene_id} {person}")


def test_record_without_gt_calls_nobody(tiny_copy, tmp_path):
    """A record whose FORMAT lacks GT (optional per record; here DS only) is uncalled for everyone: it leaves every
    one-hot at the reference and is counted, in the gene and in the build's summary."""
    from tiny import write_vcf

    lines = gzip.open(tiny_copy.vcf, "rt").read().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("chr1\t1200\t"))
    fields = lines[row].split("\t")
    lines[row] = "\t".join([*fields[:8], "DS", *["0.5"] * (len(fields) - 9)])
    lines.insert(1, '##FORMAT=<ID=DS,Number=1,Type=Float,Description="Dosage">')
    Path(str(tiny_copy.vcf) + ".tbi").unlink()
    write_vcf(tiny_copy.vcf, "\n".join(lines) + "\n")
    store = tmp_path / "nogt.zarr"
    result = pstore(*build_args(tiny_copy, store, "--gene", "GENE1"))
    assert "1 records without GT (uncalled)" in result.output
    gene_id, contig, tss = gene_rows()[0]
    gene = Store(store).gene(gene_id)
    assert gene.attrs["counts"]["records_without_gt"] == 1 and 1200 not in gene["variant_position"][:]
    assert_python_consensus(tiny_copy, store, gene_id, contig, tss)


@pytest.mark.parametrize("gene_id,contig,tss", gene_rows())
def test_onehot_equals_python_consensus(tiny, tiny_store, gene_id, contig, tss):
    """Every person's stored dosage one-hot equals the mean of their two consensus one-hots."""
    assert_python_consensus(tiny, tiny_store, gene_id, contig, tss, WINDOW)


def test_window_wider_than_its_contig_is_padded_with_n_on_both_sides(tiny, tmp_path):
    """A contig shorter than the window (chrM, 16,569 bp, in 49,152; here 8,192 bp on contigs of 4,000 and 2,500 bp)
    builds: the window runs off both ends, N-padded, and every one-hot equals the consensus; the store validates."""
    store, window = tmp_path / "wide.zarr", 8192
    args = build_args(tiny, store)
    args[args.index("--window") + 1] = str(window)
    pstore(*args)
    for gene_id, contig, tss in gene_rows():
        assert tss - window // 2 < 0 and tss + window // 2 > len(tiny.sequences[contig])
        assert_python_consensus(tiny, store, gene_id, contig, tss, window)
    assert validate_store(store, deep=True) == []


def test_onehot_equals_bcftools_consensus(tiny, tiny_store, tmp_path):
    """The same against `bcftools consensus` on the split, SNV-only VCF (the method's original pipeline)."""
    assert shutil.which("bcftools"), "bcftools is missing: `make test` installs it (apt-get install bcftools)"
    snvs = tmp_path / "snvs.vcf.gz"
    subprocess.run(f"bcftools norm -m- {tiny.vcf} -Ou | bcftools view -v snps -Oz -o {snvs} && bcftools index -t {snvs}",
                   shell=True, check=True, capture_output=True)
    store = Store(tiny_store)
    for gene_id, contig, tss in gene_rows():
        start = tss - WINDOW // 2
        inside = max(start, 0), min(start + WINDOW, len(tiny.sequences[contig]))
        fasta = tmp_path / "window.fa"
        fasta.write_text(f">{contig}:{inside[0] + 1}-{inside[1]}\n{tiny.sequences[contig][inside[0]:inside[1]]}\n")
        stored = store.dosage_onehot(gene_id).astype(np.float32)
        for row, person in enumerate(store.sample_id):
            onehots = []
            for haplotype in (1, 2):
                out = subprocess.run(["bcftools", "consensus", "-f", str(fasta), "-s", person, "-H", str(haplotype), str(snvs)],
                                     check=True, capture_output=True, text=True).stdout
                body = "".join(out.splitlines()[1:])
                onehots.append(encode("N" * (inside[0] - start) + body + "N" * (start + WINDOW - inside[1])))
            np.testing.assert_array_equal(stored[row], (onehots[0] + onehots[1]) / 2, err_msg=f"{gene_id} {person}")


def test_targets_equal_expression_bed(tiny, tiny_store):
    """Targets are the BED's values of the right people, in store order."""
    bed = pd.read_csv(tiny.expression, sep="\t").set_index("gene_id")
    store = Store(tiny_store)
    for gene_id in store.genes.index:
        expected = bed.loc[gene_id, list(store.sample_id)].to_numpy(np.float32)
        np.testing.assert_array_equal(store.gene(gene_id)["target"][:], expected)


def test_variant_table_matches_vcf(tiny, tiny_store):
    """Positions, alleles, genotypes and MAF of GENE1 against the VCF text, split per ALT, SNVs only."""
    samples, records = parse_vcf(tiny.vcf)
    store = Store(tiny_store)
    gene = store.gene("ENSG00000000001.1")
    start = int(gene.attrs["window_start"])
    columns = [samples.index(p) for p in store.sample_id]
    expected = []
    for contig, pos, vid, ref, alts, *rest in records:
        if contig != "chr1" or not start < int(pos) <= start + WINDOW:
            continue
        for index, alt in enumerate(alts.split(","), 1):
            if len(ref) == 1 and len(alt) == 1 and alt in BASE_ROWS:
                calls = []
                for c in columns:
                    gt = rest[4 + c].replace("|", "/").split("/")
                    calls.append([-1 if a == "." else int(a == str(index)) for a in gt] + [-2] * (2 - len(gt)))
                expected.append((int(pos), ref, alt, vid, np.array(calls)))
    assert gene["variant_position"][:].tolist() == [e[0] for e in expected]
    assert gene["variant_allele"][:].tolist() == [[e[1], e[2]] for e in expected]
    assert gene["variant_id"][:].tolist() == [e[3] for e in expected]
    calls = np.stack([e[4] for e in expected])
    np.testing.assert_array_equal(gene["call_genotype"][:], calls)
    frequency = (calls == 1).sum(axis=(1, 2)) / (calls >= 0).sum(axis=(1, 2))  # haploid: one allele called
    np.testing.assert_allclose(gene["variant_maf"][:], np.minimum(frequency, 1 - frequency), rtol=1e-6)
    counts = gene.attrs["counts"]
    assert (counts["indel_alleles"], counts["symbolic_alleles"], counts["multiallelic_sites"]) == (2, 1, 1)


def allele_kind(ref: str, alt: str) -> str:
    """What an ALT is, by the method's rule that only SNVs enter the store (written independently of the package)."""
    if alt.startswith("<") or alt in ("*", "."):
        return "symbolic"
    if len(ref) != len(alt):
        return "indel"
    if len(ref) > 1:
        return "MNP"
    return "SNV" if ref in BASE_ROWS and alt in BASE_ROWS else "non-ACGT"


def test_mnps_and_n_alleles_are_counted_apart_from_indels_and_filter_is_not_applied(tiny_copy, tmp_path):
    """An MNP (REF GG, ALT TC) and an ALT N are left out and counted as such, not as indels; a LowQual record is used
    like any other (the method applies no FILTER; --help says how to filter beforehand)."""
    sequence, swap = tiny_copy.sequences["chr1"].upper(), str.maketrans("ACGT", "CGTA")
    lines = vcf_lines(tiny_copy)
    people = len(lines[-1].split("\t")) - 9
    added = [(1700, sequence[1699:1701], sequence[1699:1701].translate(swap), "PASS"), (1800, sequence[1799], "N", "PASS"),
             (1900, sequence[1899], sequence[1899].translate(swap), "LowQual")]
    records = [f"chr1\t{pos}\t.\t{ref}\t{alt}\t.\t{flag}\t.\tGT" + "\t0/1" * people for pos, ref, alt, flag in added]
    header = [line for line in lines if line.startswith("#")]
    header.insert(1, '##FILTER=<ID=LowQual,Description="Low quality">')
    body = sorted([line for line in lines if not line.startswith("#")] + records, key=lambda r: (r.split("\t")[0], int(r.split("\t")[1])))
    rewrite_vcf(tiny_copy, header + body)
    store = tmp_path / "s.zarr"
    result = pstore(*build_args(tiny_copy, store, "--gene", "GENE1"))
    start = int(Store(store).genes.loc["ENSG00000000001.1", "gene_window_start"])
    _, parsed = parse_vcf(tiny_copy.vcf)
    kinds = Counter(allele_kind(ref, alt) for contig, pos, _, ref, alts, *_ in parsed
                    if contig == "chr1" and start < int(pos) <= start + WINDOW for alt in alts.split(","))
    assert (kinds["MNP"], kinds["non-ACGT"]) == (1, 1)
    assert (f"left out {kinds['indel']} indel, {kinds['MNP']} MNP, {kinds['non-ACGT']} non-ACGT (N, IUPAC) and "
            f"{kinds['symbolic']} symbolic alleles") in result.output
    counts = Store(store).gene("ENSG00000000001.1").attrs["counts"]
    assert [counts[k] for k in ("indel_alleles", "mnp_alleles", "non_acgt_alleles", "symbolic_alleles", "snv_alleles")] == [
        kinds["indel"], kinds["MNP"], kinds["non-ACGT"], kinds["symbolic"], kinds["SNV"]]
    positions = set(Store(store).gene("ENSG00000000001.1")["variant_position"][:].tolist())
    assert 1900 in positions and not positions & {1700, 1800}
    assert "bcftools view -f PASS" in " ".join(pstore("build", "--help").output.split())


def test_people_and_splits(tiny, tiny_store):
    """People = VCF and BED overlap; 3 folds with disjoint test sets; order and splits seeded."""
    store = Store(tiny_store)
    assert sorted(store.sample_id) == sorted(f"S{i}" for i in range(1, 13))
    splits = store.root["sample_split"][:]
    test = splits == 2
    assert test.sum(axis=0).max() == 1 and test.sum() > 0
    assert all((row == 0).sum() >= 8 for row in splits)
    samples = store.attrs["samples"]
    assert (samples["vcf_only"], samples["expression_only"]) == (["S13"], ["X99"])


def test_same_input_twice_gives_identical_arrays(tiny, tiny_store, tmp_path):
    """A second build of the same inputs writes the same bytes for every array."""
    other = tmp_path / "again.zarr"
    pstore(*build_args(tiny, other))
    assert_same_arrays(tiny_store, other)


def assert_same_arrays(first: Path, second: Path) -> None:
    """Every array of two stores is equal (NaN equal to NaN), and both hold the same genes."""
    a, b = zarr.open_group(str(first), mode="r"), zarr.open_group(str(second), mode="r")
    names_a = sorted(p for p, _ in a.arrays()) + sorted(f"genes/{g}/{n}" for g, grp in a["genes"].groups() for n, _ in grp.arrays())
    names_b = sorted(p for p, _ in b.arrays()) + sorted(f"genes/{g}/{n}" for g, grp in b["genes"].groups() for n, _ in grp.arrays())
    assert names_a == names_b
    for name in names_a:
        x, y = a[name][...], b[name][...]
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert (x == y).all(), name


def test_rerun_adds_missing_genes_and_skips_complete(tiny, tmp_path):
    """Building one gene, then all, builds only the rest; --force rebuilds everything."""
    store = tmp_path / "grow.zarr"
    pstore(*build_args(tiny, store, "--gene", "GENE1"))
    assert list(Store(store).genes.index) == ["ENSG00000000001.1"]
    result = pstore(*build_args(tiny, store))
    assert "built 3 genes, 1 already complete" in result.output
    result = pstore(*build_args(tiny, store, "--force"))
    assert "built 4 genes, 0 already complete" in result.output


@pytest.mark.parametrize("force", [False, True])
def test_a_second_build_is_refused_while_one_writes(tiny, tmp_path, monkeypatch, force):
    """While a build (new store, or --force) encodes genes, another command cannot take the store's lock."""
    import performer_store.build as build
    from performer_store.inputs import InputError
    from performer_store.store import store_lock

    store = tmp_path / "locked.zarr"
    if force:
        pstore(*build_args(tiny, store, "--gene", "GENE1"))
    refused, encode_genes = [], build.map_tasks

    def try_second_lock(*args, **kwargs):
        with pytest.raises(InputError, match="another pstore command is writing it"):
            with store_lock(store):
                pass
        refused.append(True)
        return encode_genes(*args, **kwargs)

    monkeypatch.setattr(build, "map_tasks", try_second_lock)
    pstore(*build_args(tiny, store, *(["--force"] if force else [])))
    assert refused


def test_contig_names_reconciled(tiny_copy, tmp_path):
    """A VCF naming contigs `1`/`2` builds against a FASTA naming them `chr1`/`chr2`."""
    from tiny import CONTIG_LENGTHS, VCF_SAMPLES, vcf_text, write_vcf

    samples, records = parse_vcf(tiny_copy.vcf)
    renamed = [(r[0][3:], int(r[1]), r[2], r[3], r[4].split(","), r[9:]) for r in records]
    vcf = write_vcf(tmp_path / "nochr.vcf.gz", vcf_text(renamed, VCF_SAMPLES, {k[3:]: v for k, v in CONTIG_LENGTHS.items()}))
    store = tmp_path / "nochr.zarr"
    args = build_args(tiny_copy, store)
    args[args.index("--vcf") + 1] = str(vcf)
    pstore(*args)
    assert Store(store).genes["gene_n_variants"].sum() == 13


def test_gtex_sample_ids_map_to_participants(tiny_copy, tmp_path):
    """Expression columns GTEX-XXXX-0005-SM-YYYY match VCF participants GTEX-XXXX; a map file works too."""
    text = tiny_copy.expression.read_text().replace("\tS", "\tGTEX-S").replace("\tX99", "\tGTEX-X99")
    header, rest = text.split("\n", 1)
    header = "\t".join(c + "-0005-SM-AB12" if c.startswith("GTEX-") else c for c in header.split("\t"))
    bed = tmp_path / "gtex.bed"
    bed.write_text(header + "\n" + rest)
    vcf_text_gtex = gzip.open(tiny_copy.vcf, "rt").read().replace("\tS", "\tGTEX-S")
    from tiny import write_vcf

    vcf = write_vcf(tmp_path / "gtex.vcf.gz", vcf_text_gtex)
    store = tmp_path / "gtex.zarr"
    args = build_args(tiny_copy, store)
    args[args.index("--vcf") + 1], args[args.index("--expression") + 1] = str(vcf), str(bed)
    pstore(*args)
    assert len(Store(store).sample_id) == 12
    mapping = tmp_path / "map.tsv"
    mapping.write_text("".join(f"GTEX-S{i}-0005-SM-AB12\tGTEX-S{13 - i}\n" for i in range(1, 13)))
    remapped = tmp_path / "remapped.zarr"
    args[args.index("--store") + 1] = str(remapped)
    pstore(*args, "--sample-map", str(mapping))
    original, swapped = Store(store), Store(remapped)
    gene = "ENSG00000000001.1"
    by_person = dict(zip(original.sample_id, original.gene(gene)["target"][:]))
    swapped_targets = dict(zip(swapped.sample_id, swapped.gene(gene)["target"][:]))
    assert all(swapped_targets[f"GTEX-S{13 - i}"] == by_person[f"GTEX-S{i}"] for i in range(1, 13))


def test_nan_targets_kept_and_counted(tiny_copy, tmp_path):
    """NA in the BED becomes NaN in the store and is counted."""
    lines = tiny_copy.expression.read_text().splitlines()
    fields = lines[1].split("\t")
    fields[4], fields[5] = "NA", "nan"
    tiny_copy.expression.write_text("\n".join([lines[0], "\t".join(fields), *lines[2:]]) + "\n")
    store = tmp_path / "nan.zarr"
    result = pstore(*build_args(tiny_copy, store))
    assert "2 NaN targets" in result.output
    target = Store(store).gene(fields[3])["target"][:]
    assert np.isnan(target).sum() == 2
