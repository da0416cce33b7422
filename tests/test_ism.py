"""ISM: the conv tower's receptive field, batched and spliced scores against plain forward passes, `pstore ism`."""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from enformer_pytorch import Enformer
from enformer_pytorch.modeling_enformer import Attention
from torch import nn

from conftest import pstore
from performer_store import schemas
from performer_store.build import BuildConfig, build_store
from performer_store.ism import IsmModel, centre_track, cage_sum, enformer_model, gene_snvs, performer_model, score_window
from performer_store.loader import GeneReader
from performer_store.model import CONFIGS, Performer, cage_prediction, enformer_from_config, load_checkpoint, save_checkpoint
from performer_store.results import read_result
from performer_store.simulate import simulate_cohort
from performer_store.splice import split_trunk, substitute, tower_reach
from performer_store.store import Store
from performer_store.train import store_identity
from performer_store.validate import validate_store

STORE_WINDOW, RUN_WINDOW = 4096, 2048


def sensitive(enformer: Enformer) -> Enformer:
    """A random Enformer whose every SNV visibly moves the centre bins: attention output projections random
    (enformer-pytorch starts them at zero, so tokens would not mix) and the stem and tower convolutions doubled
    (at the initial scale an SNV's effect shrinks ~7-fold per tower level)."""
    with torch.no_grad():
        for module in [*enformer.stem.modules(), *enformer.conv_tower.modules()]:
            if isinstance(module, nn.Conv1d):
                module.weight.mul_(2)
        for module in enformer.modules():
            if isinstance(module, Attention):
                nn.init.normal_(module.to_out.weight, std=0.3)
    return enformer.eval()


def performer(seed: int = 0) -> Performer:
    """A sensitive tiny Performer."""
    return Performer(sensitive(enformer_from_config("tiny", seed=seed))).eval()


@pytest.fixture(scope="module")
def ism_store(tmp_path_factory) -> Path:
    """A simulated cohort (40 people, 2 genes) built with 4,096-bp windows: 20 and 16 SNVs, 11 and 10 in the centre 2,048 bp."""
    directory = tmp_path_factory.mktemp("ism")
    cohort = simulate_cohort(directory / "cohort", individuals=40, genes=2, seed=5)
    store = directory / "store.zarr"
    build_store(BuildConfig(store=store, fasta=cohort.reference, vcf=cohort.vcf, gtf=cohort.annotation,
                            expression=cohort.expression, tissue="whole_blood", window=STORE_WINDOW, progress=False))
    return store


def save_run(run: Path, trained_on: Path, **meta) -> Path:
    """A run directory holding a sensitive tiny Performer of fold 1 reading 2,048-bp windows as best.pt."""
    run.mkdir(parents=True)
    meta = {"genes": [], "fold": 1, "window": RUN_WINDOW, "store": store_identity(Store(trained_on)), "name": run.name, **meta}
    save_checkpoint(run / "best.pt", performer(), meta)
    return run


@pytest.fixture(scope="module")
def ism_run(ism_store, tmp_path_factory) -> Path:
    """The run `pstore ism` scores with (no training needed: scores need only some fixed weights)."""
    return save_run(tmp_path_factory.mktemp("runs") / "ismrun", ism_store)


def random_window(window: int, seed: int = 0) -> torch.Tensor:
    """A random reference one-hot (window, 4), float64, with an N (0.25) stretch like a contig edge's."""
    generator = torch.Generator().manual_seed(seed)
    onehot = nn.functional.one_hot(torch.randint(0, 4, (window,), generator=generator), 4).double()
    onehot[:40] = 0.25
    return onehot


def edge_snvs(reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SNVs at the window's first and last bases, at bin edges and where the reach changes (offsets 2/3, 124/125),
    and random ones."""
    window = len(reference)
    positions = torch.tensor([0, 1, 2, 3, 127, 128, 256 + 2, 256 + 3, 256 + 124, 256 + 125, window // 2, window - 129, window - 128,
                              window - 3, window - 2, window - 1, *torch.randint(0, window, (4,), generator=torch.Generator().manual_seed(1))])
    return positions, (reference[positions].argmax(dim=1) + 1) % 4


def ism_models(enformer_seed: int = 0) -> list[tuple[IsmModel, Callable[[torch.Tensor], torch.Tensor]]]:
    """A sensitive Performer and a sensitive base Enformer (CAGE track 4950) with their official forward functions."""
    run = performer(enformer_seed)
    base = sensitive(enformer_from_config("tiny", seed=enformer_seed + 1))
    return [(IsmModel("run", "performer", (0,), 0, run, partial(centre_track, run.net.to_tracks), {}), run),
            (IsmModel("enformer", "enformer", (0, 1, 2), 0, base, partial(cage_sum, base.heads["human"], 4950), {}),
             partial(cage_prediction, base, track=4950))]


@pytest.mark.parametrize("name", ["tiny", "full"])
def test_tower_reach_is_259_bp(name):
    """Computed from the architecture's kernels and pools: 7 x 1 + 2 x (2 + 4 + ... + 64) bp beyond a 128-bp bin."""
    with torch.device("meta"):  # the published architecture without allocating its weights
        enformer = Enformer.from_hparams(**CONFIGS[name])
    assert tower_reach(enformer) == (128, 7 + 2 * sum(2**level for level in range(1, 7))) == (128, 259)


@pytest.mark.parametrize("offset", [2, 3, 124, 125])
def test_tower_reach_is_measured_exactly(offset):
    """An SNV at offset o of bin b changes exactly the tower tokens whose 128 bp +-259 bp it falls in: b-3 only for
    o <= 2 and b+3 only for o >= 125 (so the reach is neither more nor less than 259 bp)."""
    enformer = enformer_from_config("tiny").double().eval()
    to_tokens, _ = split_trunk(enformer)
    reference = random_window(2048)
    position = torch.tensor([8 * 128 + offset])
    alt = (reference[position].argmax(dim=1) + 1) % 4
    with torch.no_grad():
        changed = (to_tokens(substitute(reference[None], position, alt)) != to_tokens(reference[None]))[0].any(dim=1)
    expected = [t for t in range(16) if t * 128 - 259 <= position.item() <= t * 128 + 127 + 259]
    assert torch.nonzero(changed).flatten().tolist() == expected
    assert expected[0] == (5 if offset <= 2 else 6) and expected[-1] == (11 if offset >= 125 else 10)


def test_batched_full_forward_equals_one_at_a_time():
    """Batched whole-window scores (float32, CPU) equal single forward passes of the official model functions
    (Performer.forward, model.cage_prediction), for a Performer and base Enformer."""
    reference = random_window(2048).float()
    positions, alts = edge_snvs(reference)
    for model, official in ism_models():
        _, batched = score_window(model, reference, positions, alts, "full", batch=7)
        with torch.no_grad():
            before = official(reference[None]).double()
            single = [official(substitute(reference[None], positions[i : i + 1], alts[i : i + 1])).double() - before
                      for i in range(len(positions))]
        single = torch.cat(single).numpy()
        assert np.median(np.abs(single)) > 1e-4  # SNVs move the predictions well above float32 rounding (~1e-7)
        np.testing.assert_allclose(batched, single, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("window", [1024, 2048, 6144])
def test_splice_equals_full_forward_in_float64(window):
    """Spliced tower tokens give the whole-window scores to 1e-5 relative, SNVs at the window's ends included
    (1,024 bp is shorter than a 13-bin stretch: the whole window is recomputed; in 2,048 bp stretches meet the
    window's start, its end, or neither)."""
    reference = random_window(window)
    positions, alts = edge_snvs(reference)
    for model, _ in ism_models(window):
        model.module.double()
        full_before, full = score_window(model, reference, positions, alts, "full", batch=8)
        splice_before, splice = score_window(model, reference, positions, alts, "splice", batch=5)
        assert splice_before == pytest.approx(full_before, rel=1e-12)
        assert np.abs(full).min() > 1e-8
        np.testing.assert_allclose(splice, full, rtol=1e-5, atol=0)


def group_mtime(store: Path, gene: str, model: str) -> float:
    """Modification time of an ISM group's metadata (changes when the group is rewritten)."""
    return (store / "genes" / gene / schemas.ISM_GROUP / model / "zarr.json").stat().st_mtime_ns


def test_cli_writes_scores_aligned_with_the_variant_table(ism_store, ism_run, tmp_path):
    """`pstore ism --run`: the run's fold holds, per variant-table row, its ALT window's prediction minus the
    reference's (computed here from the row's POS and ALT letters), NaN outside the run's 2,048-bp window; a
    re-run skips; --exact-full scores again with the same values; base Enformer fills every fold."""
    store = tmp_path / "store.zarr"
    shutil.copytree(ism_store, store)
    output = pstore("ism", "--store", str(store), "--run", str(ism_run), "--batch", "4", "--device", "cpu", "--quiet").output
    assert "with ismrun (splice, folds 1)" in output
    model = load_checkpoint(ism_run / "best.pt")[0].eval()
    offset = (STORE_WINDOW - RUN_WINDOW) // 2
    for gene in Store(store).genes.index:
        arrays, attrs = read_result(store, gene, "ismrun", schemas.ISM_GROUP)
        assert attrs["kind"] == "performer" and attrs["folds"] == [1] and attrs["method"] == {"1": "splice"}
        assert list(arrays["status"]) == ["not run", "ok", "not run"]
        group = Store(store).gene(gene)
        crop = torch.from_numpy(group["reference_onehot"][offset : offset + RUN_WINDOW].astype(np.float32))
        index = group["variant_position"][:] - 1 - group.attrs["window_start"] - offset
        inside = np.flatnonzero((index >= 0) & (index < RUN_WINDOW))
        windows = crop.repeat(len(inside), 1, 1)
        for window, row in zip(windows, inside):
            window[index[row]] = torch.eye(4)["ACGT".index(str(group["variant_allele"][row, 1]))]
        expected = np.full(len(index), np.nan)
        with torch.no_grad():
            before = model(crop[None]).item()
            expected[inside] = model(windows).numpy() - before
        assert np.isnan(expected).any() and np.isfinite(expected).sum() >= 10
        assert arrays["ism_reference"][1] == pytest.approx(before, rel=1e-5)
        np.testing.assert_allclose(arrays["ism_score"][1], expected, rtol=1e-3, atol=1e-6)
        assert np.isnan(arrays["ism_score"][[0, 2]]).all()
    gene = Store(store).genes.index[0]
    before = group_mtime(store, gene, "ismrun")
    again = pstore("ism", "--store", str(store), "--run", str(ism_run), "--device", "cpu", "--quiet").output
    assert "scored 0 SNVs of 0 genes" in again and "2 genes already complete" in again
    assert group_mtime(store, gene, "ismrun") == before
    splice = read_result(store, gene, "ismrun", schemas.ISM_GROUP)[0]["ism_score"]
    pstore("ism", "--store", str(store), "--run", str(ism_run), "--gene", gene, "--exact-full", "--device", "cpu", "--quiet")
    full, attrs = read_result(store, gene, "ismrun", schemas.ISM_GROUP)
    assert attrs["method"] == {"1": "full"}
    np.testing.assert_allclose(full["ism_score"], splice, rtol=1e-3, atol=1e-6)
    pstore("ism", "--store", str(store), "--base", "--config", "tiny", "--window", str(RUN_WINDOW), "--gene", gene, "--device", "cpu", "--quiet")
    base, attrs = read_result(store, gene, "enformer", schemas.ISM_GROUP)
    assert attrs["kind"] == "enformer" and attrs["track"] == 4950 and attrs["method"] == {str(f): "splice" for f in range(3)}
    assert list(base["status"]) == ["ok"] * 3 and np.isfinite(base["ism_score"][0]).sum() >= 5
    np.testing.assert_array_equal(base["ism_score"], np.repeat(base["ism_score"][:1], 3, axis=0))
    assert validate_store(store) == []


def test_scores_are_redone_for_another_run_or_a_new_save_and_kept_for_the_run_that_trained(ism_store, tmp_path):
    """Single-gene runs sharing a name: one scoring every gene is refused where the other trained, and that
    gene's scores stay the other run's; a copy of a run is refused under the name it copied while the original
    is there, and with that --name given, or a run whose best.pt was saved again, scores anew instead of taking
    the stored scores as its own."""
    store = tmp_path / "store.zarr"
    shutil.copytree(ism_store, store)
    first, second = Store(store).genes.index
    runs = {gene: save_run(tmp_path / gene, store, genes=[gene], name="shared") for gene in (first, second)}
    ism = ("ism", "--store", str(store), "--device", "cpu", "--quiet", "--run")
    pstore(*ism, str(runs[first]), "--gene", first)
    refused = pstore(*ism, str(runs[second]), expect=1).output
    assert f"gene {first} fold 1 holds result 'shared' of run {runs[first].resolve()}, which trained on it" in refused
    attrs = read_result(store, first, "shared", schemas.ISM_GROUP)[1]
    assert attrs["runs"] == {"1": str(runs[first].resolve())} and attrs["settings"] == {"1": "HOP"}
    assert read_result(store, second, "shared", schemas.ISM_GROUP) is None
    copy = tmp_path / "copy"
    shutil.copytree(runs[first], copy)
    assert "records the same results name (a copy of it?)" in pstore(*ism, str(copy), "--gene", first, expect=1).output
    assert "scored 11 SNVs of 1 genes" in pstore(*ism, str(copy), "--gene", first, "--name", "shared").output
    assert read_result(store, first, "shared", schemas.ISM_GROUP)[1]["runs"] == {"1": str(copy.resolve())}
    assert "1 genes already complete" in pstore(*ism, str(copy), "--gene", first, "--name", "shared").output
    saved = (copy / "best.pt").stat()
    os.utime(copy / "best.pt", ns=(saved.st_atime_ns, saved.st_mtime_ns + 10**9))  # as resumed training's new best would
    assert "scored 11 SNVs of 1 genes" in pstore(*ism, str(copy), "--gene", first, "--name", "shared").output


def test_a_run_of_another_store_never_replaces_a_run_that_trained_here(ism_store, tmp_path):
    """A run trained on the same gene in another store is cross-cohort here: it may not replace, under the same
    name, the scores of the run that trained on the gene in this store, and its own scores say cross-cohort."""
    store = tmp_path / "store.zarr"
    shutil.copytree(ism_store, store)
    first, second = Store(store).genes.index
    local = save_run(tmp_path / "local", store, genes=[first], name="shared")
    other = save_run(tmp_path / "other", store, genes=[first, second], name="shared", store="cohort:" + "0" * 32)
    ism = ("ism", "--store", str(store), "--device", "cpu", "--quiet", "--run")
    pstore(*ism, str(local), "--gene", first)
    refused = pstore(*ism, str(other), "--gene", first, expect=1).output
    assert f"gene {first} fold 1 holds result 'shared' of run {local.resolve()}, which trained on it" in refused
    assert read_result(store, first, "shared", schemas.ISM_GROUP)[1]["runs"] == {"1": str(local.resolve())}
    pstore(*ism, str(other), "--gene", second)
    assert read_result(store, second, "shared", schemas.ISM_GROUP)[1]["settings"] == {"1": "cross-cohort"}


def test_score_positions_follow_the_loader_crop(ism_store, ism_run):
    """gene_snvs crops the reference as the loader does and places each variant inside that crop."""
    reader = GeneReader(ism_store, RUN_WINDOW)
    gene = Store(ism_store).genes.index[0]
    reference, offsets, alts = gene_snvs(reader, gene)
    np.testing.assert_array_equal(reference, reader.compact(gene)[0].numpy())
    inside = (offsets >= 0) & (offsets < RUN_WINDOW)
    assert (reference[offsets[inside], alts[inside]] == 0).all()  # the ALT is never the reference base


@pytest.mark.parametrize("case, message", [
    ("missing run", "best.pt: no such file"),
    ("unknown gene", "no complete gene ENSG_NOPE"),
    ("wide run", "reads 8192 bp windows"),
    ("bf16 on cpu", "--bf16: bf16 autocast runs on CUDA only"),
    ("base window", "window 1000 bp: Enformer needs a multiple of 256 bp"),
])
def test_bad_inputs_give_one_line_and_write_nothing(ism_store, ism_run, tmp_path, case, message):
    store = tmp_path / "store.zarr"
    shutil.copytree(ism_store, store)
    args = {"missing run": lambda: ["--run", str(tmp_path / "nope")],
            "unknown gene": lambda: ["--run", str(ism_run), "--gene", "ENSG_NOPE"],
            "wide run": lambda: ["--run", str(save_run(tmp_path / "wide", store, window=8192))],
            "bf16 on cpu": lambda: ["--run", str(ism_run), "--bf16"],
            "base window": lambda: ["--base", "--config", "tiny", "--window", "1000"]}[case]()
    output = pstore("ism", "--store", str(store), *args, "--device", "cpu", "--quiet", expect=1).output
    assert output.startswith("Error: ") and output.count("\n") == 1 and message in output
    assert not list(store.glob(f"genes/*/{schemas.ISM_GROUP}"))


def test_run_or_base_is_required(ism_store):
    assert "give --run RUN or --base" in pstore("ism", "--store", str(ism_store), expect=2).output


def test_checkpoint_meta_is_what_performer_model_reads(ism_store, ism_run):
    """The run's name, fold and window come from its checkpoint's metadata."""
    model = performer_model(ism_run, Store(ism_store))
    meta = json.loads(torch.load(ism_run / "best.pt", weights_only=True)["meta"])
    assert (model.name, model.folds, model.window) == (meta["name"], (meta["fold"],), meta["window"])
    base = enformer_model(Store(ism_store), None, "tiny", None, None)
    assert (base.name, base.folds, base.window, base.attrs["track"]) == ("enformer", (0, 1, 2), STORE_WINDOW, 4950)
