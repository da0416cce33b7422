"""Borzoi (borzoi-pytorch) as a second backbone: construction, offline weights, the one-track readout.

Borzoi's trunk is a conv tower with 7 poolings by 2 (a transformer over one token per 128 bp) and a U-net that
upsamples twice back to one output bin per 32 bp; its embeddings are the output of `final_joined_convs` (1,920
features per bin, what its own RNA-seq/CAGE heads read). The readout is one linear track on them at the centre
bin, window // 32 // 2, with no crop (Borzoi's own crop to the centre 6,144 bins is symmetric, so the centre
bin is the same). Windows must be a multiple of 128 bp: every pooling must halve exactly and each upsampled
map must meet its skip connection at the same length. The published input is 524,288 bp (16,384 bins); any
shorter multiple of 128 bp runs, the relative positions keeping their published scale. The human and mouse
heads are dropped (unused, and DDP refuses parameters without gradients). BatchNorms follow Enformer's rule:
frozen in eval mode, everything else trains (mode `finetune`), or the whole trunk is frozen (`transfer`).

`tiny` is a random Borzoi small enough for CPU tests and the demo: borzoi-pytorch hard-codes the conv widths,
so they are recorded in the config (`tower_widths`, `embedding_width`) and the conv layers rebuilt narrower
with the library's own blocks; the published architecture is `full` (use --weights for its weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from borzoi_pytorch import Borzoi
from borzoi_pytorch.config_borzoi import BorzoiConfig
from borzoi_pytorch.pytorch_borzoi_model import ConvBlock
from borzoi_pytorch.pytorch_borzoi_transformer import Attention
from enformer_pytorch.finetune import freeze_batchnorms_
from torch import nn

from .inputs import InputError
from .model import WEIGHT_FILES, Backbone, Readout, load_state, read_state_dict

WINDOW_MULTIPLE = 128  # 7 poolings by 2
CONFIGS: dict[str, dict[str, Any]] = {
    # dim and heads of the transformer, and the conv widths (stem, 5 tower blocks, embeddings) rebuilt narrower
    "tiny": dict(dim=32, depth=1, heads=2, attn_dim_key=8, attn_dim_value=16, dropout_rate=0.0, attn_dropout=0.0,
                 pos_dropout=0.0, tower_widths=[16, 16, 24, 24, 32, 32], embedding_width=48),
    "full": dict(),  # the published architecture: dim 1536, depth 8, heads 8, 1,920 embedding features
}


def check_window(window: int) -> None:
    """Borzoi pools 7 times by 2 and upsamples twice into skip connections: windows are multiples of 128 bp."""
    if window <= 0 or window % WINDOW_MULTIPLE:
        raise InputError(f"window {window} bp: Borzoi needs a multiple of {WINDOW_MULTIPLE} bp (e.g. 6144, 49152 or its published 524288)")


def _narrow(borzoi: Borzoi, tower: list[int], embedding: int) -> None:
    """Rebuild the conv layers whose widths borzoi-pytorch hard-codes: stem, tower, skip and embedding convs."""
    dim = borzoi.config.dim
    borzoi.conv_dna.conv_layer = nn.Conv1d(4, tower[0], kernel_size=15, padding="same")
    for index, width_in, width_out in zip(range(0, len(borzoi.res_tower), 2), tower, tower[1:]):  # pools between
        borzoi.res_tower[index] = ConvBlock(width_in, width_out, kernel_size=5)
    borzoi.unet1[1] = ConvBlock(tower[-1], dim, kernel_size=5)
    borzoi.horizontal_conv0 = ConvBlock(tower[-1], dim, kernel_size=1)
    borzoi.final_joined_convs[0] = ConvBlock(dim, embedding, kernel_size=1)


def _build(config: BorzoiConfig) -> Borzoi:
    """A random-init Borzoi of a config, its conv layers narrowed when the config records widths."""
    borzoi = Borzoi(config)
    if getattr(config, "tower_widths", None):
        _narrow(borzoi, list(config.tower_widths), config.embedding_width)
    return borzoi


def _prepare(borzoi: Borzoi) -> Borzoi:
    """No crop, no output heads (the config then rebuilds it headless), BatchNorms frozen."""
    for head in ("human_head", "mouse_head"):
        if hasattr(borzoi, head):
            delattr(borzoi, head)
    borzoi.config.enable_human_head = borzoi.config.enable_mouse_head = False
    borzoi.crop.target_length = -1
    freeze_batchnorms_(borzoi)
    return borzoi


def _headless(config: dict[str, Any]) -> BorzoiConfig:
    """A BorzoiConfig that builds no output heads (they would be dropped anyway)."""
    return BorzoiConfig.from_dict({**config, "enable_human_head": False, "enable_mouse_head": False})


def check_config(name: str) -> None:
    """A named random-init Borzoi size, or a one-line error."""
    if name not in CONFIGS:
        raise InputError(f"config {name!r} is not one of {', '.join(CONFIGS)} for Borzoi")


def borzoi_from_config(name: str, seed: int = 0) -> Borzoi:
    """A randomly initialized Borzoi of a named size (for tests, the demo, or training from scratch)."""
    check_config(name)
    torch.manual_seed(seed)
    return _prepare(_build(_headless(CONFIGS[name])))


def borzoi_from_saved(config: dict[str, Any]) -> Borzoi:
    """A Borzoi of a checkpoint's recorded config (weights follow)."""
    return _prepare(_build(_headless(config)))


def borzoi_from_weights(path: Path) -> Borzoi:
    """Pretrained Borzoi from a local directory (config.json + model.safetensors/pytorch_model.bin, as a copy of
    johahi/borzoi-replicate-0) or a single state-dict file of the published architecture (.safetensors, or
    .pt/.bin read with weights_only). Tensors must fit exactly (heads included); flash-attention variants
    (Flashzoi) need flash-attn and CUDA and are refused."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file() or not any((path / f).is_file() for f in WEIGHT_FILES):
            raise InputError(f"weights {path}: a weights directory needs config.json and one of {', '.join(WEIGHT_FILES)} (e.g. a copy of johahi/borzoi-replicate-0)")
        config = BorzoiConfig.from_pretrained(str(path), local_files_only=True)
        if getattr(config, "flashed", False):
            raise InputError(f"weights {path}: a flash-attention Borzoi (flashed: true) needs flash-attn and CUDA; use a borzoi-replicate model")
        weights = next(path / f for f in WEIGHT_FILES if (path / f).is_file())
    elif path.is_file():
        config, weights = BorzoiConfig(), path
    else:
        raise InputError(f"weights {path}: no such file or directory")
    borzoi = _build(config)
    load_state(borzoi, read_state_dict(weights), weights)
    return _prepare(borzoi)


def _fit_positions(borzoi: Borzoi, tokens: int, device: torch.device) -> None:
    """borzoi-pytorch caches each attention's relative positions (a plain attribute, not a buffer) for the first
    length and device it sees: drop caches made for another window or device so that they are rebuilt."""
    for module in borzoi.transformer.modules():
        cached = getattr(module, "positions", None) if isinstance(module, Attention) else None
        if cached is not None and (cached.shape[0] != 2 * tokens - 1 or cached.device != device):
            module.positions = None


class BorzoiReadout(Readout):
    """Borzoi with one linear output track on its embeddings; predicts expression from the centre 32-bp bin."""

    backbone = "borzoi"

    def __init__(self, borzoi: Borzoi):
        super().__init__()
        self.borzoi = borzoi
        self.to_tracks = nn.Linear(borzoi.final_joined_convs[0].conv_layer.out_channels, 1)

    @property
    def trunk(self) -> Borzoi:
        """Borzoi without its heads."""
        return self.borzoi

    @property
    def head(self) -> nn.Module:
        """The linear track."""
        return self.to_tracks

    def embeddings(self, onehot: torch.Tensor) -> torch.Tensor:
        """(batch, window, 4) one-hots -> (batch, window // 32, features) embeddings."""
        _fit_positions(self.borzoi, onehot.shape[1] // WINDOW_MULTIPLE, onehot.device)
        embeddings = self.borzoi.final_joined_convs(self.borzoi.get_embs_after_crop(onehot.transpose(1, 2)))
        return embeddings.transpose(1, 2)


BACKBONE = Backbone(check_window, check_config, borzoi_from_config, borzoi_from_weights, borzoi_from_saved, BorzoiReadout)
