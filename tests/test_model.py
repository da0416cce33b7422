"""Performer construction, the centre-bin readout, BatchNorm freezing, and offline weight loading."""

from __future__ import annotations

import pytest
import torch
from enformer_pytorch.modeling_enformer import Attention
from safetensors.torch import save_file

from performer_store.inputs import InputError
from performer_store.model import (
    Performer,
    build_readout,
    cage_prediction,
    check_window,
    enformer_from_config,
    enformer_from_weights,
    load_checkpoint,
    save_checkpoint,
)


def test_prediction_is_the_centre_bin():
    """Performer's output is the head's value at bin window // 128 // 2 of the untruncated track."""
    model = Performer(enformer_from_config("tiny")).eval()
    x = torch.rand(3, 2048, 4)
    with torch.no_grad():
        tracks = model.net(x)
        assert tracks.shape == (3, 16, 1)
        torch.testing.assert_close(model(x), tracks[:, 8, 0])


def test_batchnorm_is_frozen_and_everything_else_trains():
    """After an optimizer step, BatchNorm weights and running statistics are unchanged; other weights moved."""
    model = Performer(enformer_from_config("tiny"))
    model.train()
    norms = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)}
    before = {n: (m.weight.clone(), m.running_mean.clone()) for n, m in norms.items()}
    conv_before = model.enformer.stem[0].weight.clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(torch.rand(4, 1024, 4)).sum().backward()
    optimizer.step()
    assert norms and all(torch.equal(m.weight, before[n][0]) and torch.equal(m.running_mean, before[n][1]) for n, m in norms.items())
    assert not any(p.requires_grad for m in norms.values() for p in m.parameters())
    assert not torch.equal(model.enformer.stem[0].weight, conv_before)
    assert not any(m.use_tf_gamma for m in model.modules() if isinstance(m, Attention))


def test_cage_prediction_sums_three_centre_bins():
    """Base Enformer: one human track summed over bins centre-1..centre+1."""
    enformer = enformer_from_config("tiny").eval()
    x = torch.rand(2, 2048, 4)
    with torch.no_grad():
        human = enformer(x, head="human")
        torch.testing.assert_close(cage_prediction(enformer, x, 4950), human[:, 7:10, 4950].sum(dim=1))


def test_weights_load_from_directory_and_files(tmp_path):
    """A saved pretrained directory, a .safetensors file and a torch state dict all load the same tensors."""
    source = enformer_from_config("tiny", seed=3)
    source.save_pretrained(tmp_path / "hub", safe_serialization=False)  # pytorch_model.bin, as the official upload
    state = {k: v.contiguous() for k, v in source.state_dict().items() if not k.startswith("_trunk.")}  # no aliases
    save_file(state, tmp_path / "weights.safetensors")
    torch.save(state, tmp_path / "weights.pt")
    loaded = enformer_from_weights(tmp_path / "hub")
    for name, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    # single files carry no config: they are the published (full) architecture, so tiny tensors do not fit
    for path in (tmp_path / "weights.safetensors", tmp_path / "weights.pt"):
        with pytest.raises(InputError, match="tensors do not fit the model"):
            enformer_from_weights(path)


def test_full_size_state_dict_file_loads(tmp_path):
    """A full-architecture state dict file (as converted from the official weights) loads strictly."""
    from enformer_pytorch import Enformer

    full = Enformer.from_hparams(target_length=-1)
    torch.save(full.state_dict(), tmp_path / "full.pt")
    loaded = enformer_from_weights(tmp_path / "full.pt")
    name = "transformer.0.0.fn.1.to_q.weight"
    assert torch.equal(loaded.state_dict()[name], full.state_dict()[name])


def test_weight_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        enformer_from_weights(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="needs config.json"):
        enformer_from_weights(tmp_path / "empty")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable state dict"):
        enformer_from_weights(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="multiple of 256"):
        check_window(1000)


def test_checkpoint_round_trip(tmp_path):
    """A checkpoint restores weights and metadata without unpickling code."""
    model = Performer(enformer_from_config("tiny", seed=5))
    save_checkpoint(tmp_path / "best.pt", model, {"genes": ["G"], "fold": 1, "window": 1024})
    loaded, meta, _ = load_checkpoint(tmp_path / "best.pt")
    assert meta == {"genes": ["G"], "fold": 1, "window": 1024}
    x = torch.rand(2, 1024, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


def test_transfer_mode_trains_the_linear_track_only():
    """`--mode transfer` on Enformer: after an optimizer step the whole trunk is unchanged, the track moved."""
    model = build_readout("enformer", enformer_from_config("tiny"), "transfer")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    assert not any(m.training for m in model.enformer.modules())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(torch.rand(4, 1024, 4)).sum().backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"net.to_tracks.0.weight", "net.to_tracks.0.bias"}


def test_weights_holding_pickled_objects_give_no_unsafe_advice(tmp_path):
    """A weights file with pickled objects is refused without torch's advice to re-run with weights_only=False."""
    import argparse

    torch.save({"state_dict": {}, "args": argparse.Namespace(x=1)}, tmp_path / "pickled.pt")
    with pytest.raises(InputError) as error:
        enformer_from_weights(tmp_path / "pickled.pt")
    message = str(error.value)
    assert "weights_only" not in message and "False" not in message and "\n" not in message
    assert "holds pickled objects, not only tensors (argparse.Namespace)" in message
