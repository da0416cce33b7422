"""Backbones (a registry: Enformer here, Borzoi in `borzoi.py`), the one-track readout, checkpoints.

Every trained model is a `Readout`: a backbone's trunk (its embeddings, one per output bin), one linear track
on them, prediction = the track at the centre output bin (bins // 2). Two modes, as the method's paper uses
them: `finetune` trains every layer but BatchNorm (BatchNorms stay in eval mode with gradients off), `transfer`
freezes the whole trunk (no gradients, eval mode: no dropout, embeddings computed without autograd) and
trains the linear track only.

Performer = Enformer with its heads replaced by one linear track (enformer-pytorch's `HeadAdapterWrapper`,
num_tracks=1, post_transformer_embed=False, identity activation), no target-length crop, centre bin
window // 128 // 2. `use_tf_gamma` is off: TensorFlow's gamma positions exist only for 1,536 tokens.
"""

from __future__ import annotations

import importlib
import json
import pickle
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from enformer_pytorch import Enformer
from enformer_pytorch.finetune import HeadAdapterWrapper, freeze_batchnorms_
from enformer_pytorch.modeling_enformer import Attention
from torch import nn
from torch.utils.checkpoint import checkpoint

from .inputs import InputError
from .results import replace_atomically

BIN_SIZE = 128
CHECKPOINT_FORMAT = 1
CONFIGS: dict[str, dict[str, Any]] = {
    # dim // heads must be divisible by 6 (relative position features); small dim_divisible_by for small dims
    "tiny": dict(dim=48, depth=1, heads=2, attn_dim_key=8, dim_divisible_by=8, dropout_rate=0.0),
    "small": dict(dim=192, depth=2, heads=4, attn_dim_key=32, dim_divisible_by=16, dropout_rate=0.1),
    "full": dict(),  # the published architecture: dim 1536, depth 11, heads 8 (use --weights for its weights)
}
CAGE_TRACKS = {"whole_blood": 4950, "brain": 4980}  # CAGE:blood, adult, pool1 / CAGE:brain, adult
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MODES = {"finetune": 5e-6, "transfer": 1e-3}  # training mode -> its default learning rate (the method's)
BACKBONE_MODULES = {"enformer": __name__, "borzoi": "performer_store.borzoi"}  # each module defines BACKBONE

CONFIG_KEYS = ("dim", "depth", "heads", "output_heads", "target_length", "attn_dim_key", "dropout_rate", "attn_dropout",
               "pos_dropout", "use_checkpointing", "use_convnext", "num_downsamples", "dim_divisible_by", "use_tf_gamma")


def check_window(window: int) -> None:
    """Enformer pools 7 times by 2: windows must be a multiple of 128 bp with an even number of bins."""
    if window % (2 * BIN_SIZE):
        raise InputError(f"window {window} bp: Enformer needs a multiple of {2 * BIN_SIZE} bp (e.g. 6144 or 49152)")


def _plain_batchnorms(module: nn.Module) -> None:
    """Swap the SyncBatchNorms enformer-pytorch builds under torch.distributed for BatchNorm1d: frozen
    BatchNorms have nothing to synchronize, and SyncBatchNorm refuses to run on CPU (gloo)."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = nn.BatchNorm1d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain)
        else:
            _plain_batchnorms(child)


def _prepare(enformer: Enformer) -> Enformer:
    """No target-length crop, no TF gammas, BatchNorms plain and frozen (before DDP wrapping sees the parameters)."""
    _plain_batchnorms(enformer)
    enformer.set_target_length(-1)
    for module in enformer.modules():
        if isinstance(module, Attention):
            module.use_tf_gamma = False
    freeze_batchnorms_(enformer)
    return enformer


def check_config(name: str) -> None:
    """A named random-init Enformer size, or a one-line error."""
    if name not in CONFIGS:
        raise InputError(f"config {name!r} is not one of {', '.join(CONFIGS)}")


def enformer_from_config(name: str, seed: int = 0) -> Enformer:
    """A randomly initialized Enformer of a named size (for tests, the demo, or training from scratch)."""
    check_config(name)
    torch.manual_seed(seed)
    return _prepare(Enformer.from_hparams(**CONFIGS[name], target_length=-1, use_tf_gamma=False))


def enformer_from_weights(path: Path) -> Enformer:
    """Pretrained Enformer from a local directory (config.json + model.safetensors/pytorch_model.bin, as on
    the Hugging Face hub) or a single state-dict file (.safetensors, or .pt/.bin read with weights_only)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file() or not any((path / f).is_file() for f in WEIGHT_FILES):
            raise InputError(f"weights {path}: a weights directory needs config.json and one of {', '.join(WEIGHT_FILES)} (e.g. a copy of EleutherAI/enformer-official-rough)")
        try:
            enformer = Enformer.from_pretrained(str(path), local_files_only=True, use_tf_gamma=False, target_length=-1)
        except (OSError, ValueError, RuntimeError) as error:
            raise InputError(f"weights {path}: cannot be loaded ({load_failure(error)})") from None
        return _prepare(enformer)
    if not path.is_file():
        raise InputError(f"weights {path}: no such file or directory")
    enformer = Enformer.from_hparams(**CONFIGS["full"], target_length=-1, use_tf_gamma=False)
    load_state(enformer, read_state_dict(path), path)
    return _prepare(enformer)


def load_failure(error: BaseException) -> str:
    """A short reason why torch/safetensors could not read a file, without torch's advice to turn weights_only off
    (which would unpickle, i.e. run, code from the file: pstore never does)."""
    text = str(error)
    if "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        return f"it holds pickled objects, not only tensors{f' ({found.group(1)})' if found else ''}, and pstore unpickles no code"
    line = next((l.strip() for l in text.splitlines() if l.strip()), "") or type(error).__name__
    return line.split(". This is an internal")[0][:200]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch file read without unpickling code (weights_only)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise many types for unreadable files
        raise InputError(f"weights {path}: not a readable state dict ({load_failure(error)}); give .safetensors or a torch state dict") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load tensors strictly, explaining what does not fit."""
    own = module.state_dict()
    aliases: dict[int, list[str]] = {}  # Enformer registers each trunk tensor under two names (e.g. stem.*, _trunk.1.*)
    for key, tensor in own.items():
        aliases.setdefault(tensor.data_ptr(), []).append(key)
    missing = [names[0] for names in aliases.values() if not any(n in state for n in names)]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or misshapen:
        first = (misshapen or missing or unexpected)[0]
        raise InputError(
            f"weights {path}: tensors do not fit the model ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(misshapen)} of another shape, e.g. {first}); give weights of the same architecture"
        )
    module.load_state_dict(state, strict=False)  # complete up to aliases, checked above


class Readout(nn.Module):
    """A backbone's trunk with one linear track read at the centre output bin (see the module for the modes)."""

    backbone = ""

    def __init__(self):
        super().__init__()
        self.mode = "finetune"

    @property
    def trunk(self) -> nn.Module:
        """The backbone's network that makes the embeddings."""
        raise NotImplementedError

    @property
    def head(self) -> nn.Module:
        """The linear track: (..., features) -> (..., 1)."""
        raise NotImplementedError

    def embeddings(self, onehot: torch.Tensor) -> torch.Tensor:
        """(batch, window, 4) one-hots -> (batch, bins, features) trunk embeddings."""
        raise NotImplementedError

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        """(batch, window, 4) dosage one-hots -> (batch,) predictions at the centre bin."""
        with torch.no_grad() if self.mode == "transfer" else nullcontext():
            embeddings = self.embeddings(onehot.float())
        tracks = self.head(embeddings)
        return tracks[:, tracks.shape[1] // 2, 0]

    def freeze_trunk(self) -> "Readout":
        """Transfer mode: only the linear track trains."""
        self.mode = "transfer"
        self.trunk.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "Readout":
        """As nn.Module.train, but BatchNorms (and in transfer mode the whole trunk) stay in eval mode."""
        super().train(mode)
        for module in self.trunk.modules():
            if self.mode == "transfer" or isinstance(module, nn.BatchNorm1d):
                module.eval()
        return self


class Performer(Readout):
    """Enformer with one linear output track; predicts expression from the centre output bin."""

    backbone = "enformer"

    def __init__(self, enformer: Enformer):
        super().__init__()
        enformer.heads.requires_grad_(False)  # the human/mouse heads are not used (and DDP refuses unused parameters)
        self.net = HeadAdapterWrapper(enformer=enformer, num_tracks=1, post_transformer_embed=False,
                                      output_activation=nn.Identity(), auto_set_target_length=False)

    @property
    def enformer(self) -> Enformer:
        """The wrapped Enformer."""
        return self.net.enformer

    @property
    def trunk(self) -> Enformer:
        """Enformer (its final pointwise output is the embedding)."""
        return self.net.enformer

    @property
    def head(self) -> nn.Module:
        """The wrapper's linear track (identity activation)."""
        return self.net.to_tracks

    def embeddings(self, onehot: torch.Tensor) -> torch.Tensor:
        """Enformer's (batch, window // 128, 2 x dim) embeddings, as the wrapper computes them."""
        return self.net.enformer(onehot, return_only_embeddings=True)


class Recomputed(nn.Sequential):
    """A Sequential run as checkpoint segments (each child, or all as one) when gradients are on: training keeps
    only segment outputs and recomputes the rest in backward, so long windows fit for ~1.3x the compute."""

    def __init__(self, sequential: nn.Sequential, whole: bool):
        super().__init__(*sequential)  # same child names, so state-dict keys are unchanged
        self.whole = whole

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The children in order, through torch.utils.checkpoint while gradients are recorded."""
        if not torch.is_grad_enabled():
            return super().forward(x)
        if self.whole:
            return checkpoint(super().forward, x, use_reentrant=False)
        for child in self:
            x = checkpoint(child, x, use_reentrant=False)
        return x


def check_checkpointing(name: str, enabled: bool) -> None:
    """Gradient checkpointing (`recompute_activations`) is written for Enformer's trunk only."""
    if enabled and name != "enformer":
        raise InputError(f"--gradient-checkpointing is written for Enformer's trunk, not {name}; drop it or use --backbone enformer")


def recompute_activations(enformer: Enformer) -> None:
    """Gradient checkpointing of the stem (one segment), each conv-tower block and each transformer layer.
    (enformer-pytorch's own `use_checkpointing` covers the transformer only, where little memory goes.)"""
    for index, name, whole in ((1, "stem", True), (2, "conv_tower", False), (4, "transformer", False)):
        module = Recomputed(getattr(enformer, name), whole)
        setattr(enformer, name, module)
        enformer._trunk[index] = module  # the trunk holds the same modules; replace both references


def cage_prediction(enformer: Enformer, onehot: torch.Tensor, track: int) -> torch.Tensor:
    """Base Enformer's prediction: one human CAGE track summed over the 3 centre bins."""
    human = enformer(onehot.float(), head="human")
    centre = human.shape[1] // 2
    return human[:, centre - 1 : centre + 2, track].sum(dim=1)


def enformer_from_saved(config: dict[str, Any]) -> Enformer:
    """An Enformer of a checkpoint's recorded config (weights follow)."""
    return _prepare(Enformer.from_hparams(**{k: v for k, v in config.items() if k in CONFIG_KEYS}))


@dataclass(frozen=True)
class Backbone:
    """What training, evaluation and ISM need of a backbone, by name in `BACKBONE_MODULES`."""

    check_window: Callable[[int], None]  # one-line InputError for a window the architecture cannot read
    check_config: Callable[[str], None]  # one-line InputError for a name `from_config` does not know
    from_config: Callable[[str, int], nn.Module]  # (config name, seed) -> random-init trunk
    from_weights: Callable[[Path], nn.Module]  # local pretrained weights -> trunk
    from_saved: Callable[[dict[str, Any]], nn.Module]  # a checkpoint's trunk config -> trunk
    readout: Callable[[nn.Module], Readout]  # trunk -> the trainable one-track model


BACKBONE = Backbone(check_window, check_config, enformer_from_config, enformer_from_weights, enformer_from_saved, Performer)


def backbone(name: str) -> Backbone:
    """A registered backbone (its module is imported on first use)."""
    if name not in BACKBONE_MODULES:
        raise InputError(f"backbone {name!r} is not one of {', '.join(BACKBONE_MODULES)}")
    return importlib.import_module(BACKBONE_MODULES[name]).BACKBONE


def check_mode(mode: str) -> None:
    """A known training mode, or a one-line error."""
    if mode not in MODES:
        raise InputError(f"mode {mode!r} is not one of {', '.join(MODES)}")


def build_readout(name: str, trunk: nn.Module, mode: str) -> Readout:
    """A backbone's trainable model in a training mode (finetune or transfer)."""
    check_mode(mode)
    model = backbone(name).readout(trunk)
    return model.freeze_trunk() if mode == "transfer" else model


def save_checkpoint(path: Path, model: Readout, meta: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Weights, the backbone, its config and the mode, and run metadata in one torch file, written atomically."""
    payload = {"format": CHECKPOINT_FORMAT, "backbone": model.backbone, "mode": model.mode,
               "trunk_config": json.dumps(model.trunk.config.to_dict()), "meta": json.dumps(meta),
               "state_dict": model.state_dict(), **(extra or {})}
    replace_atomically(path, lambda temporary: torch.save(payload, temporary))


def load_checkpoint(path: Path) -> tuple[Readout, dict[str, Any], dict[str, Any]]:
    """A checkpoint (weights_only: no code is unpickled): model of its backbone and mode, metadata, the rest of
    the payload. Checkpoints from before Borzoi (no backbone recorded) are Enformer fine-tunes."""
    if not path.is_file():
        raise InputError(f"checkpoint {path}: no such file; train a run first (`pstore train`)")
    damaged = f"checkpoint {path} is damaged or not a pstore checkpoint ({{}}); retrain the run or restore the file"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, AttributeError, ValueError, OSError) as error:
        raise InputError(damaged.format(load_failure(error) if str(error) else "the file ends early or is empty")) from None
    if not isinstance(payload, dict):
        raise InputError(damaged.format(f"it holds a {type(payload).__name__}, not a checkpoint"))
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {path}: format {payload.get('format')}, expected {CHECKPOINT_FORMAT}; retrain with this pstore")
    try:
        name = payload.get("backbone", "enformer")
        config = json.loads(payload.get("trunk_config") or payload["enformer_config"])
        model = build_readout(name, backbone(name).from_saved(config), payload.get("mode", "finetune"))
        state, meta = payload["state_dict"], json.loads(payload["meta"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(damaged.format(f"{type(error).__name__}: {error}")) from None
    load_state(model, state, path)
    return model, meta, payload
