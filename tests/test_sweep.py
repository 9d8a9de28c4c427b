"""Sweep files: one schema, clear errors naming the file and key."""

from dataclasses import dataclass
from typing import Literal

import pytest

from abaw.errors import ConfigError
from abaw.sweep import build_configs, load_sweep, parse_overrides

GOOD = """
[study]
track = "eri"
model = "fusion"

[data]
features = { DeepSpectrum = "audio", "PosterV2-ViT" = "visual" }

[fixed]
"train.lr" = 1e-4
model = { embed_dim = 256 }

[space]
"train.lr" = { type = "float", low = 1e-5, high = 1e-3, log = true }
"model.depth" = { type = "int", low = 1, high = 4 }
model.variant = { type = "categorical", choices = ["A", "AVI"] }
"""


@dataclass
class Model:
    embed_dim: int = 128  # width
    depth: int = 1  # layers
    variant: Literal["A", "AVI"] = "AVI"  # modalities
    dropout: float = 0.5  # dropout


@dataclass
class Train:
    lr: float = 1e-3  # learning rate
    ema: bool = True  # EMA on/off


@dataclass
class Data:
    features: dict | None = None  # name -> modality


SECTIONS = {"model": Model, "train": Train, "data": Data}


def _write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_parse_good_sweep(tmp_path):
    s = load_sweep(_write(tmp_path, GOOD))
    assert (s.track, s.model, s.name, s.direction) == ("eri", "fusion", "s", "maximize")
    assert s.fixed["train.lr"] == 1e-4 and s.fixed["model.embed_dim"] == 256
    assert s.fixed["data.features"] == {"DeepSpectrum": "audio", "PosterV2-ViT": "visual"}
    assert set(s.space) == {"train.lr", "model.depth", "model.variant"}
    assert s.space["train.lr"].log and s.space["model.variant"].choices == ("A", "AVI")


def test_resolution_order_and_pinning(tmp_path):
    s = load_sweep(_write(tmp_path, GOOD))
    ov = parse_overrides(["train.lr=3e-4", "model.variant=A"])
    flat = s.resolve({"train.lr": 5e-5, "model.depth": 2}, ov)
    assert flat["train.lr"] == 3e-4 and flat["model.depth"] == 2 and flat["model.variant"] == "A"
    assert set(s.searchable(ov)) == {"model.depth"}
    cfg = build_configs(flat, SECTIONS, where="s.toml")
    assert cfg["model"] == Model(embed_dim=256, depth=2, variant="A")
    assert cfg["train"].lr == 3e-4 and cfg["train"].ema is True


def test_suggest_with_optuna(tmp_path):
    import optuna

    s = load_sweep(_write(tmp_path, GOOD))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = {k: spec.suggest(trial) for k, spec in s.space.items()}
    assert 1e-5 <= params["train.lr"] <= 1e-3 and params["model.depth"] in range(1, 5)
    assert params["model.variant"] in ("A", "AVI")


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[study]\ntrack = "eri"\nmodel = "fusion"\n[bogus]\nx = 1\n', "bogus"),
        ('[study]\ntrack = "eri"\nmodel = "fusion"\ncolour = "red"\n', "colour"),
        ('[study]\ntrack = "video"\nmodel = "fusion"\n', "track"),
        ('[study]\ntrack = "eri"\n', "model"),
        ('[study]\ntrack = "eri"\nmodel = "m"\n[fixed]\nlr = 1\n', "'lr'"),
        (
            '[study]\ntrack = "eri"\nmodel = "m"\n[space]\n"train.lr" = { type = "float", low = 1.0, high = 0.1 }\n',
            "train.lr",
        ),
        (
            '[study]\ntrack = "eri"\nmodel = "m"\n[space]\n"train.lr" = { type = "float", low = 0.0, high = 1.0, log = true }\n',
            "log",
        ),
        (
            '[study]\ntrack = "eri"\nmodel = "m"\n[space]\n"model.depth" = { type = "int", low = 1.5, high = 3 }\n',
            "model.depth",
        ),
        (
            '[study]\ntrack = "eri"\nmodel = "m"\n[space]\n"model.v" = { type = "categorical", choices = [] }\n',
            "model.v",
        ),
        (
            '[study]\ntrack = "eri"\nmodel = "m"\n[space]\n"model.v" = { type = "normal", low = 0, high = 1 }\n',
            "type",
        ),
        (
            '[study]\ntrack = "eri"\nmodel = "m"\n[space]\n"model.v" = { type = "float", low = 0, high = 1, stepp = 0.1 }\n',
            "stepp",
        ),
        ('[study]\ntrack = "eri"\nmodel = "m"\ndirection = "up"\n', "direction"),
        ("[study\n", "TOML"),
    ],
)
def test_bad_sweeps_name_file_and_key(tmp_path, text, needle):
    path = _write(tmp_path, text, "bad-sweep.toml")
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert "bad-sweep.toml" in str(e.value) and needle in str(e.value)


def test_missing_sweep_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml"):
        load_sweep(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "flat, needle",
    [
        ({"model.embed_dimm": 3}, "model.embed_dimm"),
        ({"optim.lr": 3}, "optim.lr"),
        ({"model.depth": 1.5}, "model.depth"),
        ({"model.depth": True}, "model.depth"),
        ({"train.ema": "yes"}, "train.ema"),
        ({"model.variant": "V"}, "model.variant"),
        ({"train.lr": "fast"}, "train.lr"),
    ],
)
def test_build_configs_errors(flat, needle):
    with pytest.raises(ConfigError) as e:
        build_configs(flat, SECTIONS, where="sweeps/x.toml")
    assert "sweeps/x.toml" in str(e.value) and needle in str(e.value)


def test_overrides_parse_toml_literals():
    ov = parse_overrides(["a.b=1", "a.c=1e-3", "a.d=true", 'a.e="x"', "a.f=[1, 2]", "a.g=plain"])
    assert ov == {"a.b": 1, "a.c": 1e-3, "a.d": True, "a.e": "x", "a.f": [1, 2], "a.g": "plain"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])
    with pytest.raises(ConfigError, match="section"):
        parse_overrides(["lr=1"])
