"""Tests of the simulated cohort against independent readers (pyfaidx, cyvcf2, pysam, pandas, pyjaspar)."""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import cyvcf2
import numpy as np
import pandas as pd
import pyfaidx
import pysam
import pytest
from click.testing import CliRunner
from conftest import pstore
from scipy.special import ndtri

from performer_store.cli import main
from performer_store.simulate import FILE_NAMES, WINDOW, CohortFiles, simulate_cohort

HALF = WINDOW // 2
CHR20 = Path("/usr/share/doc/vt/examples/ref/20.fa.gz")
STATES = {"1_TssA", "4_Tx", "5_TxWk", "7_Enh", "13_ReprPC", "15_Quies"}
SMALL = {"individuals": 60, "genes": 4, "seed": 0}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> CohortFiles:
    """60 people, 4 genes, defaults."""
    return simulate_cohort(tmp_path_factory.mktemp("small"), **SMALL)


@pytest.fixture(scope="module")
def extras(tmp_path_factory: pytest.TempPathFactory) -> CohortFiles:
    """The small cohort with multiallelic sites and indels."""
    return simulate_cohort(tmp_path_factory.mktemp("extras"), **SMALL, multiallelic=True, indels=True)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> CohortFiles:
    """GTEx-sized people (670), 3 genes."""
    return simulate_cohort(tmp_path_factory.mktemp("large"), individuals=670, genes=3, seed=3)


def read_vcf(path: Path) -> list[dict]:
    """Every VCF record through cyvcf2: contig, 1-based position, alleles, ID, INFO and genotypes."""
    records = []
    for variant in cyvcf2.VCF(str(path)):
        records.append({
            "contig": variant.CHROM,
            "position": variant.POS,
            "id": variant.ID,
            "ref": variant.REF,
            "alt": variant.ALT,
            "info": dict(variant.INFO),
            "genotypes": np.array([g[:2] for g in variant.genotypes]),
            "phased": any(g[2] for g in variant.genotypes),
        })
    return records


def alt_dosage(record: dict) -> np.ndarray:
    """Copies of the first ALT per person, NaN where missing."""
    genotypes = record["genotypes"]
    dosage = (genotypes == 1).sum(axis=1).astype(float)
    dosage[(genotypes < 0).any(axis=1)] = np.nan
    return dosage


def read_expression(path: Path) -> pd.DataFrame:
    """The expression BED: one row per gene, people as columns."""
    return pd.read_csv(path, sep="\t")


def read_gtf(path: Path) -> pd.DataFrame:
    """GTF lines as a table with gene_id and gene_name parsed."""
    table = pd.read_csv(path, sep="\t", comment="#", header=None,
                        names=["contig", "source", "feature", "start", "end", "score", "strand", "frame", "attributes"])
    table["gene_id"] = table["attributes"].str.extract(r'gene_id "([^"]+)"')[0]
    return table


def read_states(path: Path) -> pd.DataFrame:
    """The chromatin-state BED."""
    return pd.read_csv(path, sep="\t", header=None, names=["contig", "start", "end", "state"])


def element_of(states: pd.DataFrame, contig: str, position0: int) -> str:
    """The state label covering a 0-based position."""
    hit = states[(states.contig == contig) & (states.start <= position0) & (states.end > position0)]
    assert len(hit) == 1
    return hit.state.iloc[0]


def test_returns_paths_of_all_files(small: CohortFiles) -> None:
    for field, name in FILE_NAMES.items():
        assert getattr(small, field) == small.out_dir / name
        assert getattr(small, field).is_file()
    for index in ("reference.fa.fai", "genotypes.vcf.gz.tbi", "expression.bed.gz.tbi"):
        assert (small.out_dir / index).is_file()
    assert not [p for p in small.out_dir.iterdir() if p.name.startswith(".")]
    assert json.loads(small.cohort.read_text()) == small.summary
    assert small.summary["individuals"] == 60 and small.summary["genes"] == 4
    assert small.summary["jaspar_release"] == "JASPAR2024"
    assert len(small.summary["motifs"]) == 20
    assert small.genes.read_text().split() == list(pd.read_csv(small.truth_genes, sep="\t").gene_id)


def test_reference_fasta_is_realistic(small: CohortFiles) -> None:
    fasta = pyfaidx.Fasta(str(small.reference))
    assert list(fasta.keys()) == ["chr1", "chr2", "chr3"]
    for record in small.reference.read_text().split(">")[1:]:
        lines = record.splitlines()[1:]
        assert {len(line) for line in lines[:-1]} == {60} and 0 < len(lines[-1]) <= 60
    sequence = "".join(str(fasta[name][:]) for name in fasta.keys())
    for name in fasta.keys():
        assert set(str(fasta[name][:10_000])) == {"N"}
    acgt = sequence.replace("N", "")
    gc = (acgt.count("C") + acgt.count("G")) / len(acgt)
    cpg_oe = sum(str(fasta[n][:]).count("CG") for n in fasta.keys()) * len(acgt) / (acgt.count("C") * acgt.count("G"))
    assert 0.38 < gc < 0.44
    assert 0.18 < cpg_oe < 0.30
    assert small.summary["gc_fraction"] == pytest.approx(gc, abs=1e-4)


def test_vcf_matches_reference_and_is_indexed(small: CohortFiles) -> None:
    fasta = pyfaidx.Fasta(str(small.reference))
    records = read_vcf(small.vcf)
    order = {name: index for index, name in enumerate(fasta.keys())}
    keys = [(order[r["contig"]], r["position"]) for r in records]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for record in records:
        assert record["ref"] == str(fasta[record["contig"]][record["position"] - 1]) and record["ref"] in "ACGT"
        assert len(record["alt"]) == 1 and len(record["alt"][0]) == 1 and record["alt"][0] != record["ref"]
        assert record["id"] == f"{record['contig']}_{record['position']}_{record['ref']}_{record['alt'][0]}_b38"
        assert not record["phased"]
    vcf = cyvcf2.VCF(str(small.vcf))
    assert list(vcf.seqnames) == ["chr1", "chr2", "chr3"]
    assert vcf.seqlens == [len(fasta[name]) for name in fasta.keys()]
    in_region = [r for r in records if r["contig"] == "chr2" and 30_000 <= r["position"] <= 70_000]
    assert len(list(vcf("chr2:30000-70000"))) == len(in_region) > 0
    samples = vcf.samples
    assert len(samples) == 60 and len(set(samples)) == 60 and samples == sorted(samples)
    assert all(re.fullmatch(r"GTEX-[0-9A-Z]{4,5}", sample) for sample in samples)
    missing = np.mean([(r["genotypes"] < 0).any(axis=1).mean() for r in records])
    assert 0.0005 < missing < 0.006
    text = gzip_text(small.vcf).decode()
    assert text.startswith("##fileformat=VCFv4.2\n")
    assert "\t0/1\t" in text and "|" not in text


def test_genes_windows_and_annotation(small: CohortFiles) -> None:
    truth = pd.read_csv(small.truth_genes, sep="\t")
    gtf = read_gtf(small.annotation)
    genes = gtf[gtf.feature == "gene"].set_index("gene_id").loc[truth.gene_id]
    assert set(genes.strand) == {"+", "-"}
    assert genes.contig.nunique() >= 2
    tss_1based = np.where(genes.strand == "+", genes.start, genes.end)
    assert list(tss_1based) == list(truth.tss + 1)
    assert ((genes.end - genes.start + 1).between(1_000, 40_000)).all()
    assert genes.attributes.str.match(r'gene_id "ENSG\d{11}\.\d+"; gene_type "(protein_coding|lncRNA)"; '
                                      r'gene_name "SIM\d+[A-Z]"; level 2;').all()
    for _, lines in gtf.groupby("gene_id"):
        assert (lines.feature == "transcript").sum() == 1
        assert 1 <= (lines.feature == "exon").sum() <= 3
    assert (truth.tss < HALF).any(), "one window must run off a contig start"
    for _, group in truth.groupby("contig"):
        assert (np.diff(np.sort(group.tss)) >= WINDOW).all(), "windows overlap"
    fasta = pyfaidx.Fasta(str(small.reference))
    gaps = [str(fasta[g.contig][max(g.tss - HALF, 10_000) : g.tss + HALF]).count("N") for g in truth.itertuples()]
    assert max(gaps) > 0, "one window must hold an N gap"
    expression = read_expression(small.expression)
    assert list(expression["start"]) == list(truth.tss) and list(expression["end"]) == list(truth.tss + 1)
    assert list(expression["gene_id"]) == list(truth.gene_id)


def test_expression_people_and_inverse_normal(small: CohortFiles) -> None:
    expression = read_expression(small.expression)
    assert list(expression.columns[:4]) == ["#chr", "start", "end", "gene_id"]
    people = list(expression.columns[4:])
    vcf_people = cyvcf2.VCF(str(small.vcf)).samples
    assert len(set(people) - set(vcf_people)) == 2
    assert len(set(vcf_people) - set(people)) == 1
    values = expression.iloc[:, 4:].to_numpy()
    expected = ndtri((np.arange(len(people)) + 0.5) / len(people))
    np.testing.assert_allclose(np.sort(values, axis=1), np.tile(expected, (len(values), 1)), atol=1e-6)
    tabix = pysam.TabixFile(str(small.expression))
    assert len(list(tabix.fetch("chr1"))) == (expression["#chr"] == "chr1").sum()


def test_causal_variants_in_elements_change_their_motif(small: CohortFiles, large: CohortFiles) -> None:
    from pyjaspar import jaspardb

    database = jaspardb(release="JASPAR2024")
    checked = 0
    for cohort in (small, large):
        truth = pd.read_csv(cohort.truth_variants, sep="\t")
        genes = pd.read_csv(cohort.truth_genes, sep="\t").set_index("gene_id")
        states = read_states(cohort.chromatin_states)
        fasta = pyfaidx.Fasta(str(cohort.reference))
        vcf_ids = {r["id"] for r in read_vcf(cohort.vcf)}
        for variant in truth.itertuples():
            gene = genes.loc[variant.gene_id]
            sign = 1 if gene.strand == "+" else -1
            assert variant.tss_distance == (variant.position - 1 - gene.tss) * sign
            assert variant.variant_id in vcf_ids
            label = element_of(states, variant.contig, variant.position - 1)
            assert label == {"promoter": "1_TssA", "enhancer": "7_Enh"}[variant.element]
            if variant.element == "promoter":
                assert -1_000 <= variant.tss_distance < 300
            else:
                assert 2_000 <= abs(variant.tss_distance) <= HALF
            assert (variant.effect < 0) == (variant.motif_change == "break")
            motif = database.fetch_motif_by_id(variant.motif_id)
            assert motif.name == variant.motif_name
            strong_allele = variant.ref if variant.motif_change == "break" else variant.alt
            weak_allele = variant.alt if variant.motif_change == "break" else variant.ref
            assert str(fasta[variant.contig][variant.position - 1]) == variant.ref
            strong, weak, best = motif_scores(fasta, variant, motif, strong_allele, weak_allele)
            assert strong > weak
            assert strong > 0.6 * best, "the planted instance scores high with the strong allele"
            checked += 1
    assert checked >= 5
    all_truth = pd.concat(pd.read_csv(c.truth_variants, sep="\t") for c in (small, large))
    assert set(all_truth.element) == {"promoter", "enhancer"}
    assert set(all_truth.motif_change) == {"create", "break"}
    assert (all_truth.maf >= 0.05).any() and (all_truth.maf < 0.05).any()


def motif_scores(fasta, variant, motif, strong_allele: str, weak_allele: str) -> tuple[float, float, float]:
    """Log-odds score of the best placement covering the SNV with the strong allele, that placement with
    the weak allele, and the motif's maximum score."""
    counts = np.array([motif.counts[base] for base in "ACGT"], dtype=float).T + 0.25
    pwm = np.log2(counts / counts.sum(axis=1, keepdims=True) / 0.25)
    length = len(pwm)
    start = variant.position - length
    context = list(str(fasta[variant.contig][start : variant.position + length - 1]))
    snv = variant.position - 1 - start
    placements = []
    for allele in (strong_allele, weak_allele):
        context[snv] = allele
        codes = np.array(["ACGT".index(base) for base in context])
        scores = []
        for offset in range(snv - length + 1, snv + 1):
            window = codes[offset : offset + length]
            scores.append((pwm[np.arange(length), window].sum(), pwm[::-1, ::-1][np.arange(length), window].sum()))
        placements.append(np.array(scores))
    best = np.unravel_index(np.argmax(placements[0]), placements[0].shape)
    return placements[0][best], placements[1][best], pwm.max(axis=1).sum()


def test_causal_snvs_explain_expression(large: CohortFiles) -> None:
    truth = pd.read_csv(large.truth_variants, sep="\t")
    genes = pd.read_csv(large.truth_genes, sep="\t")
    gene = genes.sort_values("h2_realized").iloc[-1]
    assert gene.h2_realized > 0.1
    expression = read_expression(large.expression).set_index("gene_id").loc[gene.gene_id].iloc[3:].astype(float)
    vcf = cyvcf2.VCF(str(large.vcf))
    people = [person for person in vcf.samples if person in expression.index]
    in_vcf = [vcf.samples.index(person) for person in people]
    causal = truth[truth.gene_id == gene.gene_id]
    dosage = []
    for variant in causal.itertuples():
        [record] = read_records_at(large.vcf, variant.contig, variant.position)
        values = alt_dosage(record)[in_vcf]
        dosage.append(np.where(np.isnan(values), np.nanmean(values), values))
    dosage = np.array(dosage).T
    y = expression.loc[people].to_numpy()
    predicted = dosage @ causal.effect.to_numpy()
    assert np.corrcoef(predicted, y)[0, 1] ** 2 == pytest.approx(gene.h2_realized, abs=0.05)
    design = np.column_stack([np.ones(len(y)), dosage])
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    r2 = 1 - residual.var() / y.var()
    assert gene.h2_realized - 0.05 < r2 < gene.h2_realized + 0.1


def read_records_at(path: Path, contig: str, position: int) -> list[dict]:
    """Records at one 1-based position, through a tabix region query."""
    records = []
    for variant in cyvcf2.VCF(str(path))(f"{contig}:{position}-{position}"):
        if variant.POS == position:
            records.append({"genotypes": np.array([g[:2] for g in variant.genotypes])})
    return records


def test_finemapped_sets_tag_causal_snvs(large: CohortFiles) -> None:
    finemapped = pd.read_csv(large.finemapped_eqtls, sep="\t")
    assert list(finemapped.columns) == ["gene_id", "variant_id", "contig", "position", "ref", "alt", "pip",
                                        "credible_set"]
    assert len(finemapped) > 0
    assert finemapped.pip.between(0, 1, inclusive="right").all()
    assert (finemapped.variant_id == finemapped.contig + "_" + finemapped.position.astype(str) + "_"
            + finemapped.ref + "_" + finemapped.alt + "_b38").all()
    truth = pd.read_csv(large.truth_variants, sep="\t")
    genes = pd.read_csv(large.truth_genes, sep="\t")
    assert set(finemapped.gene_id) <= set(genes.gene_id[genes.n_causal > 0])
    records = {(r["contig"], r["position"]): alt_dosage(r) for r in read_vcf(large.vcf)}
    for (gene_id, _), members in finemapped.groupby(["gene_id", "credible_set"]):
        assert 0.95 <= members.pip.sum() <= 1 + 1e-4
        top = members.sort_values("pip").iloc[-1]
        lead = records[(top.contig, top.position)]
        r2 = []
        for causal in truth[truth.gene_id == gene_id].itertuples():
            other = records[(causal.contig, causal.position)]
            both = ~np.isnan(lead) & ~np.isnan(other)
            r2.append(np.corrcoef(lead[both], other[both])[0, 1] ** 2)
        assert max(r2) > 0.5


def test_truth_genes(small: CohortFiles, large: CohortFiles) -> None:
    for cohort in (small, large):
        genes = pd.read_csv(cohort.truth_genes, sep="\t")
        assert list(genes.columns) == ["gene_id", "gene_name", "contig", "tss", "strand", "h2", "h2_realized",
                                       "n_causal"]
        assert genes.h2.between(0, 0.6).all() and genes.n_causal.between(0, 6).all()
        assert ((genes.h2 == 0) == (genes.n_causal == 0)).all()
        truth = pd.read_csv(cohort.truth_variants, sep="\t")
        assert (truth.groupby("gene_id").size().reindex(genes.gene_id, fill_value=0).to_numpy()
                == genes.n_causal.to_numpy()).all()
    assert (pd.read_csv(small.truth_genes, sep="\t").h2 == 0).any()


def test_chromatin_states_tile_windows(small: CohortFiles) -> None:
    states = read_states(small.chromatin_states)
    assert set(states.state) <= STATES and {"1_TssA", "7_Enh", "15_Quies"} <= set(states.state)
    fasta = pyfaidx.Fasta(str(small.reference))
    truth = pd.read_csv(small.truth_genes, sep="\t")
    for _, group in states.groupby("contig", sort=False):
        assert (group.start.to_numpy()[1:] >= group.end.to_numpy()[:-1]).all()
    for gene in truth.itertuples():
        start, end = max(gene.tss - HALF, 0), min(gene.tss + HALF, len(fasta[gene.contig]))
        inside = states[(states.contig == gene.contig) & (states.start >= start) & (states.end <= end)]
        assert inside.start.iloc[0] == start and inside.end.iloc[-1] == end
        assert (inside.start.to_numpy()[1:] == inside.end.to_numpy()[:-1]).all()
        assert element_of(states, gene.contig, gene.tss) == "1_TssA"


def test_same_seed_same_bytes_other_seed_differs(small: CohortFiles, tmp_path: Path) -> None:
    again = simulate_cohort(tmp_path / "again", **SMALL)
    for path in sorted(small.out_dir.iterdir()):
        assert (again.out_dir / path.name).read_bytes() == path.read_bytes(), path.name
    other = simulate_cohort(tmp_path / "other", **{**SMALL, "seed": 1})
    for name in ("genotypes.vcf.gz", "reference.fa", "expression.bed.gz"):
        assert gzip_text(other.out_dir / name) != gzip_text(small.out_dir / name)


def gzip_text(path: Path) -> bytes:
    """A file's bytes, decompressed when gzipped."""
    if path.suffix != ".gz":
        return path.read_bytes()
    with gzip.open(path) as handle:
        return handle.read()


def test_multiallelic_and_indels_only_when_asked(small: CohortFiles, extras: CohortFiles) -> None:
    records = read_vcf(extras.vcf)
    fasta = pyfaidx.Fasta(str(extras.reference))
    multiallelic = [r for r in records if len(r["alt"]) > 1]
    insertions = [r for r in records if len(r["alt"]) == 1 and len(r["alt"][0]) > len(r["ref"])
                  and not r["alt"][0].startswith("<")]
    deletions = [r for r in records if len(r["ref"]) > 1]
    symbolic = [r for r in records if r["alt"] == ["<DEL>"]]
    assert multiallelic and insertions and deletions and len(symbolic) == 1
    assert any((r["genotypes"] == 2).any() for r in multiallelic)
    assert len(multiallelic) < 0.03 * len(records)
    for record in records:
        start = record["position"] - 1
        assert record["ref"] == str(fasta[record["contig"]][start : start + len(record["ref"])])
    for record in insertions + deletions:
        assert record["alt"][0][0] == record["ref"][0], "VCF padding base"
        assert record["alt"][0][-1] != record["ref"][-1], "left-aligned"
    assert symbolic[0]["info"]["SVTYPE"] == "DEL" and symbolic[0]["info"]["END"] > symbolic[0]["position"]
    assert all(len(r["alt"]) == 1 and len(r["ref"]) == len(r["alt"][0]) == 1 for r in read_vcf(small.vcf))


def test_gtex_sized_cohort_has_published_variant_density(large: CohortFiles) -> None:
    records = read_vcf(large.vcf)
    fasta = pyfaidx.Fasta(str(large.reference))
    genes = pd.read_csv(large.truth_genes, sep="\t")
    acgt = sum(len(re.sub("[^ACGT]", "", str(fasta[g.contig][max(g.tss - HALF, 0) : g.tss + HALF])))
               for g in genes.itertuples())
    per_window = len(records) * WINDOW / acgt
    frequency = np.array([np.nanmean(alt_dosage(r)) / 2 for r in records])
    maf = np.minimum(frequency, 1 - frequency)
    assert 500 < per_window < 800
    assert 0.55 < np.mean(maf < 0.01) < 0.85
    assert np.mean(maf < 0.01) < np.mean(maf < 0.05) < 0.95
    stats = large.summary
    assert stats["snvs_per_window"] == pytest.approx(per_window, abs=0.1)
    assert stats["fraction_maf_below_1pct"] == pytest.approx(np.mean(maf < 0.01), abs=1e-4)


def test_real_reference_keeps_its_sequence_outside_motifs(tmp_path: Path) -> None:
    assert CHR20.exists(), f"Debian's GRCh37 chr20 ({CHR20}) is missing: `make test` installs it (apt-get install vt-examples)"
    cohort = simulate_cohort(tmp_path / "chr20", individuals=40, genes=3, seed=5, reference=CHR20)
    header, _, body = gzip_text(CHR20).partition(b"\n")
    real = np.frombuffer(body.replace(b"\n", b""), dtype=np.uint8)
    fasta = pyfaidx.Fasta(str(cohort.reference))
    assert list(fasta.keys()) == [header[1:].split()[0].decode()] == ["20"]
    written = np.frombuffer(str(fasta["20"][:]).encode(), dtype=np.uint8)
    assert written.size == real.size
    states = read_states(cohort.chromatin_states)
    in_element = np.zeros(real.size, dtype=bool)
    for element in states[states.state.isin(["1_TssA", "7_Enh"])].itertuples():
        in_element[element.start : element.end] = True
    changed = written != real
    assert changed.any() and not (changed & ~in_element).any()
    for record in read_vcf(cohort.vcf):
        assert record["contig"] == "20"
        if not in_element[record["position"] - 1]:
            assert record["ref"] == chr(real[record["position"] - 1])
    genes = pd.read_csv(cohort.truth_genes, sep="\t")
    for gene in genes.itertuples():
        window = real[gene.tss - HALF : gene.tss + HALF]
        assert np.isin(window, np.frombuffer(b"ACGT", dtype=np.uint8)).mean() >= 0.99


def test_missing_extra_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyjaspar", None)
    with pytest.raises(ImportError, match=r"pip install 'performer-store\[simulate\]'"):
        simulate_cohort(tmp_path / "cohort", individuals=20, genes=1)
    assert not (tmp_path / "cohort").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"genes": 0}, "genes must be at least 1"),
        ({"individuals": 3}, "individuals must be at least 10"),
        ({"missing_rate": 1.5}, r"missing_rate must be in \[0, 1\)"),
        ({"reference": Path("/nonexistent.fa")}, "reference FASTA /nonexistent.fa does not exist"),
    ],
)
def test_bad_arguments_say_what_is_allowed(tmp_path: Path, arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate_cohort(tmp_path / "cohort", **arguments)
    assert not (tmp_path / "cohort").exists()


def test_mean_expression_follows_promoter_cpg(small: CohortFiles) -> None:
    """mean_expression.tsv: one row per gene; promoter_cpg is the CG count of TSS -1,000..+300 (strand-aware) read
    here from the FASTA, and mean_expression is 2 + 1.5 x its z-score plus noise of SD 0.5."""
    means = pd.read_csv(small.mean_expression, sep="\t")
    genes = pd.read_csv(small.truth_genes, sep="\t")
    assert list(means.columns) == ["gene_id", "mean_expression", "promoter_cpg"]
    assert list(means.gene_id) == list(genes.gene_id)
    fasta = pyfaidx.Fasta(str(small.reference))
    counts = []
    for gene in genes.itertuples():
        start, end = (gene.tss - 1000, gene.tss + 300) if gene.strand == "+" else (gene.tss - 299, gene.tss + 1001)
        counts.append(str(fasta[gene.contig][start:end]).upper().count("CG"))
    assert list(means.promoter_cpg) == counts
    z = (np.array(counts) - np.mean(counts)) / np.std(counts)
    residual = means.mean_expression.to_numpy() - (2 + 1.5 * z)
    assert np.all(np.abs(residual) < 2.0) and residual.std() > 0  # noise of SD 0.5, not a copy of the z-score


TINY_CLI = ["--individuals", "20", "--genes", "1", "--window", "8192", "--quiet"]
"""The smallest cohort `pstore simulate` makes (a few seconds)."""


def test_second_cohort_in_the_first_cohorts_folder_is_refused(tmp_path: Path) -> None:
    result = pstore("simulate", str(tmp_path / "c"), *TINY_CLI, "--second-cohort", f"{tmp_path}/./c/", expect=1)
    assert result.output.strip().splitlines() == [
        f"Error: cohort folder {tmp_path}/c: given for two cohorts (OUT_DIR and --second-cohort are one folder); "
        "give each cohort its own folder"]
    assert not (tmp_path / "c").exists()


def test_second_individuals_without_second_cohort_is_refused(tmp_path: Path) -> None:
    result = pstore("simulate", str(tmp_path / "c"), *TINY_CLI, "--second-individuals", "30", expect=2)
    assert "Invalid value for --second-individuals: needs --second-cohort DIR" in result.output
    assert not (tmp_path / "c").exists()


def test_an_existing_cohort_is_replaced_only_with_force(tmp_path: Path) -> None:
    cohort = tmp_path / "c"
    pstore("simulate", str(cohort), *TINY_CLI)
    vcf = (cohort / FILE_NAMES["vcf"]).read_bytes()
    result = pstore("simulate", str(cohort), *TINY_CLI, "--seed", "1", expect=1)
    assert result.output.strip() == (f"Error: cohort folder {cohort}: holds a cohort already (reference.fa, genotypes.vcf.gz, "
                                     "annotation.gtf.gz, ...); pass --force to replace it, or choose another folder")
    assert (cohort / FILE_NAMES["vcf"]).read_bytes() == vcf
    pstore("simulate", str(cohort), *TINY_CLI, "--seed", "1", "--force")
    assert (cohort / FILE_NAMES["vcf"]).read_bytes() != vcf


class Killed(BaseException):
    """Stands for a SIGKILL: raised inside a simulation, nothing after it runs."""


def test_a_simulation_killed_while_it_replaces_files_is_finished_by_running_it_again(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`pstore simulate --force` over another cohort, killed before each of its file moves: the folder never holds a
    cohort.json beside files of another simulation, and the same command again (and, after a killed first simulation,
    the same command without --force) writes the cohort an uninterrupted simulation writes, byte for byte. (The moves
    went in name order, so a kill left new and old files mixed, and a killed first simulation could not be re-run.)"""
    import os

    from performer_store import simulate

    whole = tmp_path / "whole"
    pstore("simulate", str(whole), *TINY_CLI, "--seed", "1")
    names = sorted(p.name for p in whole.iterdir())
    replace = os.replace
    for moment in range(1, len(names) + 1):
        for first in (True, False):
            cohort = tmp_path / f"killed{moment}{first}"
            if not first:
                pstore("simulate", str(cohort), *TINY_CLI)
            moves = iter(range(moment, 0, -1))

            def move(source, target, moves=moves):
                if next(moves, 0) == 1:
                    raise Killed
                replace(source, target)

            with monkeypatch.context() as patch:
                patch.setattr(simulate.os, "replace", move)
                patch.setattr(simulate.shutil, "rmtree", lambda *args, **kwargs: None)  # a SIGKILL runs no clean-up
                with pytest.raises(Killed):
                    CliRunner().invoke(main, ["simulate", str(cohort), *TINY_CLI, "--seed", "1", "--force"], catch_exceptions=False)
            assert not (cohort / FILE_NAMES["cohort"]).exists(), moment
            pstore("simulate", str(cohort), *TINY_CLI, "--seed", "1", *([] if first else ["--force"]))
            assert sorted(p.name for p in cohort.iterdir()) == names
            for name in names:
                assert (cohort / name).read_bytes() == (whole / name).read_bytes(), (moment, first, name)
