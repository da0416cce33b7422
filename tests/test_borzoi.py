"""Borzoi as a second backbone: window rules, centre readout, the two training modes, checkpoints, offline
weights, and `pstore train --backbone borzoi` + evaluate + ism end to end."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from borzoi_pytorch import Borzoi
from borzoi_pytorch.config_borzoi import BorzoiConfig
from safetensors.torch import save_file
from scipy.stats import pearsonr
from sklearn.metrics import r2_score

from conftest import pstore
from performer_store import schemas
from performer_store.borzoi import (CONFIGS, BorzoiReadout, _build, _fit_positions, borzoi_from_config, borzoi_from_weights,
                                    check_window)
from performer_store.inputs import InputError
from performer_store.ism import gene_snvs
from performer_store.loader import GeneReader, split_rows
from performer_store.model import build_readout, load_checkpoint, save_checkpoint
from performer_store.results import read_result
from performer_store.store import Store


def tiny(mode: str = "finetune", seed: int = 0) -> BorzoiReadout:
    """A tiny random Borzoi with its linear track."""
    return build_readout("borzoi", borzoi_from_config("tiny", seed), mode)


def library_embeddings(borzoi: Borzoi, x: torch.Tensor) -> torch.Tensor:
    """borzoi-pytorch's own path to the embeddings its heads read: (batch, features, bins) (relative positions
    cached for another window dropped first, as `BorzoiReadout` does)."""
    _fit_positions(borzoi, x.shape[1] // 128, x.device)
    return borzoi.final_joined_convs(borzoi.get_embs_after_crop(x.transpose(1, 2)))


def test_windows_must_be_multiples_of_128_bp():
    """The library itself fails on a multiple of 32 bp that is not one of 128 bp; check_window says so first."""
    borzoi = borzoi_from_config("tiny").eval()
    with torch.no_grad():
        for window in (1024 + 32, 1024 + 64, 1024 + 96):
            with pytest.raises(RuntimeError):
                library_embeddings(borzoi, torch.rand(1, window, 4))
            with pytest.raises(InputError, match="Borzoi needs a multiple of 128 bp"):
                check_window(window)
        for window in (128, 1152, 2048):
            check_window(window)
            assert library_embeddings(borzoi, torch.rand(1, window, 4)).shape == (1, 48, window // 32)


def test_prediction_is_the_centre_32bp_bin():
    """The track is read at bin window // 32 // 2 of the uncropped output, which is also the centre of the
    library's own symmetric crop; another window on the same model rebuilds the cached relative positions."""
    model = tiny().eval()
    x = torch.rand(3, 2048, 4)
    with torch.no_grad():
        embeddings = model.embeddings(x)
        assert embeddings.shape == (3, 64, 48)
        torch.testing.assert_close(model(x), model.to_tracks(embeddings[:, 32])[:, 0])
        model.borzoi.crop.target_length = 16  # borzoi-pytorch's crop to the centre bins
        cropped = library_embeddings(model.borzoi, x)
        model.borzoi.crop.target_length = -1
        torch.testing.assert_close(cropped[:, :, 8], embeddings[:, 32])
        assert model(torch.rand(2, 1024, 4)).shape == (2,)


def step(model: BorzoiReadout) -> dict[str, torch.Tensor]:
    """One AdamW step on a random batch in train mode; returns the state before it."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(torch.rand(4, 1024, 4)).sum().backward()
    optimizer.step()
    return before


def test_transfer_mode_trains_the_linear_track_only():
    model = tiny("transfer")
    before = step(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["to_tracks.weight", "to_tracks.bias"]
    assert not any(m.training for m in model.borzoi.modules())  # frozen trunk: eval mode, no dropout
    trunk = {k: v for k, v in model.state_dict().items() if k.startswith("borzoi.")}
    assert trunk and all(torch.equal(v, before[k]) for k, v in trunk.items())
    assert not torch.equal(model.to_tracks.weight, before["to_tracks.weight"])


def test_finetune_trains_everything_but_batchnorm():
    model = tiny("finetune")
    before = step(model)
    norms = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)}
    assert len(norms) == 11  # one per standard conv block: tower 5, U-net 5, embedding 1
    for name, value in model.state_dict().items():
        if name.rsplit(".", 1)[0] in norms:
            assert torch.equal(value, before[name]), name  # weights, biases and running statistics
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] not in norms}
    for name in ("borzoi.conv_dna.conv_layer.weight", "borzoi.res_tower.0.conv_layer.weight", "borzoi.transformer.0.1.fn.1.weight",
                 "borzoi.separable0.conv_layer.1.weight", "borzoi.final_joined_convs.0.conv_layer.weight", "to_tracks.weight"):
        assert not torch.equal(model.state_dict()[name], before[name]), name
    assert all(m.training != isinstance(m, torch.nn.BatchNorm1d) for m in model.borzoi.modules() if list(m.parameters(recurse=False)))


@pytest.mark.parametrize("mode", ["finetune", "transfer"])
def test_checkpoint_round_trip_keeps_backbone_and_mode(tmp_path, mode):
    model = tiny(mode, seed=4)
    step(model)
    save_checkpoint(tmp_path / "best.pt", model, {"fold": 1})
    loaded, meta, payload = load_checkpoint(tmp_path / "best.pt")
    assert isinstance(loaded, BorzoiReadout) and loaded.mode == mode and meta == {"fold": 1}
    assert payload["backbone"] == "borzoi" and json.loads(payload["trunk_config"])["tower_widths"] == CONFIGS["tiny"]["tower_widths"]
    assert any(p.requires_grad for p in loaded.borzoi.parameters()) == (mode == "finetune")
    x = torch.rand(2, 1024, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


def pretrained(seed: int, **overrides) -> Borzoi:
    """A tiny 'pretrained' Borzoi as save_pretrained writes it (headless: a published head reads 1,920 features)."""
    torch.manual_seed(seed)
    return _build(BorzoiConfig(**{**CONFIGS["tiny"], **overrides}, enable_human_head=False))


def test_weights_load_from_a_saved_directory(tmp_path):
    """save_pretrained's directory (config.json + model.safetensors) loads every tensor, heads dropped."""
    source = pretrained(3)
    source.save_pretrained(tmp_path / "hub")
    loaded = borzoi_from_weights(tmp_path / "hub")
    assert loaded.state_dict().keys() == source.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())
    x = torch.rand(1, 1024, 4)
    source.crop.target_length = -1  # the published crop keeps 6,144 bins: longer than this window
    with torch.no_grad():
        torch.testing.assert_close(library_embeddings(loaded.eval(), x), library_embeddings(source.eval(), x))


def test_weight_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        borzoi_from_weights(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="needs config.json"):
        borzoi_from_weights(tmp_path / "empty")
    other = tmp_path / "other"  # config.json of one width, tensors of another
    pretrained(0).save_pretrained(other)
    pretrained(0, embedding_width=64).save_pretrained(tmp_path / "wider")
    shutil.copy(tmp_path / "wider" / "model.safetensors", other / "model.safetensors")
    with pytest.raises(InputError, match=r"0 missing, 0 unexpected, 2 of another shape, e.g. final_joined_convs.0.conv_layer"):
        borzoi_from_weights(other)
    state = {k: v.contiguous() for k, v in pretrained(0).state_dict().items()}
    save_file(state, tmp_path / "tiny.safetensors")  # a single file is the published architecture: tiny does not fit
    with pytest.raises(InputError, match="tensors do not fit the model"):
        borzoi_from_weights(tmp_path / "tiny.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable state dict"):
        borzoi_from_weights(tmp_path / "junk.pt")
    flash = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**flash, "flashed": True}))
    with pytest.raises(InputError, match="needs flash-attn and CUDA"):
        borzoi_from_weights(other)
    with pytest.raises(InputError, match="'small' is not one of tiny, full for Borzoi"):
        borzoi_from_config("small")


@pytest.mark.filterwarnings("ignore::scipy.stats.NearConstantInputWarning")  # early predictions vary little
def test_train_evaluate_and_ism_from_the_cli(sim_store, tmp_path):
    """`pstore train --backbone borzoi` in both modes, then evaluate (metrics = scipy/sklearn on the stored
    predictions, predictions = the checkpoint's forward pass) and ISM (= ALT minus REF forward passes)."""
    store_path = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store_path)
    store = Store(store_path)
    gene = store.genes.index[0]
    common = ["--store", str(store_path), "--gene", gene, "--fold", "0", "--backbone", "borzoi", "--config", "tiny",
              "--micro-batch", "8", "--accumulation", "2", "--max-epochs", "2", "--device", "cpu", "--quiet"]
    for mode in ("finetune", "transfer"):
        pstore("train", *common, "--mode", mode, "--out", str(tmp_path / mode), "--lr", "1e-3")
        output = pstore("evaluate", "--store", str(store_path), "--run", str(tmp_path / mode), "--gene", gene, "--device", "cpu").output
        assert "HOP: 1 genes" in output
        model, meta, _ = load_checkpoint(tmp_path / mode / "best.pt")
        assert (model.mode, meta["backbone"], meta["mode"]) == (mode, "borzoi", mode)
        arrays, attrs = read_result(store_path, gene, mode)
        assert attrs["kind"] == "performer" and list(arrays["status"]) == ["ok", "not run", "not run"]
        test = split_rows(store, gene, 0, "test")
        group = store.gene(gene)  # dosage one-hot = reference + stored delta (exact in float16)
        onehots = torch.from_numpy((group["reference_onehot"][:] + group["dosage_onehot_delta"][:][test]).astype(np.float32))
        with torch.no_grad():
            np.testing.assert_allclose(arrays["prediction"][0, test], model.eval()(onehots).numpy(), rtol=1e-5, atol=1e-6)
        target, prediction = store.gene(gene)["target"][:][test].astype(np.float64), arrays["prediction"][0, test].astype(np.float64)
        assert arrays["r2"][0] == pytest.approx(r2_score(target, prediction), abs=1e-6)
        assert arrays["pearson_r"][0] == pytest.approx(pearsonr(prediction, target).statistic, abs=1e-5)
    assert "the conv-tower splice is Enformer's; give --exact-full" in pstore(
        "ism", "--store", str(store_path), "--run", str(tmp_path / "transfer"), "--gene", gene, "--device", "cpu", expect=1).output
    pstore("ism", "--store", str(store_path), "--run", str(tmp_path / "transfer"), "--gene", gene, "--exact-full", "--device", "cpu", "--quiet")
    scores = read_result(store_path, gene, "transfer", schemas.ISM_GROUP)[0]["ism_score"][0]
    reference, offsets, alts = gene_snvs(GeneReader(store_path, store.window), gene)
    chosen = np.flatnonzero((offsets >= 0) & (offsets < store.window))[:3]
    windows = np.repeat(reference[None].astype(np.float32), len(chosen) + 1, axis=0)
    windows[np.arange(1, len(chosen) + 1), offsets[chosen]] = np.eye(4, dtype=np.float32)[alts[chosen]]
    model = load_checkpoint(tmp_path / "transfer" / "best.pt")[0].eval()
    with torch.no_grad():
        direct = model(torch.from_numpy(windows)).double().numpy()
    np.testing.assert_allclose(scores[chosen], direct[1:] - direct[0], rtol=1e-4, atol=1e-6)


def test_resume_refuses_another_backbone_or_mode(sim_store, tmp_path):
    gene = Store(sim_store).genes.index[0]
    args = ["train", "--store", str(sim_store), "--gene", gene, "--fold", "0", "--out", str(tmp_path / "run"), "--config", "tiny",
            "--micro-batch", "8", "--max-epochs", "1", "--device", "cpu", "--quiet"]
    pstore(*args, "--backbone", "borzoi", "--mode", "transfer")
    assert "was made with mode 'transfer', this run asks 'finetune'" in pstore(*args, "--backbone", "borzoi", "--resume", expect=1).output
    assert "was made with backbone 'borzoi', this run asks 'enformer'" in pstore(*args, "--mode", "transfer", "--resume", expect=1).output
    assert "Borzoi needs a multiple of 128 bp" in pstore(*args, "--backbone", "borzoi", "--window", "960", "--out", str(tmp_path / "w"), expect=1).output


def test_pipeline_trains_a_borzoi_run_into_compare_and_report(sim_store, tmp_path):
    """`pstore run` with `backbone = "borzoi"`: runs named borzoi_<mode>, evaluated, ISM by whole windows, and
    listed by `pstore compare` and the report like any run; base Enformer must be switched off."""
    store_path = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store_path)
    gene = Store(store_path).genes.index[0]
    config = tmp_path / "config.toml"
    text = f"""store = "store.zarr"
out = "out"
[inputs]
fasta = "none.fa"
vcf = "none.vcf.gz"
gtf = "none.gtf.gz"
expression = "none.bed.gz"
tissue = "whole_blood"
[enet]
genes = ["{gene}"]
folds = [0]
[train]
config = "tiny"
backbone = "borzoi"
mode = "transfer"
genes = ["{gene}"]
max_epochs = 2
micro_batch = 8
device = "cpu"
[ism]
batch = 16
"""
    config.write_text(text)
    assert "[evaluate] base = true scores base Enformer" in pstore("run", str(config), expect=1).output
    config.write_text(text + "[evaluate]\nbase = false\n")
    pstore("run", str(config), "--steps", "enet,train,evaluate,ism,report")
    run = tmp_path / "out" / "runs" / f"borzoi_transfer_{gene}_fold0"
    assert json.loads((run / "run.json").read_text())["config"]["lr"] is None  # the mode's default, 1e-3
    assert read_result(store_path, gene, "borzoi_transfer")[1]["runs"] == {"0": str(run.resolve())}
    assert read_result(store_path, gene, "borzoi_transfer", schemas.ISM_GROUP)[1]["method"] == {"0": "full"}
    compared = pstore("compare", "--store", str(store_path)).output
    assert "borzoi_transfer_r2" in compared and re.search(r"\n\s*borzoi_transfer\s+performer\s+this store\s+1\s", compared)  # table, summary
    assert "borzoi_transfer" in (tmp_path / "out" / "report" / "index.html").read_text()
