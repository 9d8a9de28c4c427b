"""The shared model registry: one shape for both tracks, a duplicate name raises."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from torch import nn

from abaw.eri import models as eri_models
from abaw.errors import ConfigError
from abaw.expr import models as expr_models
from abaw.registry import Registry


@dataclass
class Cfg:
    width: int = 3


def test_register_build_names_and_dict_config():
    reg = Registry("demo")

    @reg.register("lin", Cfg)
    def lin(cfg: Cfg, d_in: int) -> nn.Module:
        return nn.Linear(d_in, cfg.width)

    assert reg.names() == ["lin"] and "lin" in reg and list(reg) == ["lin"]
    assert reg.config("lin") is Cfg
    m = reg.build("lin", Cfg(width=5), d_in=2)
    assert m.out_features == 5
    assert reg.build("lin", {"width": 4}, d_in=2).out_features == 4  # as stored in checkpoints


def test_duplicate_name_raises_and_unknown_is_a_config_error():
    reg = Registry("demo")
    reg.register("a", Cfg)(lambda cfg: nn.Identity())
    with pytest.raises(ValueError, match="'a' is already registered"):
        reg.register("a", Cfg)(lambda cfg: nn.Identity())
    with pytest.raises(ConfigError, match="unknown demo model 'b'; registered: \\['a'\\]"):
        reg.build("b", Cfg())


def test_both_tracks_use_the_shared_registry():
    assert isinstance(eri_models.MODELS, Registry) and isinstance(expr_models.MODELS, Registry)
    assert eri_models.MODELS.names() == ["fusion", "lstm", "pooled"]
    assert expr_models.MODELS.names() == ["fusion"]
    with pytest.raises(ValueError, match="already registered"):
        expr_models.register("fusion", expr_models.FusionConfig)(expr_models.fusion)
    with pytest.raises(ValueError, match="already registered"):
        eri_models.MODELS.register("pooled", eri_models.PooledConfig)(eri_models.pooled)
