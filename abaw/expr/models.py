"""Expr models: per-frame classifiers over windows of per-frame backbone features.

`fusion` (the paper's Expr model, after Phan et al. 2022): the chosen backbones'
features for each frame are concatenated ("stitched"), or each first projected
to its own width and then concatenated, projected to width d, given sinusoidal
positions, passed through a transformer encoder over the window, and classified
frame by frame into the 8 classes. Padding positions are masked out of attention.
A single-backbone model is the same model with one backbone (the sweep's
`[data] backbones`), so the ablation differs in data, not in code.

Models are registered by name in `MODELS` (an `abaw.registry.Registry`, the same
shape as the ERI wing's); `build_model(name, cfg, dims)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from abaw import layers as L
from abaw.expr import NUM_CLASSES
from abaw.registry import Registry


@dataclass
class FusionConfig:
    """Transformer fusion over per-frame features; defaults = the paper's baseline (Phan et al.)."""

    fuse: Literal["concat", "project"] = (
        "concat"  # stitch raw features, or project each backbone first
    )
    project_dim: int = 128  # per-backbone width when fuse = "project"
    layers: int = 1  # transformer encoder layers
    heads: int = 2  # attention heads
    head_dim: int = 64  # width per head; model width d = heads * head_dim
    mlp_dim: int = 512  # hidden width of each layer's feed-forward block
    dropout: float = 0.5  # dropout inside the encoder and after the input projection
    norm_first: bool = False  # pre-norm layers (steadier when deep); the baseline is post-norm

    def __post_init__(self) -> None:
        for name in ("project_dim", "layers", "heads", "head_dim", "mlp_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, found {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), found {self.dropout}")
        if self.fuse not in ("concat", "project"):
            raise ValueError(f"model.fuse must be 'concat' or 'project', found {self.fuse!r}")


class SinusoidalPositions(nn.Module):
    """Fixed sine/cosine positions (Vaswani et al.), computed for any window length."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        self.register_buffer("freq", freq, persistent=False)

    def forward(self, length: int) -> torch.Tensor:
        t = torch.arange(length, device=self.freq.device, dtype=torch.float32)[:, None] * self.freq
        pe = torch.zeros(length, self.dim, device=self.freq.device)
        pe[:, 0::2] = torch.sin(t)
        pe[:, 1::2] = torch.cos(t[:, : self.dim // 2])
        return pe


class BackboneFuse(nn.Module):
    """Concatenate the backbones' features, optionally projecting each to its own width first."""

    def __init__(self, dims: list[int], cfg: FusionConfig) -> None:
        super().__init__()
        self.dims = list(dims)
        self.project = cfg.fuse == "project"
        if self.project:
            self.proj = nn.ModuleList(nn.Linear(d, cfg.project_dim) for d in dims)
        self.out_dim = cfg.project_dim * len(dims) if self.project else sum(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.project:
            return x
        parts = torch.split(x, self.dims, dim=-1)
        return torch.cat([p(part) for p, part in zip(self.proj, parts, strict=True)], dim=-1)


class FusionTransformer(nn.Module):
    """(B, L, sum(dims)) per-frame features -> (B, L, 8) per-frame class logits."""

    def __init__(self, cfg: FusionConfig, dims: list[int], num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        d = cfg.heads * cfg.head_dim
        self.fuse = BackboneFuse(dims, cfg)
        self.embed = nn.Linear(self.fuse.out_dim, d)
        self.pos = SinusoidalPositions(d)
        self.drop = L.Dropout(cfg.dropout)
        layer = L.EncoderLayer(
            d, cfg.heads, cfg.mlp_dim, cfg.dropout, batch_first=True, norm_first=cfg.norm_first
        )
        self.encoder = L.Encoder(layer, cfg.layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x (B, L, D); pad (B, L) bool, True at padding positions (ignored as attention keys)."""
        h = self.embed(self.fuse(x)) + self.pos(x.shape[1])
        h = self.encoder(self.drop(h), src_key_padding_mask=pad)
        return self.head(h)


MODELS = Registry("expr")
register = MODELS.register  # `@register("name", Config)`; a duplicate name raises


@register("fusion", FusionConfig)
def fusion(cfg: FusionConfig, dims: list[int]) -> nn.Module:
    """The paper's multi-backbone transformer fusion (one backbone = a single-backbone model)."""
    return FusionTransformer(cfg, dims)


def model_config(name: str) -> type:
    """The config dataclass of the registered model `name` (ConfigError when unknown)."""
    return MODELS.config(name)


def build_model(name: str, cfg, dims: list[int]) -> nn.Module:
    """A fresh model `name` for inputs made of backbones with widths `dims`."""
    return MODELS.build(name, cfg, dims=list(dims))
