"""ERI models: shapes, masking, missing modalities, the ablation switches, the LSTM baseline."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from abaw.eri.models import FusionConfig, LstmConfig, PooledConfig, build_model, model_spec

B, T, DA, DV = 6, 10, 12, 20


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = {
        "audio": torch.randn(B, T, DA, generator=g),
        "visual": torch.randn(B, T, DV, generator=g),
        "audio_mask": torch.ones(B, T, dtype=torch.bool),
        "visual_mask": torch.ones(B, T, dtype=torch.bool),
    }
    b["audio_mask"][0, 4:] = False  # short audio
    b["visual_mask"][1, 7:] = False  # short video
    b["all"] = torch.cat([b["audio"], b["visual"]], dim=-1)
    b["all_mask"] = b["audio_mask"] | b["visual_mask"]
    return b


def _fusion(modalities: str = "AVI", **kw) -> nn.Module:
    torch.manual_seed(0)
    cfg = FusionConfig(modalities=modalities, embed_dim=16, **kw)
    return build_model("fusion", cfg, dims={"audio": DA, "visual": DV}, seq_len=T).eval()


@pytest.mark.parametrize("modalities", ["A", "V", "AV", "AVI"])
def test_fusion_shapes_and_range(modalities):
    y, logits = _fusion(modalities)(_batch())
    assert y.shape == (B, 7) and logits.shape == (B, 7)
    assert ((y > 0) & (y < 1)).all()


def test_padded_steps_do_not_change_the_output():
    model, b = _fusion(), _batch()
    y, _ = model(b)
    garbage = dict(b)
    garbage["audio"] = b["audio"].clone()
    garbage["visual"] = b["visual"].clone()
    garbage["audio"][0, 4:] = 1e3
    garbage["visual"][1, 7:] = -50.0
    y2, _ = model(garbage)
    torch.testing.assert_close(y, y2)
    # ... while a real step does change it (the test can fail).
    garbage["audio"][0, 0] = 10.0
    assert not torch.allclose(model(garbage)[0][0], y[0])


@pytest.mark.parametrize("modalities", ["AV", "AVI"])
def test_missing_modality_gives_finite_output(modalities):
    b = _batch()
    b["visual_mask"][2] = False  # no video at all
    b["audio_mask"][3] = False  # no audio at all
    model = _fusion(modalities)
    y, logits = model(b)
    assert torch.isfinite(y).all() and torch.isfinite(logits).all()
    # The missing modality's (garbage) values are ignored.
    b2 = dict(b)
    b2["visual"] = b["visual"].clone()
    b2["visual"][2] = 7.0
    torch.testing.assert_close(model(b2)[0], y)
    # Gradients are finite too (training on such a batch must not poison the weights).
    model.train()
    model(b)[0].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _param_prefixes(model: nn.Module) -> set[str]:
    return {
        n.split(".")[0] + ("." + n.split(".")[1] if n.startswith(("embed", "encode")) else "")
        for n, _ in model.named_parameters()
    }


def test_ablation_switches_change_the_model_as_described():
    d = 16
    a, v, av, avi = (_fusion(m) for m in ("A", "V", "AV", "AVI"))
    assert _param_prefixes(a) == {"embed.audio", "encode.audio", "proj_cat", "head", "class_head"}
    assert _param_prefixes(v) == {"embed.visual", "encode.visual", "proj_cat", "head", "class_head"}
    both = {
        "embed.audio",
        "embed.visual",
        "encode.audio",
        "encode.visual",
        "proj_cat",
        "head",
        "class_head",
    }
    assert _param_prefixes(av) == both
    assert _param_prefixes(avi) == both | {"interact", "proj_av"}
    # Widths: encoders d -> 3d; g_cat flattened over time -> d*M/2; interaction 2d -> 6d.
    assert a.proj_cat[1].in_features == T * 3 * d and a.proj_cat[1].out_features == d // 2
    assert av.proj_cat[1].in_features == T * 6 * d and av.proj_cat[1].out_features == d
    assert avi.interact.mha.embed_dim == 2 * d and avi.proj_av[1].in_features == T * 6 * d
    assert avi.head.in_features == 2 * d and av.head.in_features == d
    assert avi.encode["audio"].mha.num_heads == 2 and avi.interact.mha.num_heads == 8
    # A single-modality model ignores the other modality entirely.
    b = _batch()
    b2 = dict(b, visual=torch.zeros_like(b["visual"]))
    torch.testing.assert_close(a(b)[0], a(b2)[0])
    assert not torch.allclose(av(b)[0], av(b2)[0])


def test_class_head_can_be_switched_off():
    y, logits = _fusion(class_head=False)(_batch())
    assert y.shape == (B, 7) and logits is None


def test_missing_features_for_a_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="visual"):
        build_model("fusion", FusionConfig(modalities="V"), dims={"audio": DA}, seq_len=T)
    with pytest.raises(ValueError, match="unknown ERI model"):
        build_model("gru", FusionConfig(), dims={}, seq_len=T)


def _lstm(**kw) -> nn.Module:
    torch.manual_seed(0)
    return build_model("lstm", LstmConfig(**kw), dims={"all": DA + DV}, seq_len=T).eval()


def test_lstm_baseline_structure_and_padding():
    model = _lstm()
    assert model.inp.bias is None and model.inp.out_features == 64 and model.lstm.hidden_size == 64
    b = _batch()
    y, logits = model(b)
    assert y.shape == (B, 7) and logits is None and ((y > 0) & (y < 1)).all()
    b["all_mask"][0, 5:] = False
    y = model(b)[0]
    b2 = dict(b, all=b["all"].clone())
    b2["all"][0, 5:] = 99.0
    torch.testing.assert_close(model(b2)[0], y)


@pytest.mark.parametrize("layers", [1, 3])
def test_lstm_last_state_equals_packed_sequences(layers):
    """The unidirectional shortcut (state at step len-1) equals running packed sequences."""
    model, b = _lstm(layers=layers), _batch()
    b["all_mask"][2, 3:] = False
    lengths = b["all_mask"].sum(1)
    x = model.inp(b["all"] * b["all_mask"][..., None])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, (h, _) = model.lstm(packed)
    expected = torch.sigmoid(model.out(h[-1]))
    torch.testing.assert_close(model(b)[0], expected)


def test_lstm_bidirectional_and_empty_sample_are_finite():
    model, b = _lstm(bidirectional=True, layers=2), _batch()
    b["all_mask"][4] = False
    y, _ = model(b)
    assert y.shape == (B, 7) and torch.isfinite(y).all()


def test_model_spec_rebuilds_the_same_architecture():
    cfg = FusionConfig(modalities="AV", embed_dim=16)
    spec = model_spec("fusion", cfg, dims={"audio": DA, "visual": DV}, seq_len=T)
    a = build_model("fusion", cfg, dims={"audio": DA, "visual": DV}, seq_len=T)
    b = build_model(spec["name"], spec["cfg"], dims=spec["dims"], seq_len=spec["seq_len"])
    assert [(n, p.shape) for n, p in a.named_parameters()] == [
        (n, p.shape) for n, p in b.named_parameters()
    ]


# -- read-out switch and the pooled variant ------------------------------------------------


def test_mean_readout_has_no_per_step_projection_and_ignores_padding():
    flat, mean = _fusion("AVI"), _fusion("AVI", readout="mean")
    n_flat = sum(p.numel() for p in flat.proj_cat.parameters())
    n_mean = sum(p.numel() for p in mean.proj_cat.parameters())
    assert n_flat > 0.9 * T * n_mean  # flatten: T x 3dM inputs; mean: 3dM
    b = _batch()
    y, logits = mean(b)
    assert y.shape == (B, 7) and logits.shape == (B, 7)
    g = dict(b, audio=b["audio"].clone())
    g["audio"][0, 4:] = 1e3  # padded steps of sample 0
    torch.testing.assert_close(mean(g)[0], y)
    g["audio"][0, 1] = 5.0  # a real step
    assert not torch.allclose(mean(g)[0][0], y[0])


def test_readout_rejects_unknown_value():
    with pytest.raises(ValueError, match="readout"):
        FusionConfig(readout="max")


def _pooled(**kw) -> nn.Module:
    torch.manual_seed(0)
    cfg = PooledConfig(width=8, **kw)
    return build_model("pooled", cfg, dims={"audio": DA, "visual": DV}, seq_len=T).eval()


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"stats": "mean"},
        {"stats": "mean_std_max", "attention": True},
        {"depth": 0},
        {"depth": 2, "modalities": "V"},
        {"modalities": "A", "class_head": False},
    ],
)
def test_pooled_shapes_padding_and_missing_modality(kw):
    model, b = _pooled(**kw), _batch()
    y, logits = model(b)
    assert y.shape == (B, 7) and ((y > 0) & (y < 1)).all()
    assert (logits is None) == (kw.get("class_head") is False)
    g = {k: v.clone() for k, v in b.items()}
    g["audio"][0, 4:] = 1e3
    g["visual"][1, 7:] = -50.0
    torch.testing.assert_close(model(g)[0], y)
    g["audio_mask"][2] = False
    g["visual_mask"][3] = False
    assert torch.isfinite(model(g)[0]).all()


def test_pooled_statistics_are_the_masked_ones():
    model, b = _pooled(stats="mean_std_max"), _batch()
    z = model.pool(b["audio"], b["audio_mask"], "audio")
    x = b["audio"][0, :4]  # sample 0 has 4 real audio steps
    torch.testing.assert_close(z[0, :DA], x.mean(0))
    torch.testing.assert_close(z[0, DA : 2 * DA], x.std(0, unbiased=False), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(z[0, 2 * DA : 3 * DA], x.amax(0))
    assert z[0, -1] == 1.0
    empty = b["audio_mask"].clone()
    empty[0] = False
    assert (model.pool(b["audio"], empty, "audio")[0] == 0).all()


def test_pooled_config_checks_and_spec_roundtrip():
    with pytest.raises(ValueError, match="stats"):
        PooledConfig(stats="median")
    with pytest.raises(ValueError, match="depth"):
        PooledConfig(depth=-1)
    spec = model_spec("pooled", PooledConfig(width=8), dims={"audio": DA, "visual": DV}, seq_len=T)
    m = build_model(**spec)
    assert isinstance(m, nn.Module)


# -- pooled_skip: the linear path from the time-pooled inputs (fusion and lstm) -------------


def _with_skip_weights(model: nn.Module) -> nn.Module:
    """Give the (zero-initialised) skip path non-zero weights, so its effect is visible."""
    torch.manual_seed(1)
    nn.init.normal_(model.skip.linear.weight)
    nn.init.normal_(model.skip.linear.bias)
    return model


@pytest.mark.parametrize("modalities", ["A", "V", "AV", "AVI"])
def test_pooled_skip_switch_on_off_and_shapes(modalities):
    off, on = (
        _fusion(modalities, readout="mean"),
        _fusion(modalities, readout="mean", pooled_skip=True),
    )
    assert off.skip is None and "skip" not in _param_prefixes(off)
    n_in = {"A": DA + 1, "V": DV + 1}.get(modalities, DA + DV + 2)  # means + presence flags
    assert on.skip.linear.in_features == n_in and on.skip.linear.out_features == 7
    # Zero-initialised: the model starts as the one without the path.
    b = _batch()
    torch.testing.assert_close(on(b)[0], off(b)[0])
    y, logits = _with_skip_weights(on)(b)
    assert y.shape == (B, 7) and logits.shape == (B, 7) and ((y > 0) & (y < 1)).all()
    assert not torch.allclose(y, off(b)[0])


def test_pooled_skip_contains_a_linear_readout_of_the_masked_means():
    """With the sequence head silenced, the output is sigmoid(Linear(masked means, flags))."""
    model, b = _with_skip_weights(_fusion("AV", readout="mean", pooled_skip=True)), _batch()
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    feats = []
    for m in ("audio", "visual"):
        mask = b[f"{m}_mask"][..., None].float()
        feats += [(b[m] * mask).sum(1) / mask.sum(1), torch.ones(B, 1)]
    expected = torch.sigmoid(model.skip.linear(torch.cat(feats, dim=-1)))
    torch.testing.assert_close(model(b)[0], expected)


def test_pooled_skip_ignores_padding_and_missing_modality_stays_finite():
    model = _with_skip_weights(_fusion("AVI", readout="mean", pooled_skip=True))
    b = _batch()
    b["visual_mask"][2] = False  # no video at all
    b["audio_mask"][3] = False  # no audio at all
    y, logits = model(b)
    assert torch.isfinite(y).all() and torch.isfinite(logits).all()
    g = dict(b, audio=b["audio"].clone(), visual=b["visual"].clone())
    g["audio"][0, 4:] = 1e3  # padded steps
    g["visual"][2] = 7.0  # the missing modality's values
    torch.testing.assert_close(model(g)[0], y)
    model.train()
    model(b)[0].sum().backward()
    assert torch.isfinite(model.skip.linear.weight.grad).all()
    assert model.skip.linear.weight.grad.abs().sum() > 0


def test_lstm_pooled_skip_switch_padding_and_empty_sample():
    off, on = _lstm(), _lstm(pooled_skip=True)
    assert off.skip is None and on.skip.linear.in_features == DA + DV + 1
    b = _batch()
    b["all_mask"][0, 5:] = False
    b["all_mask"][4] = False  # a sample with no steps
    torch.testing.assert_close(on(b)[0], off(b)[0])  # zero-initialised
    _with_skip_weights(on)
    y = on(b)[0]
    assert torch.isfinite(y).all() and not torch.allclose(y, off(b)[0])
    b2 = dict(b, all=b["all"].clone())
    b2["all"][0, 5:] = 99.0
    b2["all"][4] = -99.0
    torch.testing.assert_close(on(b2)[0], y)


@pytest.mark.parametrize("name", ["fusion", "lstm"])
def test_pooled_skip_rebuilds_from_the_model_spec(name):
    if name == "fusion":
        cfg, dims = (
            FusionConfig(modalities="AV", embed_dim=16, pooled_skip=True),
            {"audio": DA, "visual": DV},
        )
    else:
        cfg, dims = LstmConfig(pooled_skip=True), {"all": DA + DV}
    spec = model_spec(name, cfg, dims=dims, seq_len=T)
    assert spec["cfg"]["pooled_skip"] is True
    a = _with_skip_weights(build_model(name, cfg, dims=dims, seq_len=T).eval())
    b = build_model(spec["name"], spec["cfg"], dims=spec["dims"], seq_len=spec["seq_len"]).eval()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(_batch())[0], a(_batch())[0])
    # A spec stored before the switch existed rebuilds the model without the path.
    old = dict(spec, cfg={k: v for k, v in spec["cfg"].items() if k != "pooled_skip"})
    assert (
        build_model(old["name"], old["cfg"], dims=old["dims"], seq_len=old["seq_len"]).skip is None
    )
