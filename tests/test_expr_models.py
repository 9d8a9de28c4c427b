"""Expr fusion transformer: shapes, fusion modes, padding mask, registry."""

from __future__ import annotations

import pytest
import torch

from abaw.errors import ConfigError
from abaw.expr.models import MODELS, FusionConfig, build_model, model_config


@pytest.mark.parametrize("fuse", ["concat", "project"])
def test_per_frame_logits_for_every_position(fuse):
    model = build_model("fusion", FusionConfig(fuse=fuse, layers=2, project_dim=16), [12, 20, 7])
    x = torch.randn(3, 17, 39)
    assert model(x).shape == (3, 17, 8)
    # Positions are computed for any window length.
    assert model(torch.randn(1, 400, 39)).shape == (1, 400, 8)


def test_baseline_defaults_are_the_papers():
    cfg = FusionConfig()
    model = build_model("fusion", cfg, [888])
    assert (cfg.layers, cfg.heads, cfg.head_dim, cfg.mlp_dim, cfg.dropout) == (1, 2, 64, 512, 0.5)
    assert model.embed.out_features == 128
    assert len(model.encoder.layers) == 1


def test_project_fusion_projects_each_backbone_separately():
    model = build_model("fusion", FusionConfig(fuse="project", project_dim=8), [4, 6]).eval()
    x = torch.randn(2, 5, 10)
    x2 = x.clone()
    x2[..., 4:] += 1.0  # change only backbone 2
    h1, h2 = model.fuse(x), model.fuse(x2)
    assert h1.shape == (2, 5, 16)
    torch.testing.assert_close(h1[..., :8], h2[..., :8])  # backbone 1's projection untouched
    assert not torch.allclose(h1[..., 8:], h2[..., 8:])


def test_padding_does_not_change_real_frames():
    torch.manual_seed(0)
    model = build_model("fusion", FusionConfig(layers=2, dropout=0.0), [6]).eval()
    x = torch.randn(1, 10, 6)
    pad = torch.zeros(1, 10, dtype=torch.bool)
    pad[0, 7:] = True
    y = torch.randn(1, 10, 6)
    y[0, :7] = x[0, :7]  # same real frames, different padding content
    with torch.no_grad():
        a, b = model(x, pad), model(y, pad)
        c = model(x)  # without the mask, padding leaks into real frames
    torch.testing.assert_close(a[0, :7], b[0, :7])
    assert not torch.allclose(a[0, :7], c[0, :7])


def test_registry_and_errors():
    assert "fusion" in MODELS and model_config("fusion") is FusionConfig
    with pytest.raises(ConfigError, match="unknown expr model"):
        build_model("lstm9000", FusionConfig(), [4])
    with pytest.raises(ValueError, match="model.dropout"):
        FusionConfig(dropout=1.5)
    with pytest.raises(ValueError, match="model.fuse"):
        FusionConfig(fuse="sum")
