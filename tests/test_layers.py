"""abaw.layers: the fast forwards compute what PyTorch's stock modules compute."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from abaw import layers as L
from abaw.eri.models import TemporalBlock


def _stock_causal(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """Conv1d with its left+right padding, right end chomped, on (B, T, C)."""
    pad = conv.padding[0]
    y = conv(x.transpose(1, 2))
    return (y[..., :-pad] if pad else y).transpose(1, 2)


@pytest.mark.parametrize(
    ("kernel", "dilation", "steps"), [(3, 1, 7), (3, 4, 7), (2, 8, 5), (3, 16, 30), (1, 1, 4)]
)
@pytest.mark.parametrize("with_skip", [False, True])
def test_causal_conv_equals_padded_chomped_conv1d(kernel, dilation, steps, with_skip) -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(6, 5, kernel, padding=(kernel - 1) * dilation, dilation=dilation).double()
    skip = nn.Conv1d(6, 5, 1).double() if with_skip else None
    x = torch.randn(3, steps, 6, dtype=torch.float64, requires_grad=True)
    y, rest = L.causal_conv(x, conv, skip)
    ref = _stock_causal(conv, x)
    torch.testing.assert_close(y, ref)
    if with_skip:
        torch.testing.assert_close(rest, skip(x.transpose(1, 2)).transpose(1, 2))
    else:
        assert rest is None
    # gradients reach the stock parameters (checkpoints keep the Conv1d layout)
    g = torch.randn_like(y)
    got = torch.autograd.grad((y * g).sum(), [x, conv.weight, conv.bias])
    want = torch.autograd.grad((ref * g).sum(), [x, conv.weight, conv.bias])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_tap_sum_gradient_is_exact() -> None:
    z = torch.randn(2, 6, 3 * 4 + 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: L._TapSum.apply(z, 3, 4, 2), (z,))


def test_temporal_block_equals_its_stock_modules() -> None:
    torch.manual_seed(0)
    for d_in, d_out in [(9, 4), (4, 4)]:
        block = TemporalBlock(d_in, d_out, kernel=3, dilation=2, dropout=0.3).eval()
        x = torch.randn(2, 11, d_in)
        xt = x.transpose(1, 2)
        ref = torch.relu(block.net(xt) + block.skip(xt)).transpose(1, 2)  # Bai et al.'s forward
        torch.testing.assert_close(block(x), ref)


def test_dropout_keeps_the_right_share_and_the_mean() -> None:
    torch.manual_seed(0)
    x = torch.ones(400_000)
    for p in (0.1, 0.2, 0.5, 0.9):
        y = L.dropout(x, p)
        kept = (y != 0).double().mean().item()
        sigma = math.sqrt(p * (1 - p) / x.numel())
        assert abs(kept - (1 - p)) < 5 * sigma, (p, kept)
        assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
        assert abs(y.double().mean().item() - 1.0) < 5 * sigma / (1 - p)


def test_dropout_is_seeded_off_in_eval_and_passes_gradients() -> None:
    x = torch.randn(64, 30, 8, requires_grad=True)
    torch.manual_seed(3)
    a = L.dropout(x, 0.3)
    torch.manual_seed(3)
    b = L.dropout(x, 0.3)
    assert torch.equal(a, b)
    assert not torch.equal(a, L.dropout(x, 0.3))  # a fresh mask per call
    assert L.dropout(x, 0.3, training=False) is x and L.dropout(x, 0.0) is x
    (g,) = torch.autograd.grad(a.sum(), x)
    torch.testing.assert_close(g, (a != 0).float() / 0.7)
    module = L.Dropout(0.3).eval()
    assert module(x) is x and isinstance(module, nn.Dropout)
    assert L.dropout(x, 1.0).abs().sum() == 0


def _batch(b: int, t: int, c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, c, generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    return x, torch.arange(t)[None, :] >= lengths[:, None]  # True = padding


def test_attention_equals_multihead_attention() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, dropout=0.0, batch_first=True)
    x, pad = _batch(5, 9, 16)
    for mask in (None, pad):
        for train in (False, True):
            mha.train(train)
            ref, _ = mha(x, x, x, key_padding_mask=mask, need_weights=False)
            torch.testing.assert_close(L.attention(mha, x, mask), ref)
    with pytest.raises(ValueError, match="batch-first"):
        L.attention(nn.MultiheadAttention(16, 4), x)


def test_attention_dropout_path_matches_without_dropout_in_expectation() -> None:
    """With dropout the CPU path is explicit softmax; its average over masks is the plain output."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
    x, pad = _batch(2, 6, 8)
    mha.eval()
    plain = L.attention(mha, x, pad)
    mha.train()
    # out_proj is linear, so the mean over many dropout masks converges to the plain output
    mean = torch.stack([L.attention(mha, x, pad) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, plain, atol=0.03, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_equals_stock_transformer_encoder(norm_first, activation) -> None:
    kw = dict(dropout=0.0, batch_first=True, norm_first=norm_first, activation=activation)
    torch.manual_seed(0)
    stock = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 2, 32, **kw), 2, enable_nested_tensor=False
    )
    torch.manual_seed(0)
    fast = L.Encoder(L.EncoderLayer(16, 2, 32, **kw), 2, enable_nested_tensor=False)
    # same initialisation from the same seed, same state-dict keys (checkpoints load)
    s, f = stock.state_dict(), fast.state_dict()
    assert s.keys() == f.keys() and all(torch.equal(s[k], f[k]) for k in s)
    x, pad = _batch(4, 7, 16, seed=1)
    x.requires_grad_(True)
    for train in (False, True):
        stock.train(train)
        fast.train(train)
        torch.testing.assert_close(
            fast(x, src_key_padding_mask=pad), stock(x, src_key_padding_mask=pad)
        )
    g1 = torch.autograd.grad(
        stock(x, src_key_padding_mask=pad).square().sum(), [x, *stock.parameters()]
    )
    g2 = torch.autograd.grad(
        fast(x, src_key_padding_mask=pad).square().sum(), [x, *fast.parameters()]
    )
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("d_in", [9, 4])
def test_row_mask_equals_masking_the_input(d_in) -> None:
    """`rows` masks the (narrow) product instead of the (wide) input: same result."""
    torch.manual_seed(0)
    block = TemporalBlock(d_in, 4, kernel=3, dilation=1, dropout=0.0).eval()
    x = torch.randn(3, 8, d_in) * 100  # garbage at the padded steps must not leak
    rows = (torch.arange(8)[None, :] < torch.tensor([8, 5, 0])[:, None]).float()[..., None]
    torch.testing.assert_close(block(x, rows), block(x * rows))


def _stock_encoder(enc, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """The ERI Encoder's Eq. 2-4 through the stock modules' own forwards."""
    att, _ = enc.mha(x, x, x, key_padding_mask=pad, need_weights=False)
    h = x
    for layer in enc.layers.layers:
        h = nn.TransformerEncoderLayer.forward(layer, h, src_key_padding_mask=pad)
    return torch.cat([x, att, h], dim=-1)


def _stock_fusion(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """FusionModel's forward as written before abaw.layers: Conv1d on (B, C, T), stock modules."""
    from abaw.eri.models import _attention_pad

    hs, gs, masks = [], [], []
    for m in model.names:
        mask = batch[f"{m}_mask"]
        emb, w = model.embed[m], mask[..., None].float()
        h = (batch[m] * w).transpose(1, 2)
        for block in emb.tcn:
            h = torch.relu(block.net(h) + block.skip(h))
        h = (h.transpose(1, 2) * emb.scale + emb.pe[: h.shape[2]]) * w
        g = _stock_encoder(model.encode[m], h, _attention_pad(mask)) * w
        hs.append(h)
        gs.append(model._read(g, mask))
        masks.append(mask)
    z = [model.proj_cat(torch.cat(gs, dim=-1))]
    union = masks[0] | masks[1]
    g_av = _stock_encoder(model.interact, torch.cat(hs, dim=-1), _attention_pad(union))
    z.append(model.proj_av(model._read(g_av * union[..., None], union)))
    return torch.sigmoid(model.head(torch.cat(z, dim=-1)))


@pytest.mark.parametrize("readout", ["flatten", "mean"])
def test_eri_fusion_equals_its_stock_formulation(readout) -> None:
    """Same weights, same mathematics: the fast forward of the paper's model changes nothing."""
    from abaw.eri.models import FusionConfig, build_model

    torch.manual_seed(0)
    dims, t = {"audio": 24, "visual": 40}, 12
    cfg = FusionConfig(embed_dim=16, readout=readout, depth=2)
    model = build_model("fusion", cfg, dims=dims, seq_len=t).eval()
    g = torch.Generator().manual_seed(2)
    batch = {}
    for m, width in dims.items():
        lengths = torch.tensor([12, 7, 1, 0, 12])
        batch[m] = torch.randn(5, t, width, generator=g) * 10  # garbage past each length
        batch[f"{m}_mask"] = torch.arange(t)[None, :] < lengths[:, None]
    with torch.no_grad():
        torch.testing.assert_close(model(batch)[0], _stock_fusion(model, batch))
