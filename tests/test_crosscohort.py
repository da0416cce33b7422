"""Cross-cohort evaluation: two simulated cohorts of one population (disjoint people, gene versions + 3), a
Performer run and elastic nets of cohort A scoring cohort B's people; checked against direct computations."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from conftest import pstore
from scipy.special import ndtri
from scipy.stats import pearsonr, rankdata
from sklearn.metrics import r2_score

from performer_store.crosscohort import match_genes, resolve_genes
from performer_store.inputs import InputError, unversioned
from performer_store.loader import split_rows
from performer_store.results import read_result
from performer_store.store import Store
from performer_store.train import TrainConfig, store_identity, train
from performer_store.validate import validate_store

WINDOW = 2048
PEOPLE = (120, 80)


def build(cohort: Path, store: Path, window: int = WINDOW) -> Path:
    """`pstore build` of a simulated cohort."""
    pstore("build", "--quiet", "--store", str(store), "--fasta", str(cohort / "reference.fa"), "--vcf", str(cohort / "genotypes.vcf.gz"),
           "--gtf", str(cohort / "annotation.gtf.gz"), "--expression", str(cohort / "expression.bed.gz"), "--tissue", "whole_blood",
           "--window", str(window))
    return store


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    """Cohorts A (120 people) and B (80) of one population, their stores, and elastic nets fitted in both."""
    root = tmp_path_factory.mktemp("cross")
    output = pstore("simulate", str(root / "a"), "--individuals", str(PEOPLE[0]), "--genes", "3", "--seed", "5",
                    "--second-cohort", str(root / "b"), "--second-individuals", str(PEOPLE[1]), "--quiet").output
    assert f"wrote {root / 'a'}: {PEOPLE[0]} people" in output and f"wrote {root / 'b'}: {PEOPLE[1]} people" in output
    paths = {"a": root / "a", "b": root / "b", "store_a": build(root / "a", root / "a.zarr"), "store_b": build(root / "b", root / "b.zarr")}
    for store in (paths["store_a"], paths["store_b"]):
        pstore("enet", "--store", str(store), "--quiet")
    return paths


@pytest.fixture(scope="module")
def run_a(cohorts, tmp_path_factory) -> Path:
    """A 2-epoch tiny Performer run on cohort A's first gene, fold 1."""
    store = cohorts["store_a"]
    run = tmp_path_factory.mktemp("runs") / "perf_a"
    train(TrainConfig(store=store, genes=(Store(store).genes.index[0],), fold=1, out=run, config="tiny", lr=1e-3, micro_batch=8,
                      accumulation=2, max_epochs=2, patience=10, progress=False, device="cpu"))
    return run


def copy_store(source: Path, tmp_path: Path, name: str = "b.zarr") -> Path:
    """A private copy of a store, free to write."""
    shutil.copytree(source, tmp_path / name)
    return tmp_path / name


def test_gene_ids_match_with_versions_ignored():
    assert unversioned("ENSG00000120758.11") == "ENSG00000120758"
    assert unversioned("ENSG00000182378.14_PAR_Y") == "ENSG00000182378_PAR_Y" and unversioned("ENSG1") == "ENSG1"
    match = match_genes(["ENSG00000120758.11", "ENSG00000182378.14", "ENSG00000182378.14_PAR_Y", "ENSG00000000001.1"],
                        ["ENSG00000182378.15_PAR_Y", "ENSG00000120758.14", "ENSG00000000002.1"])
    assert match.pairs == {"ENSG00000182378.15_PAR_Y": "ENSG00000182378.14_PAR_Y", "ENSG00000120758.14": "ENSG00000120758.11"}
    assert match.target_only == ("ENSG00000000002.1",) and match.source_only == ("ENSG00000182378.14", "ENSG00000000001.1")
    assert match.summary("A", "B") == "genes: 2 matched by ID with versions ignored (2 with another version); 1 only in B, 2 only in A"
    with pytest.raises(InputError, match=r"holds ENSG00000120758.11 and ENSG00000120758.12, two versions of one gene"):
        match_genes(["ENSG00000120758.11", "ENSG00000120758.12"], [], "store A")


def test_simulated_cohorts_share_genes_and_variants_not_people(cohorts):
    a, b = Store(cohorts["store_a"]), Store(cohorts["store_b"])
    for cohort, people in zip((cohorts["a"], cohorts["b"]), PEOPLE):
        assert json.loads((cohort / "cohort.json").read_text())["people"]["vcf"] == people
    assert not set(a.sample_id) & set(b.sample_id)
    versions = {unversioned(g): int(g.rsplit(".", 1)[1]) for g in a.genes.index}
    assert {unversioned(g): int(g.rsplit(".", 1)[1]) - 3 for g in b.genes.index} == versions
    assert [resolve_genes(b, [g])[0] for g in a.genes.index] == list(b.genes.index)
    np.testing.assert_array_equal(a.genes["gene_tss"], b.genes["gene_tss"])
    truth_a = pd.read_csv(cohorts["a"] / "truth_variants.tsv", sep="\t")
    truth_b = pd.read_csv(cohorts["b"] / "truth_variants.tsv", sep="\t")
    assert truth_a["gene_id"].map(unversioned).tolist() == truth_b["gene_id"].map(unversioned).tolist()
    np.testing.assert_array_equal(truth_a["effect"], truth_b["effect"])
    only_in_a = 0
    for gene_a, gene_b in zip(a.genes.index, b.genes.index):
        keys = [set(zip(s.gene(g)["variant_position"][:], s.gene(g)["variant_allele"][:, 1])) for s, g in ((a, gene_a), (b, gene_b))]
        assert len(keys[0] & keys[1]) > 0.5 * min(map(len, keys))  # a shared population: most common variants in both
        only_in_a += len(keys[0] - keys[1])
    assert only_in_a > 0  # rare variants of A missing from B: the transfer's missing case
    bed = pd.read_csv(cohorts["b"] / "expression.bed.gz", sep="\t")
    assert bed.shape[1] - 4 >= PEOPLE[1] - 2 and not set(a.sample_id) & set(bed.columns)
    for values in bed.iloc[:, 4:].to_numpy():  # inverse-normal within cohort B (6 decimals in the BED)
        np.testing.assert_allclose(values, ndtri((rankdata(values) - 0.5) / values.size), atol=1e-6)
    expression = pd.read_csv(cohorts["b"] / "expression.bed.gz", sep="\t").iloc[:, 4:].to_numpy()
    assert expression.shape[1] > PEOPLE[1] * 0.95 and not set(a.sample_id) & set(pd.read_csv(cohorts["b"] / "expression.bed.gz", sep="\t").columns)
    for values in expression:  # inverse-normal within cohort B (6 decimals in the BED)
        np.testing.assert_allclose(values, ndtri((rankdata(values) - 0.5) / values.size), atol=1e-6)


def test_windows_must_agree_and_nothing_is_written(cohorts, run_a, tmp_path):
    """A store of other windows is refused with one line by both the elastic-net transfer and a run too wide for it."""
    narrow = build(cohorts["b"], tmp_path / "narrow.zarr", window=1024)
    message = pstore("enet", "--store", str(narrow), "--from-store", str(cohorts["store_a"]), expect=1).output
    assert message.count("\n") == 1
    assert f"store {cohorts['store_a']} holds 2048 bp windows but store {narrow} holds 1024 bp" in message and "--window 2048" in message
    message = pstore("evaluate", "--store", str(narrow), "--run", str(run_a), "--device", "cpu", expect=1).output
    assert "its model reads 2048 bp windows" in message and message.count("\n") == 1
    assert not list(narrow.glob("genes/*/results/*"))


def direct_prediction(a: Store, gene_a: str, b: Store, gene_b: str, fold: int) -> tuple[np.ndarray, int, int]:
    """A's fold model on B's people by a loop over its non-zero variants: the ALT count where B has the same REF and ALT,
    the REF count where they are swapped, 0 where B lacks it; returns the prediction, variants found and swapped."""
    arrays, _ = read_result(a.path, gene_a, "enet")
    source, target = a.gene(gene_a), b.gene(gene_b)
    rows = {(int(p), str(r), str(x)): i for i, (p, (r, x)) in enumerate(zip(target["variant_position"][:], target["variant_allele"][:]))}
    calls = target["call_genotype"][:]
    prediction = np.full(calls.shape[1], float(arrays["enet_intercept"][fold]))
    found = flipped = 0
    for j in np.flatnonzero(arrays["enet_coefficient"][fold]):
        position, (ref, alt) = int(source["variant_position"][j]), source["variant_allele"][j]
        if (position, ref, alt) in rows:
            dosage = (calls[rows[position, ref, alt]] == 1).sum(axis=1)
        elif (position, alt, ref) in rows:
            dosage, flipped = (calls[rows[position, alt, ref]] == 0).sum(axis=1), flipped + 1
        else:
            continue
        found += 1
        prediction += arrays["enet_coefficient"][fold][j] * dosage
    return prediction, found, flipped


def swap_alleles(store: Path, gene_id: str, row: int) -> None:
    """Write a variant with REF and ALT swapped (its calls 0 <-> 1), as a store on another reference would hold it."""
    group = zarr.open_group(str(store / "genes" / gene_id), mode="r+")
    alleles = group["variant_allele"][:]
    alleles[row] = alleles[row][::-1]
    group["variant_allele"][:] = alleles
    calls = group["call_genotype"][:]
    calls[row] = np.where(calls[row] == 0, 1, np.where(calls[row] == 1, 0, calls[row]))
    group["call_genotype"][:] = calls


def change_alt(store: Path, gene_id: str, row: int) -> None:
    """Give a variant another ALT base: no longer the source model's variant."""
    group = zarr.open_group(str(store / "genes" / gene_id), mode="r+")
    alleles = group["variant_allele"][:]
    alleles[row, 1] = next(base for base in "ACGT" if base not in (alleles[row][0], alleles[row][1]))
    group["variant_allele"][:] = alleles


def metrics_match(arrays: dict, fold: int, store: Store, gene_id: str) -> None:
    """Test-set r and R2 on the fold's test people, cross r and R2 on everyone with a target: scipy and sklearn."""
    target = store.gene(gene_id)["target"][:]
    prediction = arrays["prediction"][fold].astype(np.float64)
    for key, rows in (("", split_rows(store, gene_id, fold, "test")), ("cross_", np.flatnonzero(~np.isnan(target)))):
        constant = np.ptp(prediction[rows]) == 0  # a rare variant carried by no test person: r undefined (NaN)
        expected_r = np.nan if constant else pearsonr(prediction[rows], target[rows]).statistic
        np.testing.assert_allclose(arrays[f"{key}pearson_r"][fold], expected_r, atol=1e-5, equal_nan=True)
        assert arrays[f"{key}r2"][fold] == pytest.approx(r2_score(target[rows], prediction[rows]), abs=1e-5)


def test_enet_transfer_equals_dosage_times_coefficients(cohorts, tmp_path):
    """Predictions of A's elastic nets in B equal a direct loop with variants matched by alleles, one of them swapped
    in B and one given another ALT (missing); the share found is stored and printed; metrics are scipy's/sklearn's."""
    a, store = Store(cohorts["store_a"]), copy_store(cohorts["store_b"], tmp_path)
    fold = 0
    gene_a, gene_b = next((ga, gb) for ga, gb in zip(a.genes.index, Store(store).genes.index)
                          if np.count_nonzero(read_result(a.path, ga, "enet")[0]["enet_coefficient"][fold]) >= 3)
    coefficients = read_result(a.path, gene_a, "enet")[0]["enet_coefficient"][fold]
    source = a.gene(gene_a)
    b_rows = {(int(p), str(x)): i for i, (p, x) in enumerate(zip(Store(store).gene(gene_b)["variant_position"][:],
                                                                  Store(store).gene(gene_b)["variant_allele"][:, 1]))}
    matched = [(j, b_rows[key]) for j in np.flatnonzero(coefficients)
               if (key := (int(source["variant_position"][j]), str(source["variant_allele"][j, 1]))) in b_rows]
    assert len(matched) >= 2
    plain = copy_store(cohorts["store_b"], tmp_path, "plain.zarr")
    pstore("enet", "--store", str(plain), "--from-store", str(a.path), "--gene", gene_b, "--folds", "0", "--quiet")
    swap_alleles(store, gene_b, matched[0][1])
    change_alt(store, gene_b, matched[1][1])

    output = pstore("enet", "--store", str(store), "--from-store", str(a.path), "--folds", "0,1").output
    name = "enet_from_a"
    b = Store(store)
    expected, found, flipped = direct_prediction(a, gene_a, b, gene_b, fold)
    arrays, attrs = read_result(store, gene_b, name)
    np.testing.assert_allclose(arrays["prediction"][fold], expected, rtol=1e-5, atol=1e-5)
    assert np.isfinite(arrays["prediction"][fold]).all() and attrs["folds"] == [0, 1] and attrs["kind"] == "enet_transfer"
    n_nonzero = np.count_nonzero(coefficients)
    assert flipped == 1 and found == len(matched) - 1
    assert (arrays["transfer_n_nonzero"][fold], arrays["transfer_n_found"][fold], arrays["transfer_n_flipped"][fold]) == (n_nonzero, found, 1)
    assert arrays["transfer_variant_share"][fold] == pytest.approx(found / n_nonzero)
    assert attrs["source_gene_id"] == gene_a and attrs["source_store"]["identity"] == store_identity(a)
    assert attrs["source_store"]["name"] == "a.zarr" and attrs["source_model"] == "enet"
    metrics_match(arrays, fold, b, gene_b)
    assert re.search(rf"{gene_b}\s+{gene_a}\s+0\s+ok", output) and f"{found / n_nonzero:.4f}" in output
    assert "genes: 3 matched by ID with versions ignored (3 with another version); 0 only in b.zarr, 0 only in a.zarr" in output
    # swapping REF/ALT in B changes nothing (the same people carry A's ALT); the variant given another ALT now adds 0
    j_missing, row_missing = matched[1]
    dosage = (Store(plain).gene(gene_b)["call_genotype"][row_missing] == 1).sum(axis=1)
    before = read_result(plain, gene_b, name)[0]["prediction"][fold]
    np.testing.assert_allclose(before - coefficients[j_missing] * dosage, arrays["prediction"][fold], atol=1e-4)
    # a second run resumes (nothing to do) and the store stays valid
    assert "0 transferred now" in pstore("enet", "--store", str(store), "--from-store", str(a.path), "--folds", "0,1").output
    assert validate_store(store) == []


def test_cross_cohort_run_end_to_end(cohorts, run_a, tmp_path):
    """A run of A evaluated on B: every B person predicted into fold 1, metrics as scipy/sklearn, the source recorded,
    and `pstore compare`/`pstore info` tell it (and A's transferred elastic net) from B's own models."""
    store = copy_store(cohorts["store_b"], tmp_path)
    b = Store(store)
    trained_a = Store(cohorts["store_a"]).genes.index[0]
    output = pstore("evaluate", "--store", str(store), "--run", str(run_a), "--device", "cpu").output
    assert "genes: 1 matched by ID with versions ignored (1 with another version); 2 only in b.zarr, 0 only in run perf_a" in output
    assert output.count("cross-cohort HOGP") == 2 + 1 and re.search(r"cross-cohort: 1 genes", output)
    for gene_id in b.genes.index:
        arrays, attrs = read_result(store, gene_id, "perf_a")
        assert attrs["kind"] == "performer" and attrs["folds"] == [1] and list(arrays["status"]) == ["not run", "ok", "not run"]
        assert np.isfinite(arrays["prediction"][1]).all() and np.isnan(arrays["prediction"][[0, 2]]).all()
        assert attrs["source_store"]["identity"] == store_identity(Store(cohorts["store_a"]))
        assert attrs["source_store"]["path"] == str(cohorts["store_a"]) and attrs["runs"] == {"1": str(run_a.resolve())}
        assert attrs["source_gene_id"] == (trained_a if unversioned(gene_id) == unversioned(trained_a) else None)
        metrics_match(arrays, 1, b, gene_id)
    pstore("enet", "--store", str(store), "--from-store", str(cohorts["store_a"]), "--quiet")
    compared = pstore("compare", "--store", str(store)).output
    assert re.search(r"enet_from_a\s+enet_transfer\s+a\.zarr", compared) and re.search(r"perf_a\s+performer\s+a\.zarr", compared)
    info = pstore("info", str(store)).output
    assert re.search(r"\benet\s+enet\s+3\s+0,1,2\s.*this store", info) and re.search(r"perf_a\s+performer\s+3\s+1\s.*a\.zarr", info)
    message = pstore("evaluate", "--store", str(store), "--run", str(run_a), "--name", "enet_from_a", "--device", "cpu", expect=1).output
    assert "already has a result named 'enet_from_a' (enet_transfer, trained in a.zarr)" in message and "give --name" in message
    assert validate_store(store) == []


def test_pipeline_scores_runs_and_enets_on_other_stores(cohorts, run_a, tmp_path):
    """`[evaluate].other_stores`: runs and the elastic nets of the config's store score the other store's people,
    named `<run>_from_<store>` and `enet_from_<store>`; a second pass finds them done."""
    from performer_store.pipeline import Run, load_config, run_cross_cohort

    other = copy_store(cohorts["store_b"], tmp_path)
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'''store = "{cohorts['store_a']}"
out = "out"
[inputs]
fasta = "x.fa"
vcf = "x.vcf.gz"
gtf = "x.gtf"
expression = "x.bed.gz"
tissue = "whole_blood"
[train]
config = "tiny"
[evaluate]
other_stores = ["{other.name}"]
''')
    config = load_config(config_file)
    assert config.evaluate.other_stores == [other]
    gene_a = Store(cohorts["store_a"]).genes.index[0]
    run = Run(run_a, "perf_a", (gene_a,), 1)
    run_cross_cohort(config, [run])
    gene_b = resolve_genes(Store(other), [gene_a])[0]
    assert [g for g in Store(other).genes.index if read_result(other, g, "perf_a_from_a")] == [gene_b]
    arrays, attrs = read_result(other, gene_b, "perf_a_from_a")
    assert attrs["source_gene_id"] == gene_a and attrs["folds"] == [1]
    assert all(read_result(other, g, "enet_from_a")[1]["folds"] == [0, 1, 2] for g in Store(other).genes.index)
    before = (other / "genes" / gene_b / "results" / "perf_a_from_a" / "zarr.json").stat().st_mtime_ns
    run_cross_cohort(config, [run])
    assert (other / "genes" / gene_b / "results" / "perf_a_from_a" / "zarr.json").stat().st_mtime_ns == before
    # a result from before the people check (no seen_in_training) is made again, not taken as done
    zarr.open_group(str(other / "genes" / gene_b / "results" / "perf_a_from_a"), mode="r+").attrs.update({"seen_in_training": {}})
    run_cross_cohort(config, [run])
    assert read_result(other, gene_b, "perf_a_from_a")[1]["seen_in_training"] == {"1": 0}


def nan_run(run: Path, tmp_path: Path) -> Path:
    """A copy of a run whose best checkpoint's floating-point weights are all NaN (a diverged or damaged run)."""
    import torch

    copy = tmp_path / "nan_run"
    shutil.copytree(run, copy)
    checkpoint = torch.load(copy / "best.pt", weights_only=True)
    for value in checkpoint["state_dict"].values():
        if value.is_floating_point():
            value.fill_(float("nan"))
    torch.save(checkpoint, copy / "best.pt")
    return copy


def test_non_finite_predictions_are_one_line_errors_and_store_nothing(cohorts, run_a, tmp_path):
    """A checkpoint predicting NaN: evaluate (own store and cross-cohort), ism and evaluate --reference stop with one line
    naming the checkpoint and the gene, exit 1, and store nothing (not sklearn's 'Input contains NaN', not NaN scores)."""
    run = nan_run(run_a, tmp_path)
    own = copy_store(cohorts["store_a"], tmp_path, "a.zarr")
    other = copy_store(cohorts["store_b"], tmp_path)
    checkpoint = f"checkpoint {run / 'best.pt'}: predictions of gene "
    before = {store: sorted(store.rglob("*")) for store in (own, other)}
    for command in (("evaluate", "--store", str(own)), ("evaluate", "--store", str(other)), ("ism", "--store", str(own), "--quiet"),
                    ("evaluate", "--store", str(own), "--reference")):
        message = pstore(*command, "--run", str(run), "--device", "cpu", expect=1).output
        assert message.count("\n") == 1 and checkpoint in message and "are not finite" in message, message
        assert re.search(r"gene ENSG\S+ are not finite \(\d+ of \d+ are nan\)", message) and "lower --lr" in message
    assert {store: sorted(store.rglob("*")) for store in (own, other)} == before
    from performer_store.evaluate import check_predictions  # base Enformer's error: names its model and --weights

    with pytest.raises(InputError, match=r"^base Enformer \(config tiny\): predictions of gene G are not finite \(1 of 2 are inf\); .*--weights"):
        check_predictions({"G": (np.arange(2), np.array([0.5, np.inf], np.float32), np.zeros(2))}, None, {"model": "config tiny"})


@pytest.mark.parametrize("array, value, shown", [("enet_coefficient", np.nan, "nan"), ("enet_intercept", np.inf, "inf")])
def test_non_finite_source_models_are_one_line_errors_and_store_nothing(cohorts, tmp_path, array, value, shown):
    """A hand-corrupted source store: a nan coefficient (once dropped as if 0, giving finite but wrong predictions) or
    an inf intercept (once stored as inf predictions) stops `pstore enet --from-store` with one line naming the gene,
    the source store and the refit; nothing of that gene is written in B."""
    source, store = copy_store(cohorts["store_a"], tmp_path, "a.zarr"), copy_store(cohorts["store_b"], tmp_path)
    gene_a, gene_b = Store(source).genes.index[0], Store(store).genes.index[0]
    corrupted = zarr.open_group(str(source / "genes" / gene_a / "results" / "enet"), mode="r+")[array]
    if array == "enet_coefficient":
        corrupted[0, int(np.flatnonzero(corrupted[0] == 0)[0])] = value  # a coefficient of 0: no finite one moves
    else:
        corrupted[0] = value
    before, people = sorted(store.rglob("*")), len(Store(store).sample_id)  # every person of B is predicted, then checked
    output = pstore("enet", "--store", str(store), "--from-store", str(source), "--gene", gene_b, "--folds", "0,1", expect=1).output
    assert output == (f"Error: enet of store {source}: predictions of gene {gene_b} are not finite ({people} of {people} "
                      f"are {shown}); its fold 0 of gene {gene_a} has coefficients or an intercept that are not finite (or too "
                      f"large): refit it with `pstore enet --store {source} --model enet --gene {gene_a} --folds 0 --force`; "
                      "nothing of it was stored\n"), output
    assert sorted(store.rglob("*")) == before and read_result(store, gene_b, "enet_from_a") is None


def same_people_store(cohorts, tmp_path: Path) -> Path:
    """Cohort A's inputs built again with another --seed: the same people in other splits, another cohort digest."""
    a = cohorts["a"]
    pstore("build", "--quiet", "--store", str(tmp_path / "a_seed7.zarr"), "--fasta", str(a / "reference.fa"), "--vcf", str(a / "genotypes.vcf.gz"),
           "--gtf", str(a / "annotation.gtf.gz"), "--expression", str(a / "expression.bed.gz"), "--tissue", "whole_blood",
           "--window", str(WINDOW), "--seed", "7")
    return tmp_path / "a_seed7.zarr"


def test_a_store_of_the_source_people_is_refused(cohorts, run_a, tmp_path):
    """A store of A's own people (another --seed) is no other cohort: evaluate of A's run and enet --from-store A are
    refused with one line saying to score the model in store A, and nothing is written."""
    store = same_people_store(cohorts, tmp_path)
    assert Store(store).attrs["provenance"]["cohort"] != store_identity(Store(cohorts["store_a"]))
    before, people, seen = sorted(store.rglob("*")), len(Store(store).sample_id), seen_by_fold(cohorts["store_a"], store)
    for command, fold in ((("evaluate", "--store", str(store), "--run", str(run_a), "--device", "cpu"), 1),
                          (("enet", "--store", str(store), "--from-store", str(cohorts["store_a"])), 0)):
        message = pstore(*command, expect=1).output
        assert message.count("\n") == 1, message
        assert f"{len(seen[fold])} of its {people} people are fold {fold} train or tune people of store {cohorts['store_a']}" in message
        assert f"it is not another cohort; score the model in store {cohorts['store_a']} itself" in message
    assert sorted(store.rglob("*")) == before


def seen_by_fold(source: Path, target: Path) -> dict[int, np.ndarray]:
    """Per fold, the target rows whose sample ID is a train (0) or tune (1) person of the source's fold, from the raw arrays."""
    a, b = zarr.open_group(str(source), mode="r"), zarr.open_group(str(target), mode="r")
    ids_a, ids_b, splits = list(a["sample_id"][:]), list(b["sample_id"][:]), a["sample_split"][:]
    return {fold: np.array([i for i, person in enumerate(ids_b) if person in ids_a and splits[fold][ids_a.index(person)] in (0, 1)])
            for fold in range(len(splits))}


def check_left_out(arrays: dict, fold: int, store: Path, gene_id: str, seen: np.ndarray) -> None:
    """Seen people have no prediction, the others have; r and R2 (scipy, sklearn) over the fold's other test people and
    over everyone else with a target."""
    target = zarr.open_group(str(store / "genes" / gene_id), mode="r")["target"][:].astype(np.float64)
    prediction = arrays["prediction"][fold].astype(np.float64)
    unseen = np.setdiff1d(np.arange(len(target)), seen)
    assert np.isnan(prediction[seen]).all() and np.isfinite(prediction[unseen]).all()
    test = np.flatnonzero(zarr.open_group(str(store), mode="r")["sample_split"][fold] == 2)
    for key, rows in (("", np.setdiff1d(test, seen)), ("cross_", unseen)):
        rows = rows[~np.isnan(target[rows])]
        constant = np.ptp(prediction[rows]) == 0
        np.testing.assert_allclose(arrays[f"{key}pearson_r"][fold], np.nan if constant else pearsonr(prediction[rows], target[rows]).statistic,
                                   atol=1e-5, equal_nan=True)
        assert arrays[f"{key}r2"][fold] == pytest.approx(r2_score(target[rows], prediction[rows]), abs=1e-5)


def test_people_the_model_saw_are_left_out_and_counted(cohorts, run_a, tmp_path):
    """B with 6 people renamed to fold-1 train/tune people of A and 2 to fold-1 test people of A: A's fold-1 run leaves
    the 6 out of B's predictions and metrics (recomputed with scipy/sklearn), keeps the 2, records and prints 6; the
    other people's predictions are those of plain B. The elastic-net transfer does the same per fold."""
    plain, store = copy_store(cohorts["store_b"], tmp_path, "plain.zarr"), copy_store(cohorts["store_b"], tmp_path)
    a = zarr.open_group(str(cohorts["store_a"]), mode="r")
    ids_a, split_a = a["sample_id"][:], a["sample_split"][1]
    root = zarr.open_group(str(store), mode="r+")
    ids_b, test_b = root["sample_id"][:], np.flatnonzero(root["sample_split"][1] == 2)
    renamed = np.concatenate([test_b[:3], np.setdiff1d(np.arange(len(ids_b)), test_b)[:5]])  # 3 test people, 5 others
    ids_b[renamed] = np.concatenate([ids_a[split_a == 0][:3], ids_a[split_a == 1][:3], ids_a[split_a == 2][:2]])
    root["sample_id"][:] = ids_b
    seen = seen_by_fold(cohorts["store_a"], store)
    np.testing.assert_array_equal(seen[1], np.sort(renamed[:6]))

    output = pstore("evaluate", "--store", str(store), "--run", str(run_a), "--device", "cpu").output
    assert "people of b.zarr left out as train or tune people of a.zarr's fold (seen in training): fold 1: 6" in output
    pstore("evaluate", "--store", str(plain), "--run", str(run_a), "--device", "cpu")
    for gene_id in Store(store).genes.index:
        arrays, attrs = read_result(store, gene_id, "perf_a")
        assert attrs["seen_in_training"] == {"1": 6}
        check_left_out(arrays, 1, store, gene_id, seen[1])
        unseen = np.setdiff1d(np.arange(len(ids_b)), seen[1])
        np.testing.assert_array_equal(arrays["prediction"][1][unseen], read_result(plain, gene_id, "perf_a")[0]["prediction"][1][unseen])

    output = pstore("enet", "--store", str(store), "--from-store", str(cohorts["store_a"]), "--folds", "0,1").output
    counts = {fold: len(seen[fold]) for fold in (0, 1)}
    assert counts[1] == 6 and counts[0] > 0
    assert f"(seen in training): fold 0: {counts[0]}, fold 1: 6" in output
    for gene_id in Store(store).genes.index:
        arrays, attrs = read_result(store, gene_id, "enet_from_a")
        assert attrs["seen_in_training"] == {str(fold): count for fold, count in counts.items()}
        for fold in (0, 1):
            check_left_out(arrays, fold, store, gene_id, seen[fold])
    assert validate_store(store) == []
    # a result from before the check (no seen_in_training) is made again, not skipped as done
    gene_id = Store(store).genes.index[0]
    group = zarr.open_group(str(store / "genes" / gene_id / "results" / "enet_from_a"), mode="r+")
    group.attrs.update({"seen_in_training": {}})
    output = pstore("enet", "--store", str(store), "--from-store", str(cohorts["store_a"]), "--folds", "0,1").output
    assert "1 transferred now" in output and read_result(store, gene_id, "enet_from_a")[1]["seen_in_training"] == {"0": counts[0], "1": 6}


def test_cross_cohort_run_needs_its_training_store(cohorts, run_a, tmp_path):
    """A run whose run.json names a missing store, or a path now holding another store, is refused with one line (the
    people it saw cannot be told), nothing written."""
    store = copy_store(cohorts["store_b"], tmp_path)
    before = sorted(store.rglob("*"))
    for where, expected in ((tmp_path / "gone.zarr", "the store it was trained in cannot be found"),
                            (cohorts["store_b"], "now holds another store than the run was trained in")):
        run = tmp_path / f"run_{where.stem}"
        shutil.copytree(run_a, run)
        record = json.loads((run / "run.json").read_text())
        record["config"]["store"] = str(where)
        (run / "run.json").write_text(json.dumps(record))
        message = pstore("evaluate", "--store", str(store), "--run", str(run), "--device", "cpu", expect=1).output
        assert message.count("\n") == 1 and expected in message and f"correct config.store in {run / 'run.json'}" in message, message
    assert sorted(store.rglob("*")) == before


def direct_scores(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson r (scipy; NaN for a constant prediction) and R2 (sklearn) in float64."""
    prediction = prediction.astype(np.float64)
    return np.array([np.nan if np.ptp(prediction) == 0 else pearsonr(prediction, target).statistic, r2_score(target, prediction)])


def test_compare_scores_cross_cohort_models_on_the_people_both_predicted(cohorts, tmp_path):
    """B with 5 fold-0 test people renamed to A's fold-0 train people: A's elastic nets leave them out, B's own does
    not; `pstore compare`'s differences and summary means score both on the test people both predicted (recomputed
    here with scipy/sklearn from the raw arrays), not B's elastic net on 5 more people."""
    from performer_store.compare import compare_models

    store = copy_store(cohorts["store_b"], tmp_path)
    a, root = zarr.open_group(str(cohorts["store_a"]), mode="r"), zarr.open_group(str(store), mode="r+")
    ids_b, splits = root["sample_id"][:], root["sample_split"][:]
    ids_b[np.flatnonzero(splits[0] == 2)[:5]] = a["sample_id"][:][a["sample_split"][0] == 0][:5]
    root["sample_id"][:] = ids_b
    seen = seen_by_fold(cohorts["store_a"], store)
    pstore("enet", "--store", str(store), "--from-store", str(cohorts["store_a"]), "--quiet")
    comparison = compare_models(store)
    table, differences, means, stored = comparison.table.set_index("gene_id"), {}, [], {}
    for gene_id in table.index:
        target = zarr.open_group(str(store / "genes" / gene_id), mode="r")["target"][:].astype(np.float64)
        results = [read_result(store, gene_id, name)[0] for name in ("enet_from_a", "enet")]
        assert all(np.isfinite(arrays["r2"]).all() for arrays in results)
        scores = []
        for fold in range(len(splits)):
            people = np.setdiff1d(np.flatnonzero((splits[fold] == 2) & ~np.isnan(target)), seen[fold])
            scores.append([direct_scores(arrays["prediction"][fold][people], target[people]) for arrays in results])
        scores = np.array(scores)  # folds x (cross, own) x (r, r2)
        differences[gene_id] = pd.DataFrame(scores[:, 0] - scores[:, 1]).mean().to_numpy()  # over the folds with both
        means.append(scores[:, :, 1].mean(axis=0))
        stored[gene_id] = np.mean(results[0]["r2"] - results[1]["r2"])
    assert [np.count_nonzero(splits[fold][seen[fold]] == 2) for fold in range(len(splits))] == [5, 0, 0]
    expected = pd.DataFrame(differences, index=["enet_from_a_minus_enet_r", "enet_from_a_minus_enet_r2"]).T
    np.testing.assert_allclose(table.loc[expected.index, expected.columns], expected, atol=1e-6)
    assert max(abs(stored[g] - differences[g][1]) for g in differences) > 1e-3  # B's enet on all its test people differs
    row = comparison.summary.set_index("model").loc["enet_from_a"]
    assert [row["mean_r2"], row["mean_enet_r2"]] == pytest.approx(np.mean(means, axis=0), abs=1e-6)
    assert row["trained_in"] == "a.zarr" and row["genes"] == len(differences)
