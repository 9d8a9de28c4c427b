"""One model registry shape for both tracks: `register(name, config)`, `build`, `names`.

Each track's models.py owns one `Registry`; a model is a builder function
decorated with `@REGISTRY.register("name", ConfigClass)`. Registering a name
twice raises (a silently replaced model is a bug that shows only in results).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from abaw.errors import ConfigError

Builder = Callable[..., nn.Module]


class Registry:
    """Named model builders of one track, each with its config dataclass."""

    def __init__(self, track: str) -> None:
        self.track = track
        self._entries: dict[str, tuple[type, Builder]] = {}

    def register(self, name: str, config: type) -> Callable[[Builder], Builder]:
        """Decorator: register `fn(cfg, **inputs) -> nn.Module` under `name`; a duplicate raises."""

        def deco(fn: Builder) -> Builder:
            if name in self._entries:
                raise ValueError(
                    f"{self.track} model {name!r} is already registered "
                    f"(by {self._entries[name][1].__module__}.{self._entries[name][1].__name__})"
                )
            self._entries[name] = (config, fn)
            return fn

        return deco

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def config(self, name: str) -> type:
        """The config dataclass of `name` (ConfigError naming the known ones when unknown)."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.track} model {name!r}; registered: {self.names()}")
        return self._entries[name][0]

    def build(self, name: str, cfg: Any, **inputs: Any) -> nn.Module:
        """A fresh model `name`; `cfg` is its config dataclass or a dict of its fields."""
        cls = self.config(name)
        if isinstance(cfg, dict):
            cfg = cls(**cfg)
        return self._entries[name][1](cfg, **inputs)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __getitem__(self, name: str) -> tuple[type, Builder]:
        self.config(name)
        return self._entries[name]
