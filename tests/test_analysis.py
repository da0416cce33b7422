"""Variant weights: the Dask table (local = distributed), HSVs, drivers, direction, enrichment, auROC, motifs, `pstore query`."""

from __future__ import annotations

import itertools

import dask
import numpy as np
import pandas as pd
import pytest
from conftest import pstore
from scipy.stats import pearsonr
from simulated import simulated_store

from performer_store import analysis, motifs, schemas
from performer_store.encode import onehot
from performer_store.inputs import InputError
from performer_store.enet import genotype_dosage, run_enet
from performer_store.results import blank_result, read_result, write_result
from performer_store.simulate import MOTIF_IDS
from performer_store.store import Store

FOLDS = 3


def write_ism(path, gene_id: str, model: str, kind: str, fold: int, scores: np.ndarray) -> None:
    """Synthetic ISM scores of one model and fold."""
    values = blank_result({"folds": FOLDS, "variants": len(scores)}, (schemas.ISM_RESULT,))
    values["ism_score"][fold], values["ism_reference"][fold], values["status"][fold] = scores, 0.0, "ok"
    write_result(path, gene_id, model, kind, [fold], values, {"method": {str(fold): "full"}}, (schemas.ISM_RESULT,), schemas.ISM_GROUP)


@pytest.fixture(scope="module")
def weighted(tmp_path_factory):
    """A simulated store (160 people, 4 genes, 8,192 bp): enet on 3 genes (fold 0); ISM of `my_run` (scores near
    the enet coefficients, predictions = its surrogate + noise) on every gene, `enformer` (random, no predictions)
    on genes 1-3, and `later` on fold 1 only."""
    cohort, path = simulated_store(tmp_path_factory.mktemp("analysis"), 8_192)
    store = Store(path)
    genes = list(store.genes.index)
    run_enet(path, genes[:3], folds=[0], progress=False)
    rng = np.random.default_rng(5)
    for k, gene_id in enumerate(genes):
        group = store.gene(gene_id)
        n = group["variant_position"].shape[0]
        enet = read_result(path, gene_id, "enet")
        scores = (enet[0]["enet_coefficient"][0] if enet else np.zeros(n)) + 0.01 * rng.normal(size=n)
        write_ism(path, gene_id, "my_run", "performer", 0, scores)
        write_ism(path, gene_id, "later", "performer", 1, rng.normal(size=n))
        if k:
            write_ism(path, gene_id, "enformer", "enformer", 0, rng.normal(size=n))
        values = blank_result({"folds": FOLDS, "samples": len(store.sample_id)})
        noise = 0.1 * rng.normal(size=len(store.sample_id))
        values["prediction"][0] = np.where(store.split(0) != 0, genotype_dosage(group) @ scores + noise, np.nan)
        values["status"][0] = "ok"
        write_result(path, gene_id, "my_run", "performer", [0], values)
    return cohort, path


@pytest.fixture(scope="module")
def local(weighted) -> pd.DataFrame:
    """Fold 0's table computed in this process."""
    return analysis.variant_weights(weighted[1], 0).compute(scheduler="sync")


# --- the table -----------------------------------------------------------------------------------------


def test_distributed_cluster_gives_the_local_table(weighted, local, tmp_path):
    """A real 2-process LocalCluster (forked workers: they start without re-importing) computes the same table,
    also through `pstore query --scheduler`."""
    from distributed import Client, LocalCluster

    path = weighted[1]
    assert analysis.variant_weights(path, 0).npartitions == 4
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
            distributed = analysis.variant_weights(path, 0, client).compute()
            pstore("query", "--store", str(path), "--flag", "hsv_my_run", "--scheduler", cluster.scheduler_address,
                   "--out", str(tmp_path / "hsv.parquet"))
    pd.testing.assert_frame_equal(distributed, local)
    hsvs = local[local["hsv_my_run"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "hsv.parquet"), hsvs, check_dtype=False)


def test_table_matches_the_store(weighted, local):
    """Columns, positions, strand-aware TSS distances, coefficients and scores as stored; models of other folds left out."""
    path = weighted[1]
    store = Store(path)
    assert list(local.columns) == list(analysis.weight_columns(["enformer", "my_run"]))
    for gene_id, rows in local.groupby("gene_id"):
        group, gene = store.gene(gene_id), store.genes.loc[gene_id]
        position = group["variant_position"][:]
        np.testing.assert_array_equal(rows["position"], position)
        np.testing.assert_array_equal(rows["ref"], group["variant_allele"][:, 0].astype(object))
        sign = 1 if gene["gene_strand"] == "+" else -1
        np.testing.assert_array_equal(rows["tss_distance"], (position - 1 - gene["gene_tss"]) * sign)
        np.testing.assert_array_equal(rows["ism_my_run"], read_result(path, gene_id, "my_run", schemas.ISM_GROUP)[0]["ism_score"][0])
        enet = read_result(path, gene_id, "enet")
        if enet is None:  # no elastic net: no coefficient, no HSVs
            assert rows["enet_coefficient"].isna().all() and not rows["hsv_my_run"].any()
        else:
            np.testing.assert_array_equal(rows["enet_coefficient"], enet[0]["enet_coefficient"][0])
            k = enet[0]["enet_n_nonzero"][0]
            assert rows["hsv_my_run"].sum() == k and rows["hsv_enformer"].sum() == (k if rows["ism_enformer"].notna().any() else 0)
            score = rows["ism_my_run"].abs()
            assert score[rows["hsv_my_run"]].min() >= score[~rows["hsv_my_run"]].max()
    assert "ism_later" not in local.columns  # scores of fold 1 only
    assert not local["driver_enformer"].any() and local["driver_my_run"].any()  # enformer has no predictions


def test_hsvs_are_the_top_k_absolute_scores():
    """Top-k by |score|, ties in order, 0 and NaN never; k = 0 (or no model) gives none."""
    scores = np.array([0.1, -3.0, 2.0, np.nan, 3.0, 0.0])
    assert np.flatnonzero(analysis.hsv_mask(scores, 2)).tolist() == [1, 4]
    assert np.flatnonzero(analysis.hsv_mask(scores, 3)).tolist() == [1, 2, 4]
    assert not analysis.hsv_mask(scores, 0).any() and not analysis.hsv_mask(scores, -1).any()
    assert np.flatnonzero(analysis.hsv_mask(scores, 10)).tolist() == [0, 1, 2, 4]


# --- drivers -------------------------------------------------------------------------------------------


def plain_walk(dosage: np.ndarray, scores: np.ndarray, prediction: np.ndarray) -> list[int]:
    """The drivers rule as written, one SNV at a time with scipy's pearsonr."""
    people = np.isfinite(prediction)
    dosage, y = dosage[people], prediction[people]
    snvs = np.flatnonzero(np.isfinite(scores))
    contribution = dosage[:, snvs] * scores[snvs]
    full = pearsonr(contribution.sum(axis=1), y).statistic
    drivers, running, last = [], np.zeros(len(y)), 0.0
    for j in np.argsort(-np.abs(scores[snvs]), kind="stable"):
        candidate = running + contribution[:, j]
        if np.ptp(contribution[:, j]) == 0 or np.ptp(candidate) == 0:
            continue
        own = pearsonr(contribution[:, j], y, alternative="greater")
        ratio = pearsonr(candidate, y).statistic / full
        if ratio - last > 0.05 and own.statistic > 0 and own.pvalue < 0.01 / len(snvs):
            drivers.append(int(snvs[j]))
            running, last = candidate, ratio
    return sorted(drivers)


@pytest.mark.parametrize("seed", range(6))
def test_drivers_match_the_rule_walked_one_snv_at_a_time(seed):
    """Random genotypes, scores and predictions driven by a few SNVs: the vectorized walk equals the plain one."""
    rng = np.random.default_rng(seed)
    people, snvs = 80, 40
    dosage = rng.binomial(2, rng.uniform(0.02, 0.5, snvs), size=(people, snvs)).astype(float)
    scores = rng.normal(scale=0.1, size=snvs)
    causal = rng.choice(snvs, 4, replace=False)
    scores[causal] = rng.normal(scale=1.0, size=4)
    scores[rng.choice(np.setdiff1d(np.arange(snvs), causal), 2)] = np.nan
    prediction = dosage[:, causal] @ scores[causal] + rng.normal(scale=0.5, size=people)
    prediction[rng.choice(people, 5)] = np.nan
    found = np.flatnonzero(analysis.driver_mask(dosage, scores, prediction)).tolist()
    assert found == plain_walk(dosage, scores, prediction)
    assert found and set(found) <= set(causal.tolist())


def test_driver_edge_cases():
    """One SNV drives the prediction; none without predictions or when the surrogate anti-correlates with them."""
    rng = np.random.default_rng(0)
    dosage = rng.binomial(2, 0.3, size=(50, 3)).astype(float)
    scores = np.array([1.0, -2.0, 0.5])
    prediction = 2 * dosage[:, 0] + 0.01 * rng.normal(size=50)
    assert np.flatnonzero(analysis.driver_mask(dosage, scores, prediction)).tolist() == [0]
    assert not analysis.driver_mask(dosage, scores, np.full(50, np.nan)).any()
    assert not analysis.driver_mask(dosage, scores, -(dosage @ scores)).any()
    assert not analysis.driver_mask(dosage, np.full(3, np.nan), prediction).any()


def test_one_sided_pvalue_is_scipys():
    """The vectorized one-sided p equals scipy's pearsonr(alternative='greater')."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=30)
    x[:, 0] += 2 * y
    expected = [pearsonr(column, y, alternative="greater") for column in x.T]
    r = analysis.correlations(x, y)
    np.testing.assert_allclose(r, [e.statistic for e in expected], rtol=1e-12)
    np.testing.assert_allclose(analysis.greater_pvalue(r, 30), [e.pvalue for e in expected], rtol=1e-9)


# --- summaries on hand-made tables ---------------------------------------------------------------------


def frame(**columns) -> pd.DataFrame:
    """A small variant-weights table on chr1 of gene g1 (positions 1-based)."""
    n = len(next(iter(columns.values())))
    base = {"gene_id": ["g1"] * n, "contig": ["chr1"] * n, "position": np.arange(1, n + 1) * 10, "ref": ["A"] * n,
            "alt": ["G"] * n, "maf": np.full(n, 0.1), "tss_distance": np.arange(n) * 10, "enet_coefficient": np.zeros(n)}
    return pd.DataFrame({**base, **columns})


def test_direction_agreement_by_hand():
    """Signs where both weights are non-zero: [[3, 1], [0, 2]]; Fisher's two-sided p is 0.2 + 0.2 = 0.4."""
    enet = [1, 2, 3, -1, -2, -3, 0, 1, np.nan]
    ism = [1, 1, 1, 1, -1, -1, 5, 0, 1]
    row = analysis.direction_agreement(frame(enet_coefficient=enet, ism_a=ism)).iloc[0]
    assert (row["both_positive"], row["ism_positive_enet_negative"], row["ism_negative_enet_positive"], row["both_negative"]) == (3, 1, 0, 2)
    assert row["variants"] == 6 and row["agreement"] == pytest.approx(5 / 6)
    assert row["p_value"] == pytest.approx(0.4) and row["odds_ratio"] == np.inf


def test_state_enrichment_by_hand():
    """A 100 bp window, state A on its first quarter: 3 of 4 HSVs in A against 1 expected; contig names reconciled."""
    weights = frame(hsv_a=[True] * 4 + [False])
    weights["position"] = [5, 10, 20, 60, 70]  # 0-based 4, 9, 19 in A; 59 in B
    states = pd.DataFrame({"chrom": ["1", "1", "1"], "start": [0, 25, 100], "end": [25, 100, 500], "state": ["A", "B", "C"]})
    genes = pd.DataFrame({"gene_window_start": [0], "gene_window_stop": [100]}, index=["g1"])
    table = analysis.state_enrichment(weights, states, genes).set_index("state")
    assert table["observed"].tolist() == [3, 1, 0]
    np.testing.assert_allclose(table["expected"], [1.0, 3.0, 0.0])
    np.testing.assert_allclose(table["log2_enrichment"][:2], [np.log2(3), np.log2(1 / 3)])
    overlapping = states.assign(end=[30, 100, 500])
    with pytest.raises(ValueError, match="intervals overlap at chr1:30"):
        analysis.state_enrichment(weights, overlapping, genes)


def test_recovery_auroc_by_hand(tmp_path):
    """|weight| ranks the listed variants; ALT must match; a gene without listed variants has NaN."""
    weights = pd.concat([frame(enet_coefficient=[0.5, -0.1, 0.0, 0.3], ism_a=[0.1, 0.2, 0.3, np.nan]),
                         frame(enet_coefficient=[0.1, 0.2], ism_a=[0.1, 0.2]).assign(gene_id="g2", contig="chr2")])
    listed = tmp_path / "listed.tsv"
    listed.write_text("contig\tposition\tref\talt\n1\t10\tA\tG\n1\t40\tA\tG\n1\t20\tA\tT\n")  # the last: another ALT
    auroc = analysis.recovery_auroc(weights, analysis.read_variant_list(listed)).set_index(["gene_id", "weight"])["auroc"]
    assert auroc["g1", "enet"] == 1.0  # listed 0.5, 0.3 above 0.1, 0.0
    assert auroc["g1", "a"] == 0.0  # NaN row left out: listed 0.1 below 0.2, 0.3
    assert np.isnan(auroc["g2", "enet"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("chrom\tpos\n1\t10\n")
    with pytest.raises(ValueError, match="no column contig, position"):
        analysis.read_variant_list(bad)


@pytest.mark.parametrize("text, problem", [
    ("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\n1\t10\t.\tA\tG\n", "Expected 3 fields in line 3, saw 5"),
    ("", "No columns to parse from file")])
def test_a_variant_list_that_is_not_a_tsv_is_one_error(tmp_path, text, problem):
    """A VCF (ragged rows) or an empty file named as a variant list: one InputError naming it, no pandas error."""
    path = tmp_path / "list.vcf"
    path.write_text(text)
    with pytest.raises(InputError, match=rf"variant list {path}: not a TSV \({problem}\); give a TSV whose header names contig"):
        analysis.read_variant_list(path)


def test_distributions_count_every_variant():
    """Histogram counts per group add up to the group's size; bins are [low, high)."""
    weights = frame(hsv_a=[True, False, True], maf=[0.0, 0.01, 0.5], tss_distance=[-100, 0, 20_000])
    table = analysis.distributions(weights)
    for (group, quantity), part in table.groupby(["group", "quantity"]):
        assert part["count"].sum() == (3 if group == "all" else 2)
    maf = table[(table["group"] == "all") & (table["quantity"] == "maf")].set_index("low")["count"]
    assert (maf[0.0], maf[0.01], maf[0.4]) == (1, 1, 1)


# --- motifs --------------------------------------------------------------------------------------------


def test_threshold_is_exact_for_the_scanned_matrix():
    """Against every 6-mer: P(score >= threshold) <= p < P(score >= threshold - 1), non-uniform background."""
    counts = np.random.default_rng(2).integers(0, 30, size=(6, 4)).astype(float)
    background = motifs.check_background([0.3, 0.2, 0.2, 0.3])
    scores = motifs.integer_scores(counts, background)
    kmers = np.array(list(itertools.product(range(4), repeat=6)))
    total = scores[np.arange(6), kmers].sum(axis=1)
    weight = background[kmers].prod(axis=1)
    for pvalue in (1e-4, 1e-3, 0.01, 0.1):
        threshold = motifs.score_threshold(scores, background, pvalue)
        assert weight[total >= threshold].sum() <= pvalue < weight[total >= threshold - 1].sum()
    assert motifs.score_threshold(scores, background, 1e-5) == total.max() + 1  # rarer than any 6-mer: never a hit
    with pytest.raises(ValueError, match="4 positive frequencies"):
        motifs.check_background([0.5, 0.5, 0, 0])


def test_planted_consensus_breaks_and_is_created_on_either_strand():
    """SP1's consensus in random sequence hits (forward and reverse complement); mutating its most informative base
    to the least likely one breaks it; the reverse change creates it. (CTCF's 15 bp consensus survives any one change.)"""
    sp1 = motifs.prepare(motifs.load_jaspar(["MA0079.5"]))[0]
    scores, length = sp1.scores[:, :4], sp1.motif.length
    consensus, core = scores.argmax(axis=1), int(np.argmax(np.ptp(scores, axis=1)))
    weak = int(scores[core].argmin())
    rng = np.random.default_rng(3)
    flank = length - 1
    rows = []
    for planted, at, base in ((consensus, core, weak), (3 - consensus[::-1], length - 1 - core, 3 - weak)):
        sequence = rng.integers(0, 4, size=2 * flank + 1)
        sequence[flank - at:flank - at + length] = planted
        mutated = sequence.copy()
        mutated[flank] = base
        rows.append((sequence, mutated))
    ref, alt = (np.array(side) for side in zip(*rows))
    ref_hit, alt_hit = motifs.motif_hits(ref, alt, [sp1])
    assert ref_hit.all() and not alt_hit.any()
    created_ref, created_alt = motifs.motif_hits(alt, ref, [sp1])
    assert (~created_ref & created_alt).all()


def test_onehot_decodes_with_n():
    """Codes 0-3 for ACGT and 4 for N, from the store's one-hot encoding."""
    np.testing.assert_array_equal(motifs.decode_onehot(onehot("ACGTNa")), [0, 1, 2, 3, 4, 0])


def test_simulated_causal_variants_change_their_planted_motif(weighted):
    """The simulator's causal SNVs: reference context from the store, REF at the centre; where the planted motif is
    called changed, it is the planted direction (create or break), for most of them."""
    cohort, path = weighted
    store = Store(path)
    truth = pd.read_csv(cohort.truth_variants, sep="\t")
    windows = store.genes.loc[truth["gene_id"]]
    inside = (truth["position"].to_numpy() - 1 >= windows["gene_window_start"].to_numpy()) & \
             (truth["position"].to_numpy() - 1 < windows["gene_window_stop"].to_numpy())
    truth = truth[inside].reset_index(drop=True)
    ref, _ = analysis.variant_codes(store, truth, 5)
    reference = [motifs.decode_onehot(store.gene(g)["reference_onehot"][:])[p - 1 - store.genes.loc[g, "gene_window_start"]]
                 for g, p in zip(truth["gene_id"], truth["position"])]
    np.testing.assert_array_equal(ref[:, 5], reference)
    table = analysis.motif_disruption(path, truth, motifs.load_jaspar(MOTIF_IDS))
    broken = np.array([m in b for m, b in zip(truth["motif_id"], table["motifs_broken"])])
    created = np.array([m in c for m, c in zip(truth["motif_id"], table["motifs_created"])])
    planted_break = truth["motif_change"].eq("break").to_numpy()
    assert not (broken & ~planted_break).any() and not (created & planted_break).any()
    assert (broken | created).mean() >= 0.5


# --- summarize and the CLI -----------------------------------------------------------------------------


def test_summarize_gives_every_table(weighted):
    """All tables from one call; motif rates per flag and a control; auROC per gene and weight."""
    cohort, path = weighted
    tables = analysis.summarize(path, 0, finemapped=cohort.truth_variants, states=cohort.chromatin_states,
                                motifs=motifs.load_jaspar(MOTIF_IDS))
    assert set(tables) == {"distribution_summary", "distributions", "direction", "motifs", "motif_rates", "auroc",
                           "auroc_summary", "enrichment"}
    rates = tables["motif_rates"].set_index("group")
    assert list(rates.index) == ["hsv_enformer", "hsv_my_run", "driver_enformer", "driver_my_run", "control"]
    summary = tables["distribution_summary"].set_index("group")
    assert rates.loc["hsv_my_run", "variants"] == summary.loc["hsv_my_run", "variants"]
    assert len(tables["auroc"]) == 4 * 3 and set(tables["auroc"]["weight"]) == {"enet", "my_run", "enformer"}
    enrichment = tables["enrichment"]
    assert enrichment.groupby("flag")["observed"].sum()["hsv_my_run"] <= summary.loc["hsv_my_run", "variants"]
    assert tables["direction"].set_index("model").loc["my_run", "agreement"] > 0.9


def test_query_writes_filtered_parquet_and_tsv(weighted, local, tmp_path):
    """Filters by gene, MAF and flags; Parquet and TSV hold the rows of the table."""
    path = weighted[1]
    gene_id = Store(path).genes.index[0]
    args = ["query", "--store", str(path), "--gene", gene_id, "--min-maf", "0.01", "--max-maf", "0.4", "--flag", "hsv_my_run"]
    result = pstore(*args, "--out", str(tmp_path / "q.parquet"))
    keep = (local["gene_id"] == gene_id) & local["maf"].between(0.01, 0.4) & local["hsv_my_run"]
    columns = list(analysis.weight_columns(["my_run"]))  # the gene has no enformer scores
    expected = local.loc[keep, columns].reset_index(drop=True)
    assert len(expected) and f"{len(expected)} variants" in result.output
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "q.parquet"), expected, check_dtype=False)
    pstore(*args, "--out", str(tmp_path / "q.tsv"))
    tsv = pd.read_csv(tmp_path / "q.tsv", sep="\t")
    np.testing.assert_array_equal(tsv["position"], expected["position"])
    np.testing.assert_array_equal(tsv["ism_my_run"].astype(np.float32), expected["ism_my_run"])  # float32 round-trips
    both = analysis.query(path, 0, flags=["hsv_my_run", "driver_my_run"])
    pd.testing.assert_frame_equal(both, local[local["hsv_my_run"] & local["driver_my_run"]].reset_index(drop=True))


def test_query_errors_are_one_line(weighted, tmp_path):
    """An unknown flag or gene, or a bad output name: one line and exit 1."""
    path = str(weighted[1])
    out = str(tmp_path / "q.parquet")
    flag = pstore("query", "--store", path, "--flag", "hsv_nope", "--out", out, expect=1).output
    assert flag.strip() == "Error: --flag hsv_nope: no such flag in fold 0; flags: hsv_enformer, hsv_my_run, driver_enformer, driver_my_run"
    gene = pstore("query", "--store", path, "--gene", "ENSG_NOPE", "--out", out, expect=1).output
    assert gene.count("\n") == 1 and "no gene ENSG_NOPE" in gene
    assert "give a .tsv or .parquet file name" in pstore("query", "--store", path, "--out", str(tmp_path / "q.csv"), expect=2).output
