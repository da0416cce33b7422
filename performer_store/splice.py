"""The conv-tower splice: Enformer's predictions for many SNVs of one window, recomputing the conv tower only
near each SNV.

Enformer's trunk is a stem and a conv tower (7 poolings by 2: one token per 128 bp) followed by a transformer
over all tokens. A tower token depends on the bases of its own 128-bp bin and on `reach` bp on each side: the
sum over the convolutions of kernel // 2 times the resolution each runs at, 7 x 1 + 2 x (2 + 4 + ... + 64) =
259 bp for enformer-pytorch 0.8.12 (`tower_reach`). So an SNV changes only the tokens within
`margin = ceil(reach / 128)` = 3 bins of its own, and those are exact when recomputed on a stretch of the window
reaching `margin` more bins on each side: convolutions zero-pad at a stretch's edges, which only matters for
tokens whose receptive field crosses an edge (unless that edge is the window's own, padded the same way). Per
SNV the tower runs on 4 x margin + 1 = 13 bins (1,664 bp) instead of the whole window; the recomputed tokens
replace those of the reference window (computed once) and the transformer and heads run as usual.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from enformer_pytorch import Enformer
from enformer_pytorch.modeling_enformer import AttentionPool
from torch import nn


def tower_reach(enformer: Enformer) -> tuple[int, int]:
    """(bp per tower token, bp a token's receptive field reaches beyond its own bin on each side)."""
    resolution, reach = 1, 0
    for module in [*enformer.stem.modules(), *enformer.conv_tower.modules()]:  # in the order they run
        if isinstance(module, nn.Conv1d):
            assert module.stride == (1,) and module.dilation == (1,) and module.padding == (module.kernel_size[0] // 2,)
            reach += module.kernel_size[0] // 2 * resolution
        elif isinstance(module, AttentionPool):
            resolution *= module.pool_size
    return resolution, reach


def split_trunk(enformer: Enformer) -> tuple[nn.Sequential, nn.Sequential]:
    """Enformer's trunk cut after the conv tower: (batch, length, 4) one-hots -> (batch, tokens, channels)
    tower tokens, and tower tokens -> (batch, bins, features) embeddings (transformer, crop, final pointwise)."""
    cut = list(enformer._trunk).index(enformer.conv_tower) + 2  # the tower and the rearrange back to tokens-first
    return enformer._trunk[:cut], enformer._trunk[cut:]


def substitute(windows: torch.Tensor, positions: torch.Tensor, alts: torch.Tensor) -> torch.Tensor:
    """Copies of one-hot windows (batch, length, 4) with base `alts[i]` (0-3, ACGT) at `positions[i]` of window i."""
    out = windows.clone()
    out[torch.arange(len(positions), device=out.device), positions] = F.one_hot(alts, 4).to(out.dtype)
    return out


class FullForward:
    """ALT windows predicted by plain batched forward passes of the whole window (the reference method), for any
    backbone: `embed` maps (batch, window, 4) one-hots to (batch, bins, features) embeddings."""

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor], reference: torch.Tensor):
        self.embed = embed
        self.reference = reference

    def reference_embeddings(self) -> torch.Tensor:
        """(1, bins, features) embeddings of the reference window."""
        return self.embed(self.reference[None])

    def embeddings(self, positions: torch.Tensor, alts: torch.Tensor) -> torch.Tensor:
        """(batch, bins, features) embeddings of the reference window with each SNV's ALT base."""
        windows = substitute(self.reference.expand(len(positions), -1, -1), positions, alts)
        return self.embed(windows)


class TowerSplice:
    """ALT windows predicted with the conv tower recomputed on a short stretch around each SNV (see the module)."""

    def __init__(self, enformer: Enformer, reference: torch.Tensor):
        self.to_tokens, self.from_tokens = split_trunk(enformer)
        self.bin_size, reach = tower_reach(enformer)
        self.margin = math.ceil(reach / self.bin_size)
        self.reference = reference
        self.tokens = self.to_tokens(reference[None])  # (1, tokens, channels), computed once
        self.span = min(4 * self.margin + 1, self.tokens.shape[1])  # bins per recomputed stretch

    def reference_embeddings(self) -> torch.Tensor:
        """(1, bins, features) embeddings of the reference window."""
        return self.from_tokens(self.tokens)

    def embeddings(self, positions: torch.Tensor, alts: torch.Tensor) -> torch.Tensor:
        """(batch, bins, features) embeddings of the reference window with each SNV's ALT base."""
        n_tokens, device = self.tokens.shape[1], positions.device
        start = (positions // self.bin_size - 2 * self.margin).clamp(0, n_tokens - self.span)  # first bin of each stretch
        bases = start[:, None] * self.bin_size + torch.arange(self.span * self.bin_size, device=device)
        stretches = substitute(self.reference[bases], positions - start * self.bin_size, alts)
        fresh = self.to_tokens(stretches)  # (batch, span, channels)
        local = torch.arange(self.span, device=device)
        exact = (((local >= self.margin) | (start[:, None] == 0))  # receptive field inside the stretch, or padded
                 & ((local < self.span - self.margin) | (start[:, None] + self.span == n_tokens)))  # like the window's
        tokens = self.tokens.expand(len(positions), -1, -1).clone()
        rows = torch.arange(len(positions), device=device)[:, None].expand_as(exact)
        tokens[rows[exact], (start[:, None] + local)[exact]] = fresh[exact]
        return self.from_tokens(tokens)
