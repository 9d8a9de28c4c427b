"""ERI models: the paper's audio-visual transformer fusion and the MuSe-2022 LSTM baseline.

Both take one batch dict (built by `abaw.eri.track.EriTask`) and return
`(intensities (B, 7) in [0, 1], class_logits (B, 7) or None)`:

    batch["audio"]  (B, T, D_audio)   batch["audio_mask"]  (B, T) bool, True = real step
    batch["visual"] (B, T, D_visual)  batch["visual_mask"] (B, T) bool
    batch["all"]    (B, T, D_total)   batch["all_mask"]    (B, T) bool   (LSTM: every feature)

Padded steps never influence the output (inputs and embeddings are zeroed
there, attention ignores them), and a sample whose modality is missing
entirely (mask all False) gets a finite prediction from what is present.

Variants are registered by name in `MODELS` (an `abaw.registry.Registry`) and
built by `build_model`:

- `fusion`: the paper's model. `readout = "flatten"` is the paper's read-out
  (flatten over time, then Linear); `readout = "mean"` (a deviation) pools the
  encoders' outputs over the valid steps instead, so the projection has 3dM
  inputs instead of T x 3dM and does not memorise positions of a small set.
- `pooled`: per-modality statistics over the valid steps (mean, std, optionally
  max and attention pooling), concatenated, into a small MLP: fast, strong, and
  the sanity baseline (a ridge regression on the means is its linear special case).
- `lstm`: the MuSe-2022 baseline.

`pooled_skip` (fusion and lstm; off by default, i.e. as published; a deviation): a linear
path from the masked mean of each used modality's (standardised) input, plus a presence
flag, added to the intensity head's pre-sigmoid output. The model then contains a ridge
read-out of time-pooled features as a special case and the sequence model learns the
residual; with weight decay it should not fall below that linear reference on a small set.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from abaw import layers as L
from abaw.registry import Registry

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
    readout: Literal["flatten", "mean"] = (
        "flatten"  # paper: flatten over time -> Linear; mean: masked mean over steps (deviation)
    )

    pooled_skip: bool = False  # deviation: + Linear(masked mean of each input) before the sigmoid

    def __post_init__(self) -> None:
        if self.readout not in ("flatten", "mean"):
            raise ValueError(f"model.readout must be 'flatten' or 'mean', found {self.readout!r}")


@dataclass
class PooledConfig:
    """Per-modality pooled statistics -> MLP (not in the paper: the fast ensemble member)."""

    modalities: Literal["A", "V", "AV"] = "AV"  # which modalities' statistics are used
    stats: Literal["mean", "mean_std", "mean_std_max"] = "mean_std"  # statistics per modality
    attention: bool = False  # add a learned attention-pooled vector per modality
    width: int = 256  # hidden width of the MLP
    depth: int = 1  # hidden layers (0 = linear read-out of the statistics)
    dropout: float = 0.3  # dropout after each hidden layer
    input_dropout: float = 0.2  # dropout on the pooled statistics
    class_head: bool = True  # 7-way class head for the loss's class term

    def __post_init__(self) -> None:
        if self.stats not in ("mean", "mean_std", "mean_std_max"):
            raise ValueError(
                f"model.stats must be mean, mean_std or mean_std_max, found {self.stats!r}"
            )
        if self.width < 1 or self.depth < 0:
            raise ValueError("model.width must be >= 1 and model.depth >= 0")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.input_dropout < 1.0):
            raise ValueError("model.dropout and model.input_dropout must be in [0, 1)")


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
    pooled_skip: bool = False  # deviation: + Linear(masked mean of the input) before the sigmoid


class Chomp(nn.Module):
    """Drop the right padding so a convolution is causal (step t sees steps <= t)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : -self.size] if self.size else x


class TemporalBlock(nn.Module):
    """One TCN level (Bai et al. 2018): two dilated causal convolutions with a residual path.

    Works on (B, T, C): each convolution is one matrix product (`abaw.layers.causal_conv`),
    with the 1x1 skip convolution in the first one's product. The modules (and so the
    state-dict keys) are the stock ones: `net` is Conv1d, Chomp, ReLU, Dropout, twice.
    """

    def __init__(self, d_in: int, d_out: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        pad = (kernel - 1) * dilation
        self.net = nn.Sequential(
            nn.Conv1d(d_in, d_out, kernel, padding=pad, dilation=dilation),
            Chomp(pad),
            nn.ReLU(),
            L.Dropout(dropout),
            nn.Conv1d(d_out, d_out, kernel, padding=pad, dilation=dilation),
            Chomp(pad),
            nn.ReLU(),
            L.Dropout(dropout),
        )
        self.skip = nn.Conv1d(d_in, d_out, 1) if d_in != d_out else nn.Identity()

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C); `rows` (B, T, 1) 0/1: compute as on `x * rows` (see causal_conv)."""
        conv1, drop, conv2 = self.net[0], self.net[3], self.net[4]
        skip = self.skip if isinstance(self.skip, nn.Conv1d) else None
        h, res = L.causal_conv(x, conv1, skip, rows)
        h = drop(F.relu(h))
        h = drop(F.relu(L.causal_conv(h, conv2)[0]))
        if res is None:
            res = x if rows is None else x * rows
        return F.relu(h + res)


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
        self.drop = L.Dropout(cfg.embed_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[..., None].to(x.dtype)
        h = self.tcn[0](x, m)  # = tcn[0](x * m): masks level 0's product, not the wide input
        for block in self.tcn[1:]:
            h = block(h)
        h = h * self.scale
        return self.drop(h + self.pe[: h.shape[1]]) * m


class Encoder(nn.Module):
    """Eq. 2-4: concat(x, MHA(x), TransformerLayers(x)) along features, width w -> 3w."""

    def __init__(self, width: int, heads: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        layer = L.EncoderLayer(width, heads, 4 * width, dropout, batch_first=True)
        self.layers = L.Encoder(layer, depth, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        att = L.attention(self.mha, x, pad)
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
        steps = seq_len if cfg.readout == "flatten" else 1
        self.proj_cat = nn.Sequential(
            nn.Flatten(1), nn.Linear(steps * 3 * d * n, proj_out), nn.ReLU()
        )
        head_in = proj_out
        if cfg.modalities == "AVI":
            self.interact = Encoder(2 * d, cfg.inter_heads, cfg.inter_depth, cfg.inter_dropout)
            self.proj_av = nn.Sequential(
                nn.Flatten(1), nn.Linear(steps * 6 * d, proj_out), nn.ReLU()
            )
            head_in += proj_out
        self.head = nn.Linear(head_in, NUM_EMOTIONS)
        self.class_head = nn.Linear(head_in, NUM_EMOTIONS) if cfg.class_head else None
        self.skip = PooledSkip([dims[m] for m in self.names]) if cfg.pooled_skip else None

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        hs, gs, masks = [], [], []
        for m in self.names:
            mask = batch[f"{m}_mask"]
            h = self.embed[m](batch[m], mask)
            g = self.encode[m](h, _attention_pad(mask)) * mask[..., None]
            hs.append(h)
            gs.append(self._read(g, mask))
            masks.append(mask)
        z = [self.proj_cat(torch.cat(gs, dim=-1))]
        if self.cfg.modalities == "AVI":
            union = masks[0] | masks[1]
            g_av = self.interact(torch.cat(hs, dim=-1), _attention_pad(union))
            z.append(self.proj_av(self._read(g_av * union[..., None], union)))
        z = torch.cat(z, dim=-1)
        logits = self.class_head(z) if self.class_head is not None else None
        out = self.head(z)
        if self.skip is not None:
            out = out + self.skip([(batch[m], batch[f"{m}_mask"]) for m in self.names])
        return torch.sigmoid(out), logits

    def _read(self, g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Flatten read-out: the (zeroed-padding) sequence itself; mean: masked mean over steps."""
        if self.cfg.readout == "flatten":
            return g
        return masked_mean(g, mask)[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, D) mean over the valid steps; zeros for a sample with none."""
    m = mask[..., None].to(x.dtype)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class PooledSkip(nn.Module):
    """The `pooled_skip` path: [masked mean, presence flag] per input, concatenated -> Linear.

    Starts at zero (the model begins as published); a sample with a modality missing gets
    zeros for it (its mean and flag), so the output stays finite.
    """

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.linear = nn.Linear(sum(w + 1 for w in widths), NUM_EMOTIONS)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        parts = []
        for x, mask in inputs:
            parts += [masked_mean(x, mask), mask.any(dim=1, keepdim=True).to(x.dtype)]
        return self.linear(torch.cat(parts, dim=-1))


class PooledModel(nn.Module):
    """Masked statistics over time per modality (+ presence flag), concatenated -> MLP."""

    def __init__(self, cfg: PooledConfig, dims: dict[str, int], seq_len: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.names = {"A": ["audio"], "V": ["visual"]}.get(cfg.modalities, ["audio", "visual"])
        missing = [m for m in self.names if m not in dims]
        if missing:
            raise ValueError(f"modalities {cfg.modalities!r} need features of {missing}")
        k = {"mean": 1, "mean_std": 2, "mean_std_max": 3}[cfg.stats] + int(cfg.attention)
        if cfg.attention:
            self.score = nn.ModuleDict({m: nn.Linear(dims[m], 1) for m in self.names})
        width_in = sum(k * dims[m] + 1 for m in self.names)
        layers: list[nn.Module] = [L.Dropout(cfg.input_dropout)]
        for i in range(cfg.depth):
            layers += [
                nn.Linear(width_in if i == 0 else cfg.width, cfg.width),
                nn.ReLU(),
                L.Dropout(cfg.dropout),
            ]
        self.body = nn.Sequential(*layers)
        head_in = cfg.width if cfg.depth else width_in
        self.head = nn.Linear(head_in, NUM_EMOTIONS)
        self.class_head = nn.Linear(head_in, NUM_EMOTIONS) if cfg.class_head else None

    def pool(self, x: torch.Tensor, mask: torch.Tensor, name: str) -> torch.Tensor:
        """(B, T, D) -> (B, k*D + 1): the statistics of one modality and a presence flag."""
        m = mask[..., None].to(x.dtype)
        n = m.sum(dim=1).clamp(min=1.0)
        mean = (x * m).sum(dim=1) / n
        parts = [mean]
        if self.cfg.stats != "mean":
            var = (((x - mean[:, None]) ** 2) * m).sum(dim=1) / n
            parts.append(torch.sqrt(var + 1e-6))
        if self.cfg.stats == "mean_std_max":
            big = torch.finfo(x.dtype).max
            mx = x.masked_fill(~mask[..., None], -big).amax(dim=1)
            parts.append(torch.where(mask.any(dim=1, keepdim=True), mx, torch.zeros_like(mx)))
        if self.cfg.attention:
            s = self.score[name](x).squeeze(-1).masked_fill(~mask, float("-inf"))
            w = torch.softmax(s.masked_fill(~mask.any(dim=1, keepdim=True), 0.0), dim=1)
            parts.append((w[..., None] * x * m).sum(dim=1))
        present = mask.any(dim=1, keepdim=True).to(x.dtype)
        return torch.cat(parts + [present], dim=-1) * present  # absent: all zeros

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = torch.cat([self.pool(batch[m], batch[f"{m}_mask"], m) for m in self.names], dim=-1)
        z = self.body(z)
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
            L.Dropout(cfg.head_dropout),
            nn.Linear(cfg.hidden, NUM_EMOTIONS),
        )
        self.skip = PooledSkip([dims["all"]]) if cfg.pooled_skip else None

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        x, mask = batch["all"], batch["all_mask"]
        lengths = mask.sum(dim=1).clamp(min=1)  # a sample with no steps reads one zero step
        # inp has no bias, so masking its (B, T, hidden) output equals masking the (B, T, D)
        # input, at hidden/D of the cost (64/2560: a quarter of the step was this multiply)
        x = self.inp(x) * mask[..., None].to(x.dtype)
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
        y = self.out(last)
        if self.skip is not None:
            y = y + self.skip([(batch["all"], mask)])
        return torch.sigmoid(y), None


MODELS = Registry("eri")


@MODELS.register("fusion", FusionConfig)
def fusion(cfg: FusionConfig, dims: dict[str, int], seq_len: int) -> nn.Module:
    """The paper's audio-visual transformer fusion (modalities A, V, AV, AVI)."""
    return FusionModel(cfg, dims, seq_len)


@MODELS.register("pooled", PooledConfig)
def pooled(cfg: PooledConfig, dims: dict[str, int], seq_len: int) -> nn.Module:
    """Pooled per-modality statistics -> MLP."""
    return PooledModel(cfg, dims, seq_len)


@MODELS.register("lstm", LstmConfig)
def lstm(cfg: LstmConfig, dims: dict[str, int], seq_len: int) -> nn.Module:
    """The MuSe-2022 LSTM baseline on every selected feature set."""
    return LstmModel(cfg, dims, seq_len)


def build_model(name: str, cfg, *, dims: dict[str, int], seq_len: int) -> nn.Module:
    """Build a registered ERI model.

    Args:
        name: a registered name (`MODELS.names()`: fusion, lstm, pooled).
        cfg: the model's config dataclass (or a plain dict of its fields, as stored in checkpoints).
        dims: input widths, "audio"/"visual" (fusion, pooled) or "all" (lstm).
        seq_len: steps per sample (the data's max_len).
    """
    if name not in MODELS:
        raise ValueError(f"unknown ERI model {name!r}; known: {MODELS.names()}")
    return MODELS.build(name, cfg, dims=dims, seq_len=seq_len)


def model_spec(name: str, cfg, *, dims: dict[str, int], seq_len: int) -> dict:
    """Plain values that rebuild the same model with `build_model(**spec)` (stored in checkpoints)."""
    return {"name": name, "cfg": dataclasses.asdict(cfg), "dims": dict(dims), "seq_len": seq_len}
