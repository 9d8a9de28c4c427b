"""The Expr track as the shared machinery sees it (`abaw.track.Track`).

Names, metric and model variants, reading the data, and the hooks every stage asks of a
track: synth, inspect, submission, demo, ensemble (scoring, devel halves, post-processing in
`abaw/expr/postprocess.py`) and report (per-class scores and figures). The training task
itself (configs, data on the device, loss, predictions, score) is in `abaw/expr/task.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abaw.errors import AbawError, ConfigError
from abaw.expr import CLASSES
from abaw.expr.models import MODELS, build_model, model_config
from abaw.expr.postprocess import ExprPostprocess, f1_scorer
from abaw.expr.smoothing import SmoothingConfig
from abaw.expr.task import (  # noqa: F401  (re-exported: their home before abaw.expr.task)
    ALPHA_KINDS,
    ExprDataConfig,
    ExprTask,
    FocalConfig,
    class_alpha,
    summary_tables,
)
from abaw.extraction import ExtractedRows, ExtractPlan, ExtractTarget
from abaw.leakage import LEAKAGE
from abaw.metrics import Score, macro_f1
from abaw.predictions import Predictions
from abaw.problems import Problem
from abaw.track import DemoVariant, Keys, Scorer, Written

# What `abaw demo` tunes: the multi-backbone fusion and the single-backbone RegNet baseline,
# each with one layer and 64-frame windows so trials take seconds on a CPU.
_DEMO_PINS = {
    "train.epochs": 6,
    "train.patience": 3,
    "model.layers": 1,
    "data.window": 64,
    "data.stride": 64,
}
DEMO_VARIANTS = (
    DemoVariant("expr-fusion", dict(_DEMO_PINS), 0.6),
    DemoVariant("expr-regnet", dict(_DEMO_PINS), 0.4),
)


# Per-file data warnings a training run repeats (the rest stay in `abaw inspect`): features
# covering part of a video, two feature files for one video. Why: a wrong file pairing
# trains without a word otherwise; at most _FILE_NOTES of them, then a count.
_FILE_MARKS = (": features end at frame", ": features cover", "has two feature files")
_FILE_NOTES = 3


def _file_notes(warnings: Sequence[str]) -> list[str]:
    """The per-file warnings among `warnings`, the first few, then how many more."""
    hits = [w for w in warnings if any(m in w for m in _FILE_MARKS)]
    more = len(hits) - _FILE_NOTES
    tail = [f"{more} more such warnings: `abaw inspect --track expr` lists them"]
    return hits[:_FILE_NOTES] + (tail if more > 0 else [])


class ExprTrack:
    """The Expr track as the shared stages see it."""

    name = "expr"
    metric = "macro_f1"
    columns = CLASSES
    keys = ("video", "frame")
    synth_options = ("feature_format",)  # per-frame feature files: "npy" | "csv"
    inspect_options = ("test_frames", "test_videos")  # explicit test-list paths
    submission_options = ("fmt", "frames")  # "single" (ABAW5/6) | "per-video"; frame list path
    demo_variants = DEMO_VARIANTS
    demo_share = 0.6  # Expr trials are slower (per-frame windows)
    demo_disk_mb = {"tiny": 45, "small": 1950}  # measured (docs/benchmarks.md, `abaw demo`)
    title = "Expr"
    split_by = "video"  # neighbouring frames are near copies: a video stays on one side
    ensemble_methods = ("greedy", "mean")
    score_label = "F1"
    extract_options = ("images",)  # abaw extract: media, sampling

    def models(self) -> list[str]:
        """Names of the registered models."""
        return sorted(MODELS)

    def sections(self, model: str) -> dict[str, type]:
        """Config dataclasses of each section of a sweep for `model`."""
        return {
            "data": ExprDataConfig,
            "model": model_config(model),
            "loss": FocalConfig,
            "predict": SmoothingConfig,
        }  # the trainer adds its own "train" section (abaw.train.run_sections)

    def data_key(self, model: str, configs: dict[str, Any]) -> tuple:
        """What `load_data` reads: backbones, cache switch, fill policy and test lists."""
        cfg = configs.get("data") or ExprDataConfig()
        return (
            tuple(cfg.backbones) if cfg.backbones else None,
            cfg.use_cache,
            cfg.fill,
            cfg.test_frames,
            cfg.test_videos,
        )

    def load_data(self, data_dir: Path, model: str, configs: dict[str, Any]) -> Any:
        """Open the feature store (built on first use); windows are cut later, per task."""
        from abaw.expr.data import load_expr

        backbones, use_cache, fill, test_frames, test_videos = self.data_key(model, configs)
        return load_expr(
            data_dir,
            list(backbones) if backbones else None,
            use_cache=use_cache,
            fill=fill,
            test_frames=test_frames,
            test_videos=test_videos,
        )

    def data_identity(self, data: Any) -> dict[str, Any]:
        """Root, layout, split sizes and a label fingerprint of loaded data (studies record it)."""
        from abaw.expr.data import data_identity

        return data_identity(data)

    def prepare(
        self,
        data_dir: Path,
        model: str,
        configs: dict[str, Any],
        device: torch.device,
        *,
        data: Any = None,
    ) -> ExprTask:
        """Load the data set once (unless given; features streamed from the store) and return the task."""
        if data is None:
            data = self.load_data(data_dir, model, configs)
        task = ExprTask(data, model, configs, device)
        # Say loudly what a run without a test set produces (and data-layer warnings about
        # the test lists): an empty predictions-test.npz must never pass for a real one.
        task.notes += [w for w in data.warnings if w.startswith(("NO TEST SET", LEAKAGE))]
        task.notes += _file_notes(data.warnings)
        return task

    def synth(
        self,
        out: Path,
        *,
        scale: str = "small",
        seed: int = 0,
        difficulty: str = "normal",
        features: list[str] | None = None,
        feature_format: str = "npy",
    ) -> dict[str, Any]:
        """Write a synthetic Aff-Wild2 set (per-frame features as `feature_format`); its oracle."""
        from abaw.expr.synth import write_expr

        return write_expr(
            out,
            scale=scale,
            seed=seed,
            backbones=features,
            feature_format=feature_format,
            difficulty=difficulty,
        )

    def describe_oracle(self, oracle: dict[str, Any], out: Path) -> str:
        """What `synth` wrote and its ceiling, in one line."""
        from abaw.expr.synth import describe_oracle

        return describe_oracle(oracle, out)

    def oracle_scores(self, oracle: dict[str, Any]) -> tuple[float, float | None]:
        """(devel, test) macro F1 of the synthetic set's ideal predictor."""
        s = oracle["splits"]
        return s["devel"]["macro_f1"], s.get("test", {}).get("macro_f1")

    def synthetic_test_score(self, data: Path, pred: Predictions | None) -> float | None:
        """Macro F1 of test predictions against `.oracle/test_labels/<video>.npy` (None: absent)."""
        if pred is None or len(pred) == 0:
            return None
        root = Path(data) / ".oracle" / "test_labels"
        if not root.is_dir():
            return None
        labels = np.full(len(pred), -1, dtype=np.int64)
        videos, frames = pred.keys["video"], pred.keys["frame"].astype(np.int64)
        for v in np.unique(videos):
            path = root / f"{v}.npy"
            if not path.is_file():
                return None
            y = np.load(path, allow_pickle=False)
            rows = np.flatnonzero(videos == v)
            f = frames[rows] - 1
            ok = (f >= 0) & (f < len(y))
            labels[rows[ok]] = y[f[ok]]
        return macro_f1(labels, pred.values.argmax(axis=1)).value

    def inspect(
        self,
        data_dir: Path,
        *,
        features: list[str] | None = None,
        use_cache: bool = True,
        test_frames: str | None = None,
        test_videos: str | None = None,
    ):
        """`abaw inspect --track expr` (test lists found by name unless given)."""
        from abaw.expr.data import inspect_data

        if isinstance(features, dict):
            raise ConfigError(
                "--features: Expr backbones have no modality; name them only, e.g. "
                "--features IRv1-VGGFace2,MyViT"
            )

        return inspect_data(
            Path(data_dir),
            features=features,
            use_cache=use_cache,
            test_frames=test_frames,
            test_videos=test_videos,
        )

    def build_model(self, spec: dict) -> nn.Module:
        """Rebuild a model from a checkpoint's `model_spec` (no data needed)."""
        cls = model_config(spec["model"])
        return build_model(spec["model"], cls(**spec["config"]), spec["dims"])

    def cast_labels(self, labels: np.ndarray) -> np.ndarray:
        """Class indices as int64 (-1 = not annotated), as the F1 bincount needs."""
        return labels.astype(np.int64)

    def score_values(
        self, labels: np.ndarray, values: np.ndarray, columns: Sequence[str] | None = None
    ) -> Score:
        """Macro F1 of the argmax over the annotated frames."""
        return macro_f1(labels, values.argmax(axis=1), values.shape[1], columns)

    def scorer(self, labels: np.ndarray) -> Scorer:
        """Macro F1 from one bincount (the offset search scores thousands of candidates)."""
        return f1_scorer(labels)

    def devel_halves(self, keys: Keys, *, seed: int = 0) -> list[np.ndarray]:
        """Whole videos on each side, about half the frames each (greedy by frame count)."""
        rng = np.random.default_rng(seed)
        vids, inv, counts = np.unique(keys["video"], return_inverse=True, return_counts=True)
        if len(vids) < 2:
            raise AbawError("the honest estimate needs at least 2 devel videos")
        side = np.zeros(len(vids), np.int64)
        load = [0, 0]
        for v in rng.permutation(len(vids)):
            s = int(load[1] < load[0])
            side[v] = s
            load[s] += int(counts[v])
        return [np.flatnonzero(side[inv] == s) for s in (0, 1)]

    def postprocessor(
        self, *, columns: Sequence[str], enabled: bool = True, seed: int = 0
    ) -> ExprPostprocess:
        """Temporal smoothing and checked class offsets, chosen on devel."""
        return ExprPostprocess(columns, enabled=enabled, seed=seed)

    def column_scores(self, pred: Predictions) -> dict[str, float] | None:
        """F1 per class over the annotated frames (None when no frame is annotated)."""
        if pred.labels is None:
            return None
        labels = np.asarray(pred.labels).astype(np.int64).ravel()
        if not (labels != -1).any():
            return None
        return self.score_values(labels, pred.values, pred.columns).per_column

    def report_figures(self, pred: Predictions, out: Path, *, what: str) -> dict[str, Path]:
        """F1 per class and the confusion matrix ({} without annotated frames)."""
        from abaw.expr.figures import devel_figures

        per = self.column_scores(pred)
        return {} if per is None else devel_figures(pred, per, out, what)

    def write_submission(
        self,
        pred: Predictions,
        data: Path,
        folder: Path,
        *,
        fmt: str = "single",
        frames: str | Path | None = None,
    ) -> Written:
        """Write the single file or the per-video files into `folder` (see abaw.expr.submission)."""
        from abaw.expr.submission import FORMATS, write_submission

        if fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {FORMATS}, got {fmt!r}")
        files, rows, notes = write_submission(pred, data, folder, fmt=fmt, frames=frames)
        check = folder if fmt == "per-video" else files[0]
        return Written(files, rows, notes, check, {"format": fmt, "id_style": None})

    def validate_submission(
        self,
        path: Path,
        data: Path,
        *,
        fmt: str | None = None,
        frames: str | Path | None = None,
    ) -> list[Problem]:
        """Every problem of the submission at `path` (see abaw.expr.submission).

        The format is read from `path` (a file: single; a folder or zip of .txt: per-video).
        """
        from abaw.expr.submission import validate_submission

        return validate_submission(path, data, frames=frames)

    def extract_plan(self, data_dir: Path, *, name: str, **options: Any) -> ExtractPlan:
        """`abaw extract`: which files feature set `name` holds and where their media are."""
        from abaw.expr.extract import extract_plan

        return extract_plan(Path(data_dir), name=name, **options)

    def write_extracted(self, target: ExtractTarget, rows: ExtractedRows, path: Path) -> int | None:
        """One extracted output in the loader's layout (see abaw.expr.extract)."""
        from abaw.expr.extract import write_extracted

        return write_extracted(target, rows, path)


TRACK = ExprTrack()
