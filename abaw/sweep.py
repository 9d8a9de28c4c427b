"""Sweep files: one TOML file per model variant, with fixed settings and a search space.

One schema for both tracks (documented in docs/sweeps.md)::

    [study]
    track = "eri"                 # eri | expr
    model = "fusion"              # a model registered in the track's models.py
    metric = "mean_pearson"       # optional; default: the track's metric
    direction = "maximize"        # optional; maximize | minimize
    name = "eri-fusion"           # optional; default: the file's stem

    [data]                        # what to load; becomes fixed `data.*` values
    features = { DeepSpectrum = "audio", "PosterV2-ViT" = "visual" }

    [fixed]                       # dotted keys: <section>.<field>
    "model.embed_dim" = 256
    train = { lr = 1e-4 }         # nested tables are flattened to dotted keys

    [space]                       # Optuna search space
    "train.lr" = { type = "float", low = 1e-5, high = 1e-3, log = true }
    "model.depth" = { type = "int", low = 1, high = 4 }
    "model.dropout" = { type = "float", low = 0.1, high = 0.6, step = 0.1 }
    "model.variant" = { type = "categorical", choices = ["A", "V", "AV", "AVI"] }

Settings resolve as: dataclass defaults < [fixed] and [data] < sampled [space]
values < `--set key=value` overrides (a `--set` key is also removed from the
search space, so a user can pin one parameter of a study from the command line).
Every mistake is a ConfigError naming the file (or `--set`) and the key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abaw.errors import ConfigError
from abaw.track import TRACKS

PARAM_TYPES = ("float", "int", "categorical")
_STUDY_KEYS = {"track", "model", "metric", "direction", "name"}
_TOP_KEYS = {"study", "data", "fixed", "space"}


@dataclass(frozen=True)
class ParamSpec:
    """One dimension of the search space."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for a value of this parameter."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                self.name, self.low, self.high, log=self.log, step=self.step or 1
            )
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass
class Sweep:
    """A parsed sweep file."""

    path: Path
    track: str
    model: str
    name: str
    metric: str | None = None
    direction: str = "maximize"
    fixed: dict[str, Any] = field(default_factory=dict)
    space: dict[str, ParamSpec] = field(default_factory=dict)

    def resolve(
        self, params: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Flat dotted settings for one run: fixed < sampled params < overrides."""
        flat = dict(self.fixed)
        flat.update(params or {})
        flat.update(overrides or {})
        return flat

    def searchable(self, overrides: dict[str, Any] | None = None) -> dict[str, ParamSpec]:
        """The search space minus parameters pinned by `--set`."""
        pinned = set(overrides or ())
        return {k: v for k, v in self.space.items() if k not in pinned}


def _flatten(
    table: dict[str, Any], prefix: str = "", *, stop_at_type: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not (stop_at_type and "type" in v):
            out.update(_flatten(v, key + ".", stop_at_type=stop_at_type))
        else:
            out[key] = v
    return out


def _check_dotted(key: str, where: str) -> None:
    if key.count(".") < 1 or any(not part for part in key.split(".")):
        raise ConfigError(f"{where}: key {key!r} must be '<section>.<field>', e.g. 'train.lr'")


def _parse_param(name: str, spec: Any, where: str) -> ParamSpec:
    if not isinstance(spec, dict):
        raise ConfigError(
            f'{where}: [space] {name!r} must be a table like {{ type = "float", low = 0.1, high = 1.0 }}, found {spec!r}'
        )
    allowed = {"type", "low", "high", "log", "step", "choices"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(
            f"{where}: [space] {name!r} has unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(
            f"{where}: [space] {name!r} type must be one of {PARAM_TYPES}, found {kind!r}"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: [space] {name!r} needs a non-empty list 'choices'")
        if set(spec) - {"type", "choices"}:
            raise ConfigError(
                f"{where}: [space] {name!r} is categorical: only 'choices' is allowed"
            )
        return ParamSpec(name, kind, choices=tuple(choices))
    low, high, log, step = (
        spec.get("low"),
        spec.get("high"),
        spec.get("log", False),
        spec.get("step"),
    )
    num = (int,) if kind == "int" else (int, float)
    for label, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, num):
            raise ConfigError(
                f"{where}: [space] {name!r} needs a numeric {label!r} ({kind}), found {v!r}"
            )
        if not math.isfinite(v):
            raise ConfigError(f"{where}: [space] {name!r} {label} must be finite, found {v!r}")
    if low > high:
        raise ConfigError(f"{where}: [space] {name!r} has low {low} > high {high}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: [space] {name!r} 'log' must be true or false, found {log!r}")
    if log and low <= 0:
        raise ConfigError(
            f"{where}: [space] {name!r} is log-scaled, so low must be > 0, found {low}"
        )
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, num) or step <= 0:
            raise ConfigError(
                f"{where}: [space] {name!r} step must be a positive {kind}, found {step!r}"
            )
        if log and kind == "float":
            raise ConfigError(f"{where}: [space] {name!r} cannot have both log = true and a step")
    return ParamSpec(name, kind, low, high, log, step)


SHIPPED_SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"  # a checkout's sweeps/


def _sweeps_near(path: Path) -> str:
    """'; sweeps in DIR: a.toml, b.toml' (closest name first) for a mistyped sweep path:
    next to it, then ./sweeps, then the sweeps shipped with this checkout (a demo folder or
    a team's own project folder has no sweeps/ of its own)."""
    import difflib

    for folder in (path.parent, Path("sweeps"), SHIPPED_SWEEPS):
        found = sorted(folder.glob("*.toml")) if folder.is_dir() else []
        if found:
            names = [f.name for f in found]
            close = difflib.get_close_matches(path.name, names, n=len(names), cutoff=0.0)
            return f"; sweeps in {folder}: {', '.join(close)} (closest first)"
    return f"; no sweep files (*.toml) next to it, in sweeps/ or in {SHIPPED_SWEEPS}"


def load_sweep(path: str | Path) -> Sweep:
    """Parse and validate a sweep file; raise ConfigError naming the file and key on any mistake."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ConfigError(f"{where}: sweep file not found{_sweeps_near(path)}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: not valid TOML ({e})") from None
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}"
        )
    study = doc.get("study")
    if not isinstance(study, dict):
        raise ConfigError(f"{where}: missing [study] table with track and model")
    unknown = set(study) - _STUDY_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: [study] has unknown key(s) {sorted(unknown)}; allowed: {sorted(_STUDY_KEYS)}"
        )
    track = study.get("track")
    if track not in TRACKS:
        raise ConfigError(f"{where}: [study] track must be one of {tuple(TRACKS)}, found {track!r}")
    model = study.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{where}: [study] model must be a model name, found {model!r}")
    direction = study.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(
            f"{where}: [study] direction must be 'maximize' or 'minimize', found {direction!r}"
        )
    metric = study.get("metric")
    name = study.get("name", path.stem)
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"{where}: [study] name must be a plain string, found {name!r}")

    fixed: dict[str, Any] = {}
    data = doc.get("data", {})
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: [data] must be a table")
    for k, v in data.items():
        fixed[f"data.{k}"] = v  # tables under [data] (feature -> modality maps) stay whole
    section = doc.get("fixed", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: [fixed] must be a table")
    for k, v in _flatten(section).items():
        _check_dotted(k, f"{where}: [fixed]")
        fixed[k] = v
    space_doc = doc.get("space", {})
    if not isinstance(space_doc, dict):
        raise ConfigError(f"{where}: [space] must be a table")
    space = {}
    for k, v in _flatten(space_doc, stop_at_type=True).items():
        _check_dotted(k, f"{where}: [space]")
        space[k] = _parse_param(k, v, where)
    return Sweep(path, track, model, name, metric, direction, fixed, space)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse `--set key=value` items; values are TOML literals (1e-4, true, "x", [1, 2]) or bare strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.lr=3e-4")
        key, raw = item.split("=", 1)
        key = key.strip()
        _check_dotted(key, f"--set {item!r}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[key] = value
    return out


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {key!r} expected {hint}, found {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key!r} must be one of {list(args)}, found {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key!r} expected true or false, found {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key!r} expected an integer, found {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {key!r} expected a number, found {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key!r} expected a string, found {value!r}")
        return value
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: {key!r} expected a list, found {value!r}")
        inner = args[0] if args and args[0] is not Ellipsis else None
        items = [_coerce(v, inner, key, where) if inner else v for v in value]
        return tuple(items) if (origin or hint) is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key!r} expected a table, found {value!r}")
        return dict(value)
    return value


def build_configs(
    flat: dict[str, Any],
    sections: dict[str, type],
    *,
    where: str = "config",
    overridden: Iterable[str] = (),
) -> dict[str, Any]:
    """Turn flat dotted settings into one dataclass instance per section.

    Args:
        flat: {"train.lr": 1e-4, "model.embed_dim": 256, ...}.
        sections: {"train": TrainConfig, "model": FusionConfig, ...} dataclass types.
        where: the sweep file to name in errors.
        overridden: keys that came from `--set`; an error about one of them names
            that key only ("<file> (with --set train.lr)"), not every override.

    Unknown sections or fields, and values of the wrong type, raise ConfigError.
    """
    pinned = set(overridden)
    base = where

    def at(key: str) -> str:
        return f"{base} (with --set {key})" if key in pinned else base

    grouped: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for key, value in flat.items():
        sec, _, fld = key.partition(".")
        if sec not in sections:
            raise ConfigError(
                f"{at(key)}: unknown section in key {key!r}; known sections: {sorted(sections)}"
            )
        grouped[sec][fld] = value
    out = {}
    for sec, cls in sections.items():
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        kwargs = {}
        for fld, value in grouped[sec].items():
            key = f"{sec}.{fld}"
            if fld not in names:
                raise ConfigError(
                    f"{at(key)}: unknown key '{key}'; known keys in [{sec}]: {', '.join(sorted(names))}"
                )
            kwargs[fld] = _coerce(value, hints[fld], key, at(key))
        try:
            out[sec] = cls(**kwargs)
        except (ValueError, TypeError) as e:
            mine = sorted(k for k in pinned if k.partition(".")[0] == sec)
            tag = f"{base} (with --set {', '.join(mine)})" if mine else base
            raise ConfigError(f"{tag}: invalid [{sec}] settings: {e}") from None
    return out


def config_to_dict(configs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Plain nested dict of section dataclasses (for checkpoints and logs: JSON-able)."""
    return {sec: dataclasses.asdict(cfg) for sec, cfg in configs.items()}
