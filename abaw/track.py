"""The Track contract: everything track-specific, behind one interface.

The shared machinery (trainer, tuner, ensembler, submit) never asks "which
track is this?"; it asks the track. A track module (`abaw/eri/track.py`,
`abaw/expr/track.py`) exposes `TRACK`, an object satisfying `Track`.

Flow of one run:
    track = get_track(sweep.track)
    configs = build_configs(sweep.resolve(...), track.sections(sweep.model))
    task = track.prepare(data_dir, sweep.model, configs, device)   # loads data once
    result = fit(task, configs["train"], ...)                        # abaw.train
    task.predict(model, "devel") -> Predictions                     # the contract
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from abaw.errors import ConfigError
from abaw.metrics import Score
from abaw.predictions import Predictions

Batch = dict[str, torch.Tensor]


class Task(Protocol):
    """Data and settings of one run, ready for the trainer; built by `Track.prepare`.

    A task owns its data on the chosen device and knows how to turn the model's
    output into a loss, predictions and a score. The trainer owns the loop,
    optimiser, EMA, clipping, early stopping and checkpoints.
    """

    track: str
    metric: str
    notes: list[str]  # data-policy notes printed before training (e.g. dropped samples)
    model_spec: dict[str, Any]  # plain values from which `Track.build_model` rebuilds the model

    def build_model(self) -> nn.Module:
        """A fresh model for this run's config (on CPU; the trainer moves it)."""
        ...

    def train_batches(self, *, epoch: int, generator: torch.Generator) -> Iterable[Batch]:
        """Shuffled training batches for one epoch, already on the task's device."""
        ...

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Scalar training loss of `model` on `batch`."""
        ...

    def predict(self, model: nn.Module, split: str) -> Predictions:
        """Predictions for every sample / frame of `split` ("devel" or "test"); model in eval mode."""
        ...

    def score(self, predictions: Predictions) -> Score:
        """The challenge metric of labelled predictions (devel)."""
        ...

    def summary(self, predictions: Predictions) -> list[Any]:
        """Rich tables printed at the end of `abaw train` (per-emotion r; per-class F1 + confusion)."""
        ...


class Track(Protocol):
    """What the shared stages need to know about a track."""

    name: str  # "eri" | "expr"
    metric: str  # "mean_pearson" | "macro_f1"
    columns: tuple[str, ...]  # prediction value columns, in challenge order

    def models(self) -> list[str]:
        """Names of the registered model variants."""
        ...

    def sections(self, model: str) -> dict[str, type]:
        """Config dataclasses per section ("data", "model", "loss", "train", ...) for `model`."""
        ...

    def prepare(
        self, data_dir: Path, model: str, configs: dict[str, Any], device: torch.device
    ) -> Task:
        """Load the data set once and return a Task for the trainer."""
        ...

    def build_model(self, spec: dict[str, Any]) -> nn.Module:
        """Rebuild a model from a checkpoint's `model_spec` (the caller loads the weights)."""
        ...


_TRACK_MODULES = {"eri": "abaw.eri.track", "expr": "abaw.expr.track"}


def get_track(name: str) -> Track:
    """The Track object for `name` ("eri" or "expr")."""
    if name not in _TRACK_MODULES:
        raise ConfigError(f"unknown track {name!r}; known: {sorted(_TRACK_MODULES)}")
    return importlib.import_module(_TRACK_MODULES[name]).TRACK
