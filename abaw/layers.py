"""Fast forward passes for PyTorch's standard layers, with their parameters unchanged.

Both tracks' models are built from `nn.Conv1d`, `nn.MultiheadAttention` and
`nn.TransformerEncoderLayer`. Those modules keep their parameters, initialisation and
state-dict keys here (old checkpoints load, a seed gives the same initial weights); what
changes is how the training step computes with them on a CPU, where the profile of the
ERI fusion at CPU size (d 64, batch 64; 2-core EPYC, docs/benchmarks.md) was: dropout's
random numbers 22% of the step, the 1-D convolutions' forward and backward 33% (mkldnn is
slow at 30 time steps), copies for the (B, C, T) layout the convolutions need 11%.

- `dropout`: on CPU, the keep mask comes from 16-bit slices of 64-bit random words (one
  draw per four elements) instead of `bernoulli_`'s one float draw per element, 3x faster.
  The drop probability is rounded to a multiple of 1/65536 (0.2 -> 0.19999695): the
  same distribution within 3e-6. CUDA keeps PyTorch's fused dropout.
- `causal_conv`: a causal dilated `nn.Conv1d` over (B, T, C) as ONE matrix product with
  all taps (and optionally a 1x1 skip convolution) side by side, then shifted sums: no
  transposes, large GEMMs instead of mkldnn's short-sequence convolution.
- `attention`: `nn.MultiheadAttention`'s mathematics from its own parameters, through
  `scaled_dot_product_attention` when no dropout is due, else with the fast dropout.
- `EncoderLayer` / `Encoder`: `nn.TransformerEncoderLayer` / `nn.TransformerEncoder`
  with only `forward` replaced (post- or pre-norm, ReLU or GELU as configured).

Same outputs as the stock modules within float tolerance (tests/test_layers.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Dropout", "Encoder", "EncoderLayer", "attention", "causal_conv", "dropout"]

_WORD_BITS = 16  # bits of randomness per element: p is rounded to a multiple of 2**-16


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)`, with a cheaper random mask on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
    bits = words.random_(-(2**63), None).view(torch.int16)[:n].view(x.shape)
    threshold = round(p * 2**_WORD_BITS) - 2 ** (_WORD_BITS - 1)  # P(bits < threshold) = p
    mask = (bits >= threshold).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * mask


class Dropout(nn.Dropout):
    """`nn.Dropout` through `dropout` (same module, same `p`, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class _TapSum(torch.autograd.Function):
    """(B, T, k*C [+ R]) tap products -> (B, T, C) shifted sum, and the R rest columns.

    Forward: y[t] = sum_j z[t - (k - 1 - j) d, tap j] (zero before the start). Backward
    writes every tap's gradient into one buffer: autograd's own slicing would allocate and
    zero a full-size buffer per tap.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, k: int, c: int, dilation: int):  # type: ignore[override]
        t = z.shape[1]
        y = z[..., (k - 1) * c : k * c].clone()
        for tap in range(k - 1):
            shift = (k - 1 - tap) * dilation
            if shift < t:
                y[:, shift:] += z[:, : t - shift, tap * c : (tap + 1) * c]
        rest = z[..., k * c :].contiguous()
        ctx.k, ctx.c, ctx.dilation, ctx.shape = k, c, dilation, z.shape
        return y, rest

    @staticmethod
    def backward(ctx, gy: torch.Tensor, grest: torch.Tensor):  # type: ignore[override]
        k, c, dilation = ctx.k, ctx.c, ctx.dilation
        t = ctx.shape[1]
        gz = gy.new_empty(ctx.shape)
        gz[..., (k - 1) * c : k * c] = gy
        for tap in range(k - 1):
            shift = (k - 1 - tap) * dilation
            cols = slice(tap * c, (tap + 1) * c)
            if shift < t:
                gz[:, : t - shift, cols] = gy[:, shift:]
            gz[:, max(t - shift, 0) :, cols] = 0.0
        if gz.shape[-1] > k * c:
            gz[..., k * c :] = grest
        return gz, None, None, None


def causal_conv(
    x: torch.Tensor,
    conv: nn.Conv1d,
    skip: nn.Conv1d | None = None,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A causal dilated convolution over (B, T, C_in) -> (B, T, C_out), and a 1x1 `skip`.

    Equal to `conv` with left padding (kernel - 1) * dilation and the right end chomped, as
    in the TCN: output step t sees input steps t, t - d, ..., t - (k - 1) d. Every tap's
    product is taken at once, x @ [W_j ... | W_skip], then shifted and summed; taps that
    reach only before the start (dilation x shift >= T) are left out of the product.

    `rows` (B, T, 1), 0/1: the result is that of `x * rows`, but the mask multiplies the
    product (k + 1 columns per output) rather than the input (C_in columns; 1536 for
    PosterV2-ViT): a zero input row gives a zero product row either way.
    """
    w = conv.weight  # (C_out, C_in, k): the stock layout, so checkpoints are unchanged
    c_out, c_in, k = w.shape
    t = x.shape[1]
    dilation = conv.dilation[0]
    first = next(j for j in range(k) if (k - 1 - j) * dilation < t)  # earlier taps see nothing
    used = k - first
    mats = [w[:, :, first:].permute(1, 2, 0).reshape(c_in, used * c_out)]
    if skip is not None:
        mats.append(skip.weight[:, :, 0].t())
    z = x @ (torch.cat(mats, dim=1) if len(mats) > 1 else mats[0])
    if rows is not None:
        z = z * rows
    y, rest = _TapSum.apply(z, used, c_out, dilation)
    if conv.bias is not None:
        y = y + conv.bias
    if skip is None:
        return y, None
    return y, (rest + skip.bias if skip.bias is not None else rest)


def attention(
    mha: nn.MultiheadAttention, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Self-attention of a batch-first `nn.MultiheadAttention` over x (B, T, C).

    `key_padding_mask` (B, T): True = ignore that key (PyTorch's convention).
    """
    if not (mha.batch_first and mha._qkv_same_embed_dim and mha.in_proj_bias is not None):
        raise ValueError("attention() needs a batch-first MultiheadAttention with one in_proj")
    b, t, c = x.shape
    heads = mha.num_heads
    qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
    q, k, v = qkv.view(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # each (B, H, T, hd)
    p = mha.dropout if mha.training else 0.0
    keep = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
    if p == 0.0 or x.device.type != "cpu":
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p)
    else:
        scores = (q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        o = dropout(torch.softmax(scores, dim=-1), p) @ v
    o = o.transpose(1, 2).reshape(b, t, c)
    return F.linear(o, mha.out_proj.weight, mha.out_proj.bias)


class EncoderLayer(nn.TransformerEncoderLayer):
    """`nn.TransformerEncoderLayer` (batch first) with a forward built on `attention`/`dropout`."""

    def forward(  # type: ignore[override]
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        if src_mask is not None or is_causal:
            raise ValueError("EncoderLayer takes only a key padding mask")
        x = src
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_key_padding_mask)
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x, src_key_padding_mask))
        return self.norm2(x + self._ff(x))

    def _sa(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        return dropout(attention(self.self_attn, x, pad), self.dropout1.p, self.training)

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        h = dropout(self.activation(self.linear1(x)), self.dropout.p, self.training)
        return dropout(self.linear2(h), self.dropout2.p, self.training)


class Encoder(nn.TransformerEncoder):
    """`nn.TransformerEncoder` whose forward runs its layers in a plain loop."""

    def forward(  # type: ignore[override]
        self,
        src: torch.Tensor,
        mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool | None = None,
    ) -> torch.Tensor:
        if mask is not None or is_causal:
            raise ValueError("Encoder takes only a key padding mask")
        x = src
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=src_key_padding_mask)
        return self.norm(x) if self.norm is not None else x
