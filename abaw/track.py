"""The Track contract: everything track-specific, behind one interface.

The shared machinery (trainer, tuner, ensembler, submit, synth, inspect) never
asks "which track is this?"; it asks the track. `TRACKS` below is the one
registry of tracks: the CLI's `--track` choices, the sweep schema and
`get_track` all read it. A track module (`abaw/eri/track.py`,
`abaw/expr/track.py`) exposes `TRACK`, an object satisfying `Track`.

Flow of one run (`abaw train`; `abaw tune` does the same per trial):
    track = get_track(sweep.track)
    configs = build_configs(sweep.resolve(...), run_sections(track, sweep.model))
    task = track.prepare(data_dir, sweep.model, configs, device)   # loads data once
    result = fit(task, configs["train"], ...)                        # abaw.train
    task.predict(model, "devel") -> Predictions                     # the contract

The tuner keeps loaded data between trials with `DataCache`: a track says which
settings decide what is read from disk (`data_key`), loads it (`load_data`) and
builds a Task from data already in memory (`prepare(..., data=...)`), so a
sampled `data.max_len` or `data.window` re-slices instead of re-reading files.

The ensembler and the report ask the track, too: how to score plain arrays (`score_values`,
and the fast `scorer` of the selection loops), how to halve devel for the honest estimate
(`devel_halves`), which combination methods it allows (`ensemble_methods`), what
post-processing to fit on devel (`postprocessor`, a `PostProcessor`), and which per-column
scores and figures a report shows (`column_scores`, `report_figures`).
"""

from __future__ import annotations

import importlib
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from abaw.errors import ConfigError

if TYPE_CHECKING:  # kept out of the import so `abaw --help` and `abaw synth` start fast
    import numpy as np
    import torch
    from torch import nn

    from abaw.extraction import ExtractedRows, ExtractPlan, ExtractTarget
    from abaw.findings import InspectReport
    from abaw.metrics import Score
    from abaw.predictions import Predictions
    from abaw.problems import Problem

# The one registry of tracks: name -> module holding `TRACK`. Add a track here, nowhere else.
TRACKS: dict[str, str] = {"eri": "abaw.eri.track", "expr": "abaw.expr.track"}

Batch = dict[str, "torch.Tensor"]
Keys = dict[str, "np.ndarray"]  # key column name -> one entry per row (`Predictions.keys`)
Scorer = Callable[["np.ndarray"], float]  # values of the rows it was made for -> the metric


def track_names() -> tuple[str, ...]:
    """Registered track names, in registry order (the CLI's `--track` choices)."""
    return tuple(TRACKS)


@dataclass(frozen=True)
class DemoVariant:
    """One model variant `abaw demo` tunes: a shipped sweep, pinned small for a CPU."""

    study: str  # sweep file sweeps/<study>.toml; also the study's name
    pins: dict[str, Any] = field(default_factory=dict)  # settings pinned (left out of the search)
    share: float = 1.0  # share of the track's tuning budget
    features: tuple[str, ...] = ()  # feature sets it reads; the demo writes only those (): all


@dataclass
class Written:
    """What `Track.write_submission` wrote: the files, and what `abaw submit` needs to know."""

    files: list[Path]  # the challenge file(s), in the folder given
    rows: int  # rows written (samples / frames)
    notes: list[str]  # what the writer decided that a user should know
    check: Path  # what `validate_submission` reads back: one file, or the folder
    info: dict[str, Any] = field(default_factory=dict)  # plain facts for the manifest


@runtime_checkable
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


@runtime_checkable
class PostProcessor(Protocol):
    """Post-processing of ensembled values: fitted on labelled devel rows, applied to any rows.

    Made unfitted by `Track.postprocessor`; `clone` gives an unfitted copy with the same
    settings (the honest estimate refits it on each half of devel). `to_manifest` is the plain
    `postprocess` entry of an ensemble's manifest; `from_manifest` rebuilds the fitted state.
    """

    notes: list[str]  # what fitting decided that a user should know

    def fit(self, values: np.ndarray, labels: np.ndarray, keys: Keys) -> PostProcessor:
        """Choose the post-processing on these labelled rows; returns self."""
        ...

    def apply(self, values: np.ndarray, keys: Keys) -> np.ndarray:
        """The post-processed values of the rows `keys` (any rows of the track, any order)."""
        ...

    def clone(self) -> PostProcessor:
        """An unfitted copy with the same settings."""
        ...

    def to_manifest(self) -> dict[str, Any]:
        """The fitted choices as plain JSON values ({} when there is nothing to choose)."""
        ...

    def from_manifest(self, entry: dict[str, Any]) -> PostProcessor:
        """A fitted copy whose choices are `entry` (what `to_manifest` wrote)."""
        ...


@runtime_checkable
class Track(Protocol):
    """What the shared stages need to know about a track."""

    name: str  # the registry name, e.g. "eri"
    metric: str  # the challenge metric, e.g. "mean_pearson"
    columns: tuple[str, ...]  # prediction value columns, in challenge order
    keys: tuple[str, ...]  # prediction key columns that identify a row (sample ID; video, frame)
    synth_options: tuple[str, ...]  # keyword options `synth` takes beyond the common ones
    inspect_options: tuple[str, ...]  # keyword options `inspect` takes beyond the common ones
    submission_options: tuple[str, ...]  # keyword options of write_/validate_submission
    demo_variants: tuple[DemoVariant, ...]  # what `abaw demo` tunes for this track
    demo_share: float  # this track's share of the demo's tuning budget
    demo_disk_mb: dict[str, int]  # MB `abaw demo` writes for this track, per --scale (measured)
    title: str  # the name people use in messages, e.g. "ERI"
    split_by: str  # what `devel_halves` keeps on one side: "sample" | "video"
    ensemble_methods: tuple[str, ...]  # combination methods allowed, most recommended first
    score_label: str  # the per-column score in reports, e.g. "Pearson r"
    extract_options: tuple[str, ...]  # keyword options `extract_plan` takes (abaw extract)

    def models(self) -> list[str]:
        """Names of the registered model variants."""
        ...

    def sections(self, model: str) -> dict[str, type]:
        """Config dataclasses per section ("data", "model", "loss", "train", ...) for `model`."""
        ...

    def data_key(self, model: str, configs: dict[str, Any]) -> Hashable:
        """The settings that decide what `load_data` reads (equal keys -> the same data)."""
        ...

    def load_data(self, data_dir: Path, model: str, configs: dict[str, Any]) -> Any:
        """Read the data set from disk (the slow part of `prepare`), without touching a device."""
        ...

    def prepare(
        self,
        data_dir: Path,
        model: str,
        configs: dict[str, Any],
        device: torch.device,
        *,
        data: Any = None,
    ) -> Task:
        """A Task for the trainer; reads the data unless `data` (from `load_data`) is given."""
        ...

    def data_identity(self, data: Any) -> dict[str, Any]:
        """What makes a loaded data set (from `load_data`) the one a study was tuned on.

        Plain JSON: `root` (resolved folder), `layout`, `splits` (split -> size), `unit`
        (what `splits` counts, e.g. "samples"), `labels` (a hash of every key and label).
        `abaw tune` records it and refuses to resume a study on another data set.
        """
        ...

    def build_model(self, spec: dict[str, Any]) -> nn.Module:
        """Rebuild a model from a checkpoint's `model_spec` (the caller loads the weights)."""
        ...

    def cast_labels(self, labels: np.ndarray) -> np.ndarray:
        """Devel labels in the dtype the scorers take (e.g. class indices as int64)."""
        ...

    def score_values(
        self, labels: np.ndarray, values: np.ndarray, columns: Sequence[str] | None = None
    ) -> Score:
        """The challenge metric of plain arrays (`columns` name the per-column breakdown)."""
        ...

    def scorer(self, labels: np.ndarray) -> Scorer:
        """A fast scalar metric of values of these labelled rows (selection and grid loops)."""
        ...

    def devel_halves(self, keys: Keys, *, seed: int = 0) -> list[np.ndarray]:
        """Two disjoint row sets covering devel, split by `split_by` (the honest estimate)."""
        ...

    def postprocessor(
        self, *, columns: Sequence[str], enabled: bool = True, seed: int = 0
    ) -> PostProcessor:
        """The unfitted post-processing of ensembled values.

        `enabled` False keeps only what is always applied (e.g. clipping to the label range).
        """
        ...

    def column_scores(self, pred: Predictions) -> dict[str, float] | None:
        """Per-column devel scores of labelled predictions; None when nothing can be scored."""
        ...

    def report_figures(self, pred: Predictions, out: Path, *, what: str) -> dict[str, Path]:
        """The per-column figures of labelled devel predictions, as PNGs in `out` ({}: none)."""
        ...

    def synth(
        self,
        out: Path,
        *,
        scale: str = "small",
        seed: int = 0,
        difficulty: str = "normal",
        features: list[str] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Write a synthetic data set in the real layout; returns its oracle (oracle.json).

        `options` are the track's `synth_options` (e.g. an on-disk layout or file format).
        """
        ...

    def describe_oracle(self, oracle: dict[str, Any], out: Path) -> str:
        """One line for the user: what `synth` wrote into `out` and its ceiling scores."""
        ...

    def oracle_scores(self, oracle: dict[str, Any]) -> tuple[float, float | None]:
        """(devel, test) ceiling scores of a synthetic set's oracle (test None if unknown)."""
        ...

    def synthetic_test_score(self, data: Path, pred: Predictions | None) -> float | None:
        """The metric of test predictions against a synthetic set's hidden truth (None: none)."""
        ...

    def inspect(
        self,
        data_dir: Path,
        *,
        features: list[str] | None = None,
        use_cache: bool = True,
        **options: Any,
    ) -> InspectReport:
        """`abaw inspect --track <name>`: what the loaders find, and every problem.

        `options` are the track's `inspect_options` (e.g. explicit test-list paths).
        """
        ...

    def write_submission(
        self, pred: Predictions, data: Path, folder: Path, **options: Any
    ) -> Written:
        """Write the challenge file(s) of test `pred` into `folder` (`options`: submission_options)."""
        ...

    def validate_submission(self, path: Path, data: Path, **options: Any) -> list[Problem]:
        """Every problem of the submission at `path`; [] = accepted.

        Takes every one of `submission_options`; those that only shape the writing are ignored.
        """
        ...

    def extract_plan(self, data_dir: Path, *, name: str, **options: Any) -> ExtractPlan:
        """`abaw extract`: the targets of feature set `name` (media in, file out) and how to
        sample the media (abaw/extraction.py). `options` are the track's `extract_options`.

        Raises DataError naming what is missing (an annotated video without frames, a sample
        without media) before anything is computed.
        """
        ...

    def write_extracted(self, target: ExtractTarget, rows: ExtractedRows, path: Path) -> int | None:
        """Write one target's features to `path` in the layout the track's loader reads.

        Returns the rows in the file, or None when the target gets no file (no rows). The
        stage renames `path` into place, so a reader never sees a half-written file.
        """
        ...


def get_track(name: str) -> Track:
    """The Track object registered as `name` in TRACKS."""
    if name not in TRACKS:
        raise ConfigError(f"unknown track {name!r}; known: {sorted(TRACKS)}")
    return importlib.import_module(TRACKS[name]).TRACK


class DataCache:
    """Loaded data sets of one process, reused by every run with the same data settings.

    Keyed by (track, data folder, `track.data_key(model, configs)`); keeps the
    `max_entries` most recently used data sets (a tuner whose space changes which
    feature sets are read holds a few). `stats` records each `prepare`'s set-up time.
    """

    def __init__(self, max_entries: int = 2) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.loads = 0  # data sets read from disk
        self.hits = 0  # prepares served from memory

    def prepare(
        self,
        track: Track,
        data_dir: Path,
        model: str,
        configs: dict[str, Any],
        device: torch.device,
    ) -> tuple[Task, float]:
        """A Task for `configs`, reading the data only on a miss; returns (task, set-up seconds)."""
        t0 = time.perf_counter()
        data = self.load(track, data_dir, model, configs)
        task = track.prepare(Path(data_dir), model, configs, device, data=data)
        return task, time.perf_counter() - t0

    def load(self, track: Track, data_dir: Path, model: str, configs: dict[str, Any]) -> Any:
        """The data set `track.load_data` gives for these settings: kept, or read now and kept."""
        key = (track.name, str(Path(data_dir).resolve()), track.data_key(model, configs))
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]
        data = track.load_data(Path(data_dir), model, configs)
        self._entries[key] = data
        self.loads += 1
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return data
