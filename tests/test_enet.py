"""`pstore enet`: the stored models equal scikit-learn's, fitted here directly; folds resume; bad folds explain themselves."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import pstore
from scipy.stats import pearsonr
from simulated import simulated_store
from sklearn.feature_selection import VarianceThreshold
from sklearn.linear_model import ElasticNetCV, LassoCV
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline

from performer_store import enet
from performer_store.enet_path import elastic_net_cv
from performer_store.results import read_result
from performer_store.store import Store
from performer_store.validate import validate_store


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Store with 49,152 bp windows: more SNVs than people in an inner fold."""
    return simulated_store(tmp_path_factory.mktemp("wide"), 49_152)[1]


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """Store with 8,192 bp windows: fewer SNVs than people."""
    return simulated_store(tmp_path_factory.mktemp("narrow"), 8_192)[1]


def fold_data(path, gene_id: str, fold: int):
    """Dosage (people x SNVs, from call_genotype here), target and the fold's train/held/test masks."""
    store = Store(path)
    group = store.gene(gene_id)
    calls = group["call_genotype"][:]
    dosage = np.where(calls == 1, 1.0, 0.0).sum(axis=2).T
    target = group["target"][:].astype(np.float64)
    split = store.split(fold)
    has_target = ~np.isnan(target)
    return dosage, target, (split == 0) & has_target, split != 0, (split == 2) & has_target


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # small alphas, as in the method
@pytest.mark.parametrize(("store_name", "model"), [("wide", "enet"), ("wide", "lasso"), ("narrow", "enet")])
def test_command_matches_sklearn_fitted_directly(request, store_name, model):
    """The command's coefficients, intercept, alpha, predictions, r and R2 equal scikit-learn's default pipeline."""
    path = request.getfixturevalue(store_name)
    genes = Store(path).genes.sort_values("gene_n_variants")
    gene_id = genes.index[0]  # the smallest gene: fastest for scikit-learn
    dosage, target, train, held, test = fold_data(path, gene_id, 0)
    inner_people = train.sum() * 4 // 5
    assert (genes["gene_n_variants"].iloc[0] > inner_people) == (store_name == "wide")

    pstore("enet", "--store", str(path), "--gene", gene_id, "--folds", "0", "--model", model, "--quiet")
    arrays, attrs = read_result(path, gene_id, model)
    search = LassoCV(max_iter=2000) if model == "lasso" else ElasticNetCV(max_iter=2000)
    reference = make_pipeline(VarianceThreshold(), search).fit(dosage[train], target[train])
    coefficient = np.zeros(dosage.shape[1])
    coefficient[reference[0].get_support()] = search.coef_

    assert attrs["kind"] == model and attrs["folds"] == [0] and arrays["status"][0] == "ok"
    assert arrays["enet_alpha"][0] == pytest.approx(search.alpha_, rel=1e-12)
    assert arrays["enet_l1_ratio"][0] == (1.0 if model == "lasso" else 0.5)
    np.testing.assert_allclose(arrays["enet_coefficient"][0], coefficient, rtol=1e-6, atol=1e-7)
    assert arrays["enet_intercept"][0] == pytest.approx(search.intercept_, rel=1e-6)
    assert arrays["enet_n_nonzero"][0] == np.count_nonzero(search.coef_) > 0
    predicted = reference.predict(dosage[held])
    np.testing.assert_allclose(arrays["prediction"][0][held], predicted, rtol=1e-5)
    assert np.isnan(arrays["prediction"][0][~held]).all()
    test_prediction = reference.predict(dosage[test])
    assert arrays["r2"][0] == pytest.approx(r2_score(target[test], test_prediction), abs=1e-6)
    assert arrays["pearson_r"][0] == pytest.approx(pearsonr(test_prediction, target[test]).statistic, abs=1e-6)
    assert np.isnan(arrays["r2"][1:]).all() and list(arrays["status"][1:]) == ["not run", "not run"]
    assert validate_store(path) == []


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(("store_name", "model", "genes"), [("wide", "enet", slice(1, 2)), ("narrow", "enet", slice(None)),
                                                              ("narrow", "lasso", slice(None))])
def test_paths_match_sklearn(request, store_name, model, genes):
    """Genes' fold 0 (on the wide store the second smallest): the early exit fits a prefix of the alpha
    grid (on the wide store a shorter one) with scikit-learn's validation errors and picks its alpha, coefficients (1e-4) and test R2 (1e-6);
    the whole-grid path has all of scikit-learn's validation errors."""
    path = request.getfixturevalue(store_name)
    l1_ratio, stopped = enet.L1_RATIOS[model], []
    for gene_id in Store(path).genes.sort_values("gene_n_variants").index[genes]:
        dosage, target, train, _, test = fold_data(path, gene_id, 0)
        X, y = VarianceThreshold().fit_transform(dosage[train]), target[train]
        search = (LassoCV(max_iter=2000) if model == "lasso" else ElasticNetCV(max_iter=2000)).fit(X, y)
        mse = search.mse_path_.mean(axis=1)
        early = elastic_net_cv(X, y, l1_ratio)
        np.testing.assert_allclose(early.mean_mse, mse[: len(early.mean_mse)], rtol=1e-9)
        stopped.append(len(early.mean_mse) < len(mse))
        assert early.alpha == search.alpha_
        np.testing.assert_allclose(early.coefficient, search.coef_, rtol=0, atol=1e-4)
        X_test = dosage[test][:, np.ptp(dosage[train], axis=0) > 0]
        assert r2_score(target[test], X_test @ early.coefficient + early.intercept) == pytest.approx(
            r2_score(target[test], search.predict(X_test)), abs=1e-6)
        if store_name == "narrow":
            np.testing.assert_allclose(elastic_net_cv(X, y, l1_ratio, stop=False).mean_mse, mse, rtol=1e-9)
    if store_name == "wide":  # more SNVs than people: the small alphas run to max_iter, and the exit skips them
        assert any(stopped)  # the early exit is exercised, not just the whole grid


def test_more_folds_later_keep_the_folds_done(narrow):
    """Fold 0, then folds 0-1: fold 0 is kept as it was, fold 1 added, fold 2 still 'not run'; a re-run skips."""
    gene_id = Store(narrow).genes.sort_values("gene_n_variants").index[-1]  # not the gene fitted above
    first = pstore("enet", "--store", str(narrow), "--gene", gene_id, "--folds", "0", "--quiet")
    assert "fitted 1 genes" in first.output
    before, _ = read_result(narrow, gene_id, "enet")
    second = pstore("enet", "--store", str(narrow), "--gene", gene_id, "--folds", "0,1", "--quiet")
    assert "fitted 1 genes" in second.output
    after, attrs = read_result(narrow, gene_id, "enet")
    assert attrs["folds"] == [0, 1] and attrs["solver"] == {"0": "early", "1": "early"}
    for name, values in before.items():
        np.testing.assert_array_equal(after[name][0], values[0])
    assert after["status"][1].startswith("ok") and after["status"][2] == "not run"
    assert np.isfinite(after["r2"][1]) and np.isnan(after["prediction"][2]).all() and after["enet_n_nonzero"][2] == -1
    again = pstore("enet", "--store", str(narrow), "--gene", gene_id, "--folds", "1", "--quiet")
    assert "fitted 0 genes, 1 already complete" in again.output


def synthetic_fold(n_people: int = 60, n_variants: int = 5, seed: int = 0):
    """Random 0/1/2 dosages, a target driven by the first SNV, and a fold split (train 40, tune 10, test 10)."""
    rng = np.random.default_rng(seed)
    dosage = rng.binomial(2, 0.3, (n_people, n_variants)).astype(np.float64)
    target = dosage[:, 0] + rng.normal(size=n_people)
    split = np.repeat([0, 1, 2], [40, 10, 10])
    return dosage, target, split


def test_a_window_without_snvs_predicts_the_train_mean():
    """No SNVs: coefficients none, intercept and prediction the train mean, NaN metrics, status says why."""
    dosage, target, split = synthetic_fold()
    row = enet.fit_fold(dosage[:, :0], target, split, 0.5)
    assert row["status"] == "no variants: the window has no SNVs; predicts the train mean"
    assert row["enet_intercept"] == pytest.approx(target[:40].mean())
    np.testing.assert_allclose(row["prediction"][40:], target[:40].mean())
    assert np.isnan(row["prediction"][:40]).all() and np.isnan([row["r2"], row["pearson_r"], row["enet_alpha"]]).all()
    assert row["enet_n_nonzero"] == 0 and row["enet_coefficient"].shape == (0,)


def test_snvs_constant_in_the_train_people_are_no_variants():
    """SNVs that vary only outside the train people cannot be fitted: reported, not a crash."""
    dosage, target, split = synthetic_fold()
    dosage[:40] = 1.0
    row = enet.fit_fold(dosage, target, split, 0.5)
    assert row["status"] == "no variants: all 5 SNVs are constant among the 40 train people; predicts the train mean"
    np.testing.assert_array_equal(row["enet_coefficient"], np.zeros(5))
    assert np.isnan(row["r2"])


def test_a_constant_target_is_reported():
    """A target equal for every train person: the constant is the prediction, metrics NaN, status explains."""
    dosage, target, split = synthetic_fold()
    target[:] = 0.25
    row = enet.fit_fold(dosage, target, split, 0.5)
    assert row["status"] == "constant target: every train person has 0.25; predicts it"
    np.testing.assert_array_equal(row["prediction"][40:], 0.25)
    assert np.isnan([row["r2"], row["pearson_r"]]).all()


def test_too_few_train_people_fit_nothing():
    """7 train people with a target (NaN targets do not count): no model, NaN everywhere, count in the status."""
    dosage, target, split = synthetic_fold()
    target[7:40] = np.nan
    row = enet.fit_fold(dosage, target, split, 0.5)
    assert row["status"] == "too few people: 7 train with a target (need 10)"
    assert np.isnan(row["prediction"]).all() and np.isnan(row["enet_coefficient"]).all() and row["enet_n_nonzero"] == -1


def test_fitted_fold_equals_sklearn_and_notes_undefined_metrics():
    """A fitted fold with 2 test people: model as scikit-learn's, R2 and r NaN with the reason in the status."""
    dosage, target, split = synthetic_fold()
    target[52:] = np.nan
    row = enet.fit_fold(dosage, target, split, 0.5)
    reference = make_pipeline(VarianceThreshold(), ElasticNetCV(max_iter=2000)).fit(dosage[:40], target[:40])
    np.testing.assert_allclose(row["enet_coefficient"], reference[-1].coef_, atol=1e-10)
    np.testing.assert_allclose(row["prediction"][40:], reference.predict(dosage[40:]), atol=1e-10)
    assert row["status"] == "ok: too few people: 2 test with a target (need 3)" and np.isnan(row["r2"])


def test_tiny_store_records_every_bad_fold(tiny_store, tmp_path):
    """The tiny cohort (12 people): too few people, a gene without SNVs; the store stays valid and a broken
    result is reported by validate."""
    store = tmp_path / "store.zarr"
    shutil.copytree(tiny_store, store)
    result = pstore("enet", "--store", str(store), "--quiet")
    assert "ENSG00000000004.1 fold 1: no variants: the window has no SNVs; predicts the train mean" in result.output
    assert "fold 0: too few people: 9 train with a target (need 10)" in result.output
    assert validate_store(store) == []
    shutil.rmtree(store / "genes" / "ENSG00000000004.1" / "results" / "enet" / "r2")
    assert validate_store(store) == ["genes/ENSG00000000004.1/results/enet: array r2 is missing"]


def test_bad_arguments_are_one_line_errors(narrow):
    """Unknown gene, a fold the store lacks, a malformed fold list."""
    gene = pstore("enet", "--store", str(narrow), "--gene", "ENSG_NOPE", expect=1)
    assert "no gene ENSG_NOPE; genes are listed by `pstore info" in gene.output
    fold = pstore("enet", "--store", str(narrow), "--folds", "7", expect=1)
    assert "fold 7 does not exist; folds are 0-2" in fold.output
    malformed = pstore("enet", "--store", str(narrow), "--folds", "0,x", expect=2)
    assert "give fold numbers separated by commas" in malformed.output


@pytest.fixture(scope="module")
def few_people(tmp_path_factory):
    """120 people (94 train per fold), 8,192-bp windows: a gene whose validation error rises from the model
    without SNVs for 18 alphas before falling far below it."""
    from performer_store.build import BuildConfig, build_store
    from performer_store.simulate import simulate_cohort

    directory = tmp_path_factory.mktemp("few")
    cohort = simulate_cohort(directory / "cohort", individuals=120, genes=4, seed=3, window=8_192)
    store = directory / "store.zarr"
    build_store(BuildConfig(store=store, fasta=cohort.reference, vcf=cohort.vcf, gtf=cohort.annotation,
                            expression=cohort.expression, tissue="whole_blood", window=8_192, progress=False))
    return store


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_early_exit_waits_out_a_rise_from_the_null_model(few_people):
    """With few people the early exit picks the whole grid's alpha in every gene and fold, including those
    whose error curve first rises from the null model (the exit once stopped there, at an alpha with 10% more
    validation error)."""
    from_null = 0
    for gene_id in Store(few_people).genes.index:
        for fold in range(3):
            dosage, target, train, _, _ = fold_data(few_people, gene_id, fold)
            X, y = VarianceThreshold().fit_transform(dosage[train]), target[train]
            whole = elastic_net_cv(X, y, 0.5, stop=False)
            assert elastic_net_cv(X, y, 0.5).alpha == whole.alpha, (gene_id, fold)
            rising = np.diff(whole.mean_mse[:6]) > 0
            from_null += bool(rising.all() and whole.mean_mse.argmin() > 0)
    assert from_null >= 1  # the case that needs the wait is in this cohort


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_null_model_has_no_coefficient(tmp_path):
    """Where cross-validation picks the grid's first alpha (the smallest with no SNV), every coefficient is exactly 0
    as in scikit-learn; the descent on the centred Gram form once left a 2e-17 one, stored as a 1-SNV model."""
    from performer_store.build import BuildConfig, build_store
    from performer_store.simulate import simulate_cohort

    cohort = simulate_cohort(tmp_path / "cohort", individuals=200, genes=6, seed=11, window=8_192, multiallelic=True)
    store = tmp_path / "store.zarr"
    build_store(BuildConfig(store=store, fasta=cohort.reference, vcf=cohort.vcf, gtf=cohort.annotation,
                            expression=cohort.expression, tissue="whole_blood", window=8_192, progress=False))
    null_fits = 0
    for gene_id in Store(store).genes.index:
        for fold in range(3):
            dosage, target, train, _, _ = fold_data(store, gene_id, fold)
            X, y = VarianceThreshold().fit_transform(dosage[train]), target[train]
            fit = elastic_net_cv(X, y, 0.5)
            search = ElasticNetCV(max_iter=2000).fit(X, y)
            assert fit.alpha == search.alpha_
            if search.alpha_ == search.alphas_[0]:
                null_fits += 1
                assert not fit.coefficient.any() and not search.coef_.any()
                assert fit.intercept == pytest.approx(y.mean(), rel=1e-12)
    assert null_fits >= 1  # the null model is chosen somewhere in this cohort


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_early_exit_skips_only_expensive_alphas(tmp_path):
    """A gene of 117 train people whose error rises for 20 alphas above a minimum and then falls below it: those
    alphas converge quickly, so the early exit fits them and picks the whole grid's alpha."""
    from performer_store.build import BuildConfig, build_store
    from performer_store.simulate import simulate_cohort

    cohort = simulate_cohort(tmp_path / "cohort", individuals=150, genes=12, seed=5, window=8_192)
    store = tmp_path / "store.zarr"
    build_store(BuildConfig(store=store, fasta=cohort.reference, vcf=cohort.vcf, gtf=cohort.annotation, genes=("ENSG00000282555.8",),
                            expression=cohort.expression, tissue="whole_blood", window=8_192, progress=False))
    dosage, target, train, _, _ = fold_data(store, "ENSG00000282555.8", 0)
    X, y = VarianceThreshold().fit_transform(dosage[train]), target[train]
    for l1_ratio in (0.5, 1.0):
        whole = elastic_net_cv(X, y, l1_ratio, stop=False)
        first = int(np.argmin(whole.mean_mse[:40]))
        assert whole.mean_mse.min() < whole.mean_mse[first] < whole.mean_mse[first + 20] / 1.05  # the shape that fooled the exit
        assert elastic_net_cv(X, y, l1_ratio).alpha == whole.alpha


def test_another_solver_is_refused_until_force_refits(sim_store, tmp_path):
    """Folds stored with the early solver: --solver sklearn refuses them (one line naming the stored solver and
    --force) and writes nothing; --force refits them with sklearn (the solver recorded and printed); a run
    without --solver keeps them and prints the solver that fitted them."""
    store = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store)
    gene_id = Store(store).genes.index[0]
    first = pstore("enet", "--store", str(store), "--gene", gene_id, "--folds", "0", "--quiet")
    assert "fitted 1 genes, 0 already complete (enet; solver early)" in first.output
    before, _ = read_result(store, gene_id, "enet")

    refused = pstore("enet", "--store", str(store), "--gene", gene_id, "--folds", "0", "--solver", "sklearn", "--quiet", expect=1)
    assert isinstance(refused.exception, SystemExit) and len(refused.output.strip().splitlines()) == 1
    assert (f"--solver sklearn: 1 requested folds of enet are stored fitted with another solver (first: {gene_id} fold 0, "
            "solver early); add --force to refit them with sklearn, or leave out --solver to keep them") in refused.output
    assert read_result(store, gene_id, "enet")[1]["solver"] == {"0": "early"}

    forced = pstore("enet", "--store", str(store), "--gene", gene_id, "--folds", "0", "--solver", "sklearn", "--force", "--quiet")
    assert "fitted 1 genes, 0 already complete (enet; solver sklearn)" in forced.output
    after, attrs = read_result(store, gene_id, "enet")
    assert attrs["solver"] == {"0": "sklearn"} and attrs["folds"] == [0]
    dosage, target, train, _, _ = fold_data(store, gene_id, 0)
    X = VarianceThreshold().fit_transform(dosage[train])
    assert after["enet_alpha"][0] == ElasticNetCV(max_iter=2000).fit(X, target[train]).alpha_
    np.testing.assert_allclose(after["enet_coefficient"][0], before["enet_coefficient"][0], atol=1e-4)  # same model, to rounding

    kept = pstore("enet", "--store", str(store), "--gene", gene_id, "--quiet")  # folds 1-2 added with early, fold 0 kept
    assert "fitted 1 genes, 0 already complete (enet; solver early, sklearn)" in kept.output
    assert read_result(store, gene_id, "enet")[1]["solver"] == {"0": "sklearn", "1": "early", "2": "early"}
    assert pstore("enet", "--store", str(store), "--gene", gene_id, "--solver", "early", "--quiet", expect=1).exception.code == 1


def test_a_gene_given_twice_is_fitted_once(tiny_store, tmp_path):
    """--gene X --gene X: the warning other commands give, X fitted once and its folds counted once."""
    store = tmp_path / "store.zarr"
    shutil.copytree(tiny_store, store)
    result = pstore("enet", "--store", str(store), "--gene", "ENSG00000000004.1", "--gene", "ENSG00000000004.1", "--folds", "1", "--quiet")
    assert "Warning: 1 gene(s) given more than once (first: ENSG00000000004.1); each is used once" in result.output
    assert "fitted 1 genes, 0 already complete" in result.output
    assert "folds: 1 no variants" in result.output
    assert enet.plan_enet(Store(store), ["ENSG00000000001.1"] * 2, [0], "enet", "early") == [
        enet.EnetTask(store, "ENSG00000000001.1", "enet", (0,), "early")]


def test_options_that_would_do_nothing_are_refused(tiny_store, tmp_path):
    """--name without --from-store, an empty --folds, --solver/--force with --from-store: one-line errors, nothing written."""
    store = tmp_path / "store.zarr"
    shutil.copytree(tiny_store, store)
    name = pstore("enet", "--store", str(store), "--name", "foo", expect=2)
    assert "Invalid value for --name: applies to --from-store only" in name.output and "drop --name, or add --from-store" in name.output
    for empty in ("", ","):
        folds = pstore("enet", "--store", str(store), "--folds", empty, expect=2)
        assert "names no fold; give fold numbers separated by commas" in folds.output
    with pytest.raises(enet.InputError, match="--folds: no fold given"):
        enet.plan_enet(Store(store), [], [], "enet", "early")
    for option in (["--solver", "gram"], ["--force"]):
        transfer = pstore("enet", "--store", str(store), "--from-store", str(tiny_store), *option, expect=2)
        assert f"Invalid value for {option[0]}: applies to fitting only; --from-store fits nothing" in transfer.output
    assert not any((store / "genes" / g / "results").exists() for g in Store(store).genes.index)
