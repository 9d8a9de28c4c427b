"""ERI models: the paper's audio-visual transformer fusion and the MuSe-2022 LSTM baseline.

Both take one batch dict (built by `abaw.eri.track.EriTask`) and return
`(intensities (B, 7) in [0, 1], class_logits (B, 7) or None)`:

    batch["audio"]  (B, T, D_audio)   batch["audio_mask"]  (B, T) bool, True = real step
    batch["visual"] (B, T, D_visual)  batch["visual_mask"] (B, T) bool
    batch["all"]    (B, T, D_total)   batch["all_mask"]    (B, T) bool   (LSTM: every feature)

Padded steps never influence the output (inputs and embeddings are zeroed
there, attention ignores them), and a sample whose modality is missing
entirely (mask all False) gets a finite prediction from what is present.

Variants are registered by name in MODELS and built by `build_model`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NUM_EMOTIONS = 7


@dataclass
class FusionConfig:
    """The paper's audio-visual fusion (defaults = paper; the authors' code uses embed_dim 128)."""

    modalities: Literal["A", "V", "AV", "AVI"] = (
        "AVI"  # A/V: one modality; AV: fused; AVI: + interaction
    )
    embed_dim: int = 256  # d: width of each modality's embedding
    tcn_levels: int = 5  # temporal-convolution levels of the embedding
    tcn_kernel: int = 3  # kernel size of every TCN level (dilation doubles per level)
    embed_dropout: float = 0.2  # dropout of the TCN and after the positional encoding
    heads: int = 2  # attention heads of the modality encoders
    depth: int = 1  # transformer layers of each modality encoder
    dropout: float = 0.5  # dropout inside the modality encoders
    inter_heads: int = 8  # attention heads of the interaction encoder
    inter_depth: int = 1  # transformer layers of the interaction encoder
    inter_dropout: float = 0.1  # dropout inside the interaction encoder
    class_head: bool = True  # 7-way class head for the loss's class term


@dataclass
class LstmConfig:
    """The MuSe-2022 baseline (EIHW/MuSe2022 model.py)."""

    hidden: int = 64  # width of the input projection and of the LSTM
    layers: int = 1  # stacked LSTM layers (the baseline searched 1-3)
    bidirectional: bool = (
        False  # run the LSTM both ways (last states of both directions concatenated)
    )
    rnn_dropout: float = 0.0  # dropout between stacked LSTM layers
    head_dropout: float = 0.5  # dropout before the output layer


class Chomp(nn.Module):
    """Drop the right padding so a convolution is causal (step t sees steps <= t)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : -self.size] if self.size else x


class TemporalBlock(nn.Module):
    """One TCN level (Bai et al. 2018): two dilated causal convolutions with a residual path."""

    def __init__(self, d_in: int, d_out: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        pad = (kernel - 1) * dilation
        self.net = nn.Sequential(
            nn.Conv1d(d_in, d_out, kernel, padding=pad, dilation=dilation),
            Chomp(pad),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv1d(d_out, d_out, kernel, padding=pad, dilation=dilation),
            Chomp(pad),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.skip = nn.Conv1d(d_in, d_out, 1) if d_in != d_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        return F.relu(self.net(x) + self.skip(x))


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """The Transformer's fixed positional encoding, (length, dim)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


class ModalityEmbedding(nn.Module):
    """Eq. 1: TCN to width d, times sqrt(d), plus positional encoding, dropout."""

    def __init__(self, d_in: int, cfg: FusionConfig, seq_len: int) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.scale = math.sqrt(d)
        self.tcn = nn.Sequential(
            *[
                TemporalBlock(d_in if i == 0 else d, d, cfg.tcn_kernel, 2**i, cfg.embed_dropout)
                for i in range(cfg.tcn_levels)
            ]
        )
        self.register_buffer("pe", sinusoidal_encoding(seq_len, d), persistent=False)
        self.drop = nn.Dropout(cfg.embed_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[..., None].to(x.dtype)
        h = self.tcn((x * m).transpose(1, 2)).transpose(1, 2) * self.scale
        return self.drop(h + self.pe[: h.shape[1]]) * m


class Encoder(nn.Module):
    """Eq. 2-4: concat(x, MHA(x), TransformerLayers(x)) along features, width w -> 3w."""

    def __init__(self, width: int, heads: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        att, _ = self.mha(x, x, x, key_padding_mask=pad, need_weights=False)
        return torch.cat([x, att, self.layers(x, src_key_padding_mask=pad)], dim=-1)


def _attention_pad(mask: torch.Tensor) -> torch.Tensor:
    """key_padding_mask (True = ignore); a fully missing row keeps step 0 so softmax stays finite."""
    pad = ~mask
    empty = ~mask.any(dim=1)
    return pad & ~(empty[:, None] & (torch.arange(mask.shape[1], device=mask.device) == 0))


class FusionModel(nn.Module):
    """Audio-visual transformer fusion (paper Sec. 3.1); `modalities` selects the ablation."""

    def __init__(self, cfg: FusionConfig, dims: dict[str, int], seq_len: int) -> None:
        super().__init__()
        self.cfg, self.seq_len = cfg, seq_len
        d = cfg.embed_dim
        self.names = {"A": ["audio"], "V": ["visual"]}.get(cfg.modalities, ["audio", "visual"])
        missing = [m for m in self.names if m not in dims]
        if missing:
            raise ValueError(f"modalities {cfg.modalities!r} need features of {missing}")
        self.embed = nn.ModuleDict(
            {m: ModalityEmbedding(dims[m], cfg, seq_len) for m in self.names}
        )
        self.encode = nn.ModuleDict(
            {m: Encoder(d, cfg.heads, cfg.depth, cfg.dropout) for m in self.names}
        )
        n = len(self.names)
        proj_out = d * n // 2  # [code] d * M / 2
        self.proj_cat = nn.Sequential(
            nn.Flatten(1), nn.Linear(seq_len * 3 * d * n, proj_out), nn.ReLU()
        )
        head_in = proj_out
        if cfg.modalities == "AVI":
            self.interact = Encoder(2 * d, cfg.inter_heads, cfg.inter_depth, cfg.inter_dropout)
            self.proj_av = nn.Sequential(
                nn.Flatten(1), nn.Linear(seq_len * 6 * d, proj_out), nn.ReLU()
            )
            head_in += proj_out
        self.head = nn.Linear(head_in, NUM_EMOTIONS)
        self.class_head = nn.Linear(head_in, NUM_EMOTIONS) if cfg.class_head else None

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        hs, gs, masks = [], [], []
        for m in self.names:
            mask = batch[f"{m}_mask"]
            h = self.embed[m](batch[m], mask)
            g = self.encode[m](h, _attention_pad(mask)) * mask[..., None]
            hs.append(h)
            gs.append(g)
            masks.append(mask)
        z = [self.proj_cat(torch.cat(gs, dim=-1))]
        if self.cfg.modalities == "AVI":
            union = masks[0] | masks[1]
            g_av = self.interact(torch.cat(hs, dim=-1), _attention_pad(union))
            z.append(self.proj_av(g_av * union[..., None]))
        z = torch.cat(z, dim=-1)
        logits = self.class_head(z) if self.class_head is not None else None
        return torch.sigmoid(self.head(z)), logits


class LstmModel(nn.Module):
    """MuSe-2022 baseline: Linear (no bias) -> LSTM -> last hidden state -> MLP -> sigmoid."""

    def __init__(self, cfg: LstmConfig, dims: dict[str, int], seq_len: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(dims["all"], cfg.hidden, bias=False)
        self.lstm = nn.LSTM(
            cfg.hidden,
            cfg.hidden,
            num_layers=cfg.layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.rnn_dropout if cfg.layers > 1 else 0.0,
        )
        width = cfg.hidden * (2 if cfg.bidirectional else 1)
        self.out = nn.Sequential(
            nn.Linear(width, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.head_dropout),
            nn.Linear(cfg.hidden, NUM_EMOTIONS),
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        x, mask = batch["all"], batch["all_mask"]
        lengths = mask.sum(dim=1).clamp(min=1)  # a sample with no steps reads one zero step
        x = self.inp(x * mask[..., None].to(x.dtype))
        if self.cfg.bidirectional:
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            _, (h, _) = self.lstm(packed)
            last = torch.cat([h[-2], h[-1]], dim=-1)
        else:
            # One direction: the state at step len-1 of the padded run equals the packed
            # run's last state (steps after it cannot influence it), without a host sync.
            out, _ = self.lstm(x)
            last = out[torch.arange(x.shape[0], device=x.device), lengths - 1]
        return torch.sigmoid(self.out(last)), None


MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "fusion": (FusionConfig, FusionModel),
    "lstm": (LstmConfig, LstmModel),
}


def build_model(name: str, cfg, *, dims: dict[str, int], seq_len: int) -> nn.Module:
    """Build a registered ERI model.

    Args:
        name: "fusion" or "lstm".
        cfg: the model's config dataclass (or a plain dict of its fields, as stored in checkpoints).
        dims: input widths, "audio"/"visual" (fusion) or "all" (lstm).
        seq_len: steps per sample (the data's max_len).
    """
    if name not in MODELS:
        raise ValueError(f"unknown ERI model {name!r}; known: {sorted(MODELS)}")
    cfg_cls, model_cls = MODELS[name]
    if isinstance(cfg, dict):
        cfg = cfg_cls(**cfg)
    return model_cls(cfg, dims, seq_len)


def model_spec(name: str, cfg, *, dims: dict[str, int], seq_len: int) -> dict:
    """Plain values that rebuild the same model with `build_model(**spec)` (stored in checkpoints)."""
    return {"name": name, "cfg": dataclasses.asdict(cfg), "dims": dict(dims), "seq_len": seq_len}
