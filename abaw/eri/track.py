"""The ERI track as the shared machinery sees it (`abaw.track.Track`).

Names, metric and model variants, reading the data, and the hooks every stage asks of a
track: synth, inspect, submission, demo, ensemble (scoring, devel halves, post-processing)
and report (per-emotion scores and figures). The training task itself (configs, data on the
device, loss, predictions, score) is in `abaw/eri/task.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abaw.eri import EMOTIONS
from abaw.eri import models as eri_models
from abaw.eri.postprocess import ClipPostprocess
from abaw.eri.task import (  # noqa: F401  (re-exported: their home before abaw.eri.task)
    EriDataConfig,
    EriLossConfig,
    EriTask,
    auto_max_len,
    feature_groups,
    gather_index,
)
from abaw.errors import ConfigError
from abaw.extraction import ExtractedRows, ExtractPlan, ExtractTarget
from abaw.leakage import LEAKAGE
from abaw.metrics import Score, mean_pearson
from abaw.predictions import Predictions
from abaw.problems import Problem
from abaw.track import DemoVariant, Keys, Scorer, Written

# What `abaw demo` tunes: the recommended fusion (masked-mean read-out, width 32 so a trial
# takes seconds) and a different model on the same features as the ensemble's second
# opinion. Measured on the demo data: +0.0015 to +0.0064 honest gain with the fusion, against
# -0.0002 to +0.0036 with eri-lstm, whose visual-only trials are 0.06 weaker
# (docs/benchmarks.md). Pins shrink trials, they do not change the method.
DEMO_VARIANTS = (
    DemoVariant(
        "eri-fusion-mean",
        {"model.embed_dim": 32, "model.readout": "mean", "train.epochs": 15, "train.patience": 4},
        0.6,
        ("DeepSpectrum", "PosterV2-ViT"),
    ),
    DemoVariant(
        "eri-pooled",
        {"train.epochs": 30, "train.patience": 8},
        0.4,
        ("DeepSpectrum", "PosterV2-ViT"),
    ),
)


class EriTrack:
    """The ERI track (Hume-Reaction): 7 intensities per sample, mean Pearson."""

    name = "eri"
    metric = "mean_pearson"
    columns = EMOTIONS
    keys = ("id",)
    synth_options = ("layout",)  # "muse" (feats/, labels.csv, partition.csv) | "abaw5"
    inspect_options = ()
    submission_options = ("id_style",)  # "as-data" | "bracketed" | "bare"
    demo_variants = DEMO_VARIANTS
    demo_share = 0.4  # ERI trials are faster than Expr's (no per-frame windows)
    demo_disk_mb = {"tiny": 20, "small": 430}  # measured (docs/benchmarks.md, `abaw demo`)
    title = "ERI"
    split_by = "sample"  # samples are independent: devel halves are random samples
    ensemble_methods = ("greedy", "stack", "mean")
    score_label = "Pearson r"
    extract_options = ("videos", "audio", "fps", "window", "hop")  # abaw extract: media, sampling

    def models(self) -> list[str]:
        """Registered model variants."""
        return list(eri_models.MODELS)

    def sections(self, model: str) -> dict[str, type]:
        """Config dataclasses per sweep section for `model`."""
        if model not in eri_models.MODELS:
            raise ConfigError(f"unknown ERI model {model!r}; known: {self.models()}")
        return {
            "data": EriDataConfig,
            "model": eri_models.MODELS[model][0],
            "loss": EriLossConfig,
        }  # the trainer adds its own "train" section (abaw.train.run_sections)

    def data_key(self, model: str, configs: dict[str, Any]) -> tuple:
        """What `load_data` reads: the used feature sets, their modalities, cache and z-scoring."""
        dc: EriDataConfig = configs["data"]
        groups = feature_groups(model, configs["model"], dc)
        names = sorted({f for fs in groups.values() for f in fs})
        return (tuple((f, dc.features[f]) for f in names), dc.use_cache, dc.standardize)

    def load_data(self, data_dir: Path, model: str, configs: dict[str, Any]) -> Any:
        """Read the feature sets the model needs (max_len and cut are applied later, per task)."""
        from abaw.eri.data import load_eri

        features, use_cache, standardize = self.data_key(model, configs)
        return load_eri(
            Path(data_dir), dict(features), use_cache=use_cache, standardize=standardize
        )

    def data_identity(self, data: Any) -> dict[str, Any]:
        """Root, layout, split sizes and a label fingerprint of loaded data (studies record it)."""
        from abaw.eri.data import data_identity

        return data_identity(data)

    def prepare(
        self,
        data_dir: Path,
        model: str,
        configs: dict[str, Any],
        device: torch.device,
        *,
        data: Any = None,
    ) -> EriTask:
        """Load the features the model needs (unless given) and put them on `device`."""
        if data is None:
            data = self.load_data(data_dir, model, configs)
        task = EriTask(data, model, configs, device)
        task.notes += [w for w in data.warnings if w.startswith(LEAKAGE)]  # loud at train time
        return task

    def synth(
        self,
        out: Path,
        *,
        scale: str = "small",
        seed: int = 0,
        difficulty: str = "normal",
        features: list[str] | None = None,
        layout: str = "muse",
    ) -> dict[str, Any]:
        """Write a synthetic Hume-Reaction set in `layout`; returns its oracle."""
        from abaw.eri.synth import write_eri

        try:
            return write_eri(
                out,
                scale=scale,
                seed=seed,
                layout=layout,
                features=features,
                difficulty=difficulty,
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def describe_oracle(self, oracle: dict[str, Any], out: Path) -> str:
        """What `synth` wrote and its ceiling, in one line."""
        from abaw.eri.synth import describe_oracle

        return describe_oracle(oracle, out)

    def oracle_scores(self, oracle: dict[str, Any]) -> tuple[float, float | None]:
        """(devel, test) mean Pearson of the synthetic set's ideal predictor."""
        return oracle["devel"]["mean_pearson"], oracle.get("test", {}).get("mean_pearson")

    def synthetic_test_score(self, data: Path, pred: Predictions | None) -> float | None:
        """Mean Pearson of test predictions against `.oracle/test_labels.csv` (None: absent)."""
        if pred is None or len(pred) == 0:
            return None
        path = Path(data) / ".oracle" / "test_labels.csv"
        if not path.is_file():
            return None
        import pandas as pd

        truth = pd.read_csv(path, dtype={"File_ID": str}).set_index("File_ID")
        ids = [str(i).strip("[]") for i in pred.keys["id"]]
        truth.index = [str(i).strip("[]") for i in truth.index]
        y = truth.loc[ids, list(pred.columns)].to_numpy(dtype=np.float64)
        return mean_pearson(y, pred.values.astype(np.float64), pred.columns).value

    def inspect(self, data_dir: Path, *, features: list[str] | None = None, use_cache: bool = True):
        """`abaw inspect --track eri`."""
        from abaw.eri.data import inspect_data

        return inspect_data(Path(data_dir), features=features, use_cache=use_cache)

    def build_model(self, spec: dict) -> nn.Module:
        """Rebuild a model from the plain spec stored in a checkpoint."""
        return eri_models.build_model(
            spec["name"], spec["cfg"], dims=spec["dims"], seq_len=spec["seq_len"]
        )

    def cast_labels(self, labels: np.ndarray) -> np.ndarray:
        """Intensities as they are (float; NaN where a label is missing)."""
        return labels

    def score_values(
        self, labels: np.ndarray, values: np.ndarray, columns: Sequence[str] | None = None
    ) -> Score:
        """Mean Pearson over the emotions."""
        return mean_pearson(labels, values, columns)

    def scorer(self, labels: np.ndarray) -> Scorer:
        """Mean Pearson of values of these rows (already fast: one pass over the columns)."""
        return lambda values: mean_pearson(labels, values).value

    def devel_halves(self, keys: Keys, *, seed: int = 0) -> list[np.ndarray]:
        """Two random halves of the devel samples (sorted row indices)."""
        rng = np.random.default_rng(seed)
        n = len(next(iter(keys.values())))
        perm = rng.permutation(n)
        return [np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])]

    def postprocessor(
        self, *, columns: Sequence[str], enabled: bool = True, seed: int = 0
    ) -> ClipPostprocess:
        """Clipping to [0, 1], whatever `enabled` says (nothing is chosen on devel)."""
        return ClipPostprocess()

    def column_scores(self, pred: Predictions) -> dict[str, float] | None:
        """Pearson r per emotion over the samples with every label (None below 2 of them)."""
        if pred.labels is None:
            return None
        ok = np.isfinite(pred.labels).all(axis=1)
        if ok.sum() < 2:
            return None
        return self.score_values(pred.labels[ok], pred.values[ok], pred.columns).per_column

    def report_figures(self, pred: Predictions, out: Path, *, what: str) -> dict[str, Path]:
        """Pearson r per emotion and the predicted-vs-true scatter ({} without labels)."""
        from abaw.eri.figures import devel_figures

        per = self.column_scores(pred)
        return {} if per is None else devel_figures(pred, per, out, what)

    def write_submission(
        self, pred: Predictions, data: Path, folder: Path, *, id_style: str = "as-data"
    ) -> Written:
        """Write predictions.csv for test `pred` into `folder` (see abaw.eri.submission)."""
        from abaw.eri.submission import ID_STYLES, write_submission

        if id_style not in ID_STYLES:
            raise ConfigError(f"--id-style must be one of {ID_STYLES}, got {id_style!r}")
        files, rows, notes = write_submission(pred, data, folder, id_style=id_style)
        return Written(files, rows, notes, files[0], {"format": "csv", "id_style": id_style})

    def validate_submission(
        self, path: Path, data: Path, *, id_style: str | None = None
    ) -> list[Problem]:
        """Every problem of the submission at `path` (see abaw.eri.submission).

        Any one ID spelling used through the whole file is accepted, whatever `id_style`.
        """
        from abaw.eri.submission import validate_submission

        return validate_submission(path, data)

    def extract_plan(self, data_dir: Path, *, name: str, **options: Any) -> ExtractPlan:
        """`abaw extract`: which files feature set `name` holds and where their media are."""
        from abaw.eri.extract import extract_plan

        return extract_plan(Path(data_dir), name=name, **options)

    def write_extracted(self, target: ExtractTarget, rows: ExtractedRows, path: Path) -> int | None:
        """One extracted output in the loader's layout (see abaw.eri.extract)."""
        from abaw.eri.extract import write_extracted

        return write_extracted(target, rows, path)


TRACK = EriTrack()
