"""The ERI training task: configs, data on the device, loss, predictions, score.

Data policy (docs/training.md):
- Each feature sequence is cut to `data.max_len` steps, either its first steps
  (`cut = "first"`, the authors' code) or steps spread evenly over the whole
  sequence (`cut = "even"`); shorter sequences are zero-padded and masked.
  Feature sets of one modality are concatenated per step (step t of each).
- Training samples missing a modality the model uses are dropped from training
  (counted in `EriTask.notes`); devel and test samples missing one still get a
  prediction from what is present (the missing modality is fully masked).
- The data lives on the device once: per feature set, the used rows of all
  samples concatenated plus one zero row, and an (N, max_len) gather index that
  points padded steps at the zero row. A batch is one gather on the device, so
  memory is that of the real steps only and there is no DataLoader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from rich.table import Table
from torch import nn

from abaw.eri import EMOTIONS, MODALITIES
from abaw.eri import models as eri_models
from abaw.errors import ConfigError
from abaw.losses import eri_loss
from abaw.metrics import Score, mean_pearson
from abaw.predictions import Predictions


def _paper_features() -> dict[str, str]:
    return {"DeepSpectrum": "audio", "PosterV2-ViT": "visual"}


@dataclass
class EriDataConfig:
    """Which features to load and how to shape them for the model."""

    features: dict[str, str] | list[str] = field(
        default_factory=_paper_features
    )  # feature set -> "audio" | "visual"; or a list of known names (modality implied)
    max_len: int | None = None  # steps per sample after cutting / padding; None = from the data
    max_len_quantile: float = 0.9  # max_len = None: this quantile of the used sequences' lengths
    cut: Literal["first", "even"] = (
        "first"  # longer sequences: first max_len steps, or evenly spread steps
    )
    standardize: bool = True  # z-score each feature column with train statistics (in the loader)
    use_cache: bool = True  # reuse the loader's parsed-CSV cache
    eval_batch_size: int = 1024  # samples per forward pass when predicting

    def __post_init__(self) -> None:
        if not self.features:
            raise ValueError("data.features is empty; name at least one feature set")
        if not isinstance(self.features, dict):
            from abaw.eri.csvio import KNOWN_MODALITIES, feature_mapping

            self.features = feature_mapping(list(self.features))
            unknown = [f for f, m in self.features.items() if not m]
            if unknown:
                raise ValueError(
                    f"data.features: {unknown} have no known modality (known: "
                    f"{', '.join(KNOWN_MODALITIES)}); use a table, e.g. "
                    f'data.features = {{{unknown[0]} = "visual"}}'
                )
        for name, modality in self.features.items():
            if modality not in MODALITIES:
                raise ValueError(
                    f"data.features.{name} must be 'audio' or 'visual', found {modality!r}"
                )
        if (self.max_len is not None and self.max_len < 1) or self.eval_batch_size < 1:
            raise ValueError("data.max_len and data.eval_batch_size must be >= 1")
        if not 0.0 < self.max_len_quantile <= 1.0:
            raise ValueError(
                f"data.max_len_quantile must be in (0, 1], found {self.max_len_quantile}"
            )


@dataclass
class EriLossConfig:
    """Paper Eq. 8: alpha * regression + beta * class cross-entropy (training only)."""

    alpha: float = 1.0  # weight of the intensity regression term
    beta: float = 0.01  # weight of the dominant-emotion class term; 0 = off
    regression: Literal["mse", "bce"] = "mse"  # regression loss on the sigmoid intensities


def auto_max_len(lengths: list[np.ndarray], quantile: float = 0.9) -> int:
    """Steps to keep when `data.max_len` is unset: a quantile of the non-empty sequences' lengths.

    The paper's code cuts at 30 steps; on a set with longer clips a fixed 30 drops most of
    each clip, on a set with shorter ones it pads. At least 1.
    """
    pooled = np.concatenate([np.asarray(x)[np.asarray(x) > 0] for x in lengths] or [np.zeros(0)])
    if len(pooled) == 0:
        return 1
    return max(1, int(np.ceil(np.quantile(pooled, quantile))))


def gather_index(offsets: np.ndarray, max_len: int, cut: str) -> tuple[np.ndarray, np.ndarray]:
    """Row index (N, max_len) into a feature set's values, and the valid-step mask.

    Padded steps get index -1. With cut "even" a sequence longer than max_len
    keeps steps floor(t * len / max_len), t = 0..max_len-1 (spread over the clip).
    """
    lengths = np.diff(offsets)
    t = np.arange(max_len)[None, :]
    valid = t < lengths[:, None]
    pos = (
        t
        if cut == "first"
        else np.where(lengths[:, None] > max_len, (t * lengths[:, None]) // max_len, t)
    )
    index = np.where(valid, offsets[:-1, None] + pos, -1)
    return index, valid


class _DeviceFeature:
    """One feature set on the device: used rows + a zero row, and the per-sample gather index.

    On CPU, float32 values are read where they are (the cache's memory map) instead of
    copied: each `abaw tune` worker saved a private copy of every feature set (0.13 GB on the
    demo data, 1.3 GB at full scale) and the page cache is shared between workers.
    """

    def __init__(self, fs: Any, max_len: int, cut: str, device: torch.device) -> None:
        index, valid = gather_index(np.asarray(fs.offsets, dtype=np.int64), max_len, cut)
        self.present = np.diff(fs.offsets) > 0
        self.source: np.ndarray | None = None
        source = np.asarray(fs.values)
        if device.type == "cpu" and source.dtype == np.float32 and source.ndim == 2:
            self.source, self.dim = source, source.shape[1]
            self.rows, self.pad = np.where(valid, index, 0), ~valid
            self.valid = torch.from_numpy(valid)
            return
        rows = np.asarray(fs.values, dtype=np.float32)[index[valid]]
        compact = np.full(index.shape, len(rows), dtype=np.int64)  # padded -> the zero row
        compact[valid] = np.arange(len(rows))
        values = np.concatenate([rows, np.zeros((1, rows.shape[1]), np.float32)])
        self.values = torch.from_numpy(values).to(device)
        self.index = torch.from_numpy(compact).to(device)
        self.valid = torch.from_numpy(valid).to(device)
        self.dim = values.shape[1]

    def gather(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, max_len, dim) steps of `samples` and their (B, max_len) mask, gathered on the device."""
        if self.source is not None:  # CPU, values in place: padded steps zeroed after the take
            s = samples.numpy()
            rows = self.rows[s]
            out = np.asarray(self.source.take(rows.ravel(), axis=0)).reshape(*rows.shape, self.dim)
            pad = self.pad[s]
            if pad.any():
                out[pad] = 0.0
            return torch.from_numpy(out), torch.from_numpy(self.valid.numpy()[s])
        if self.values.device.type == "cpu":
            # Plain NumPy on CPU: torch's small indexing ops pay thread start-up costs,
            # and NumPy's take is ~3x faster than index_select for large fresh outputs.
            s = samples.numpy()
            rows = self.index.numpy()[s]
            out = torch.from_numpy(self.values.numpy().take(rows.ravel(), axis=0))
            return out.view(*rows.shape, self.dim), torch.from_numpy(self.valid.numpy()[s])
        rows = self.index[samples]
        out = torch.index_select(self.values, 0, rows.flatten())
        return out.view(*rows.shape, self.dim), self.valid[samples]


class EriTask:
    """One ERI run: data on the device, the model variant, the loss and the metric."""

    track = "eri"
    metric = "mean_pearson"

    def __init__(
        self, data: Any, model: str, configs: dict[str, Any], device: torch.device
    ) -> None:
        self.model_name, self.device = model, device
        self.data_cfg: EriDataConfig = configs["data"]
        self.model_cfg = configs["model"]
        self.loss_cfg: EriLossConfig = configs["loss"]
        self.batch_size = configs["train"].batch_size
        self.groups = feature_groups(model, self.model_cfg, self.data_cfg)
        used = sorted({f for names in self.groups.values() for f in names})
        missing = [f for f in used if f not in data.features]
        if missing:
            raise ConfigError(
                f"data.features: {missing} not loaded; the data has {sorted(data.features)}"
            )
        cut, max_len = self.data_cfg.cut, self.data_cfg.max_len
        self.notes = []
        if max_len is None:
            lengths = [np.diff(np.asarray(data.features[f].offsets)) for f in used]
            max_len = auto_max_len(lengths, self.data_cfg.max_len_quantile)
            q = self.data_cfg.max_len_quantile
            real = np.concatenate([x[x > 0] for x in lengths])
            cut_share = float(np.mean(real > max_len)) if len(real) else 0.0
            self.notes.append(
                f"data.max_len = {max_len}: the {100 * q:g}th percentile of the lengths of "
                f"{', '.join(used)} (set data.max_len to fix it); {100 * cut_share:.0f}% of "
                f"sequences are longer and cut ({cut!r})"
            )
        self.max_len = max_len
        self.feats = {f: _DeviceFeature(data.features[f], max_len, cut, device) for f in used}
        self.ids = np.asarray(data.ids).astype(str)
        self.labels = np.asarray(data.labels, dtype=np.float32)
        split = np.asarray(data.split).astype(str)
        # A sample lacks a modality when none of that modality's feature sets has a step.
        lacks = np.zeros(len(self.ids), dtype=bool)
        for modality in {self.data_cfg.features[f] for f in used}:
            present = np.zeros(len(self.ids), dtype=bool)
            for f in used:
                if self.data_cfg.features[f] == modality:
                    present |= self.feats[f].present
            lacks |= ~present
        self.split_index = {s: np.flatnonzero(split == s) for s in ("train", "devel", "test")}
        train = self.split_index["train"]
        self.train_index = torch.from_numpy(train[~lacks[train]]).to(device)
        if lacks[train].any():
            self.notes.append(
                f"{int(lacks[train].sum())} training sample(s) miss a modality and are left out of "
                f"training: {', '.join(self.ids[train[lacks[train]]][:5])}{' ...' if lacks[train].sum() > 5 else ''}"
            )
        for s in ("devel", "test"):
            n = int(lacks[self.split_index[s]].sum())
            if n:
                self.notes.append(
                    f"{n} {s} sample(s) miss a modality; they are predicted from the present one"
                )
        if len(self.train_index) == 0:
            raise ConfigError("no training samples with every modality the model uses")
        self.labels_device = torch.from_numpy(np.nan_to_num(self.labels)).to(device)
        dims = {g: sum(self.feats[f].dim for f in names) for g, names in self.groups.items()}
        self.model_spec = eri_models.model_spec(model, self.model_cfg, dims=dims, seq_len=max_len)

    def build_model(self) -> nn.Module:
        """A fresh model for this run (on CPU)."""
        spec = self.model_spec
        return eri_models.build_model(
            spec["name"], spec["cfg"], dims=spec["dims"], seq_len=spec["seq_len"]
        )

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model inputs of the samples `index` (a device tensor), gathered on the device."""
        if self.device.type == "cpu":
            labels = torch.from_numpy(self.labels_device.numpy()[index.numpy()])
        else:
            labels = self.labels_device[index]
        out: dict[str, torch.Tensor] = {"labels": labels}
        for group, names in self.groups.items():
            parts, masks = zip(*(self.feats[f].gather(index) for f in names), strict=True)
            out[group] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
            out[f"{group}_mask"] = masks[0] if len(masks) == 1 else torch.stack(masks).any(dim=0)
        return out

    def steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch (the trainer's in-epoch progress and ETA)."""
        return -(-len(self.train_index) // self.batch_size)

    def train_batches(self, *, epoch: int, generator: torch.Generator):
        """Shuffled training batches (the last one may be smaller)."""
        order = self.train_index[
            torch.randperm(len(self.train_index), generator=generator).to(self.device)
        ]
        for start in range(0, len(order), self.batch_size):
            yield self.batch(order[start : start + self.batch_size])

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Paper Eq. 8 on one batch."""
        intensities, logits = model(batch)
        c = self.loss_cfg
        return eri_loss(
            intensities.float(),
            logits,
            batch["labels"],
            alpha=c.alpha,
            beta=c.beta,
            regression=c.regression,
        )

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str) -> Predictions:
        """Intensities for every sample of `split`, keyed by ID (labels attached unless test)."""
        rows = self.split_index[split]
        index = torch.from_numpy(rows).to(self.device)
        outs = [
            model(self.batch(index[s : s + self.data_cfg.eval_batch_size]))[0].float()
            for s in range(0, len(index), self.data_cfg.eval_batch_size)
        ]
        values = torch.cat(outs).cpu().numpy() if outs else np.zeros((0, len(EMOTIONS)), np.float32)
        labels = self.labels[rows]
        labels = None if split == "test" or np.isnan(labels).any() else labels
        return Predictions(
            "eri",
            split,
            {"id": self.ids[rows]},
            values,
            EMOTIONS,
            labels,
            {"model": self.model_name},
        )

    def score(self, predictions: Predictions) -> Score:
        """Mean Pearson over the 7 emotions (the challenge metric)."""
        if predictions.labels is None:
            raise ValueError(f"{predictions.split} predictions have no labels to score")
        return mean_pearson(predictions.labels, predictions.values, EMOTIONS)

    def summary(self, predictions: Predictions) -> list[Table]:
        """Per-emotion Pearson table of labelled predictions."""
        score = self.score(predictions)
        t = Table(title=f"{predictions.split} Pearson per emotion ({self.model_name})")
        t.add_column("emotion")
        t.add_column("Pearson r", justify="right")
        for name, r in score.per_column.items():
            t.add_row(name, f"{r:.4f}")
        t.add_row("[bold]mean[/]", f"[bold]{score.value:.4f}[/]")
        return [t]


def feature_groups(model: str, model_cfg: Any, data_cfg: EriDataConfig) -> dict[str, list[str]]:
    """Model input -> feature sets: fusion reads 'audio'/'visual', the LSTM reads 'all'."""
    by_modality = {m: [f for f, mm in data_cfg.features.items() if mm == m] for m in MODALITIES}
    if model == "lstm":
        return {"all": list(data_cfg.features)}
    need = {"A": ["audio"], "V": ["visual"]}.get(model_cfg.modalities, ["audio", "visual"])
    for m in need:
        if not by_modality[m]:
            raise ConfigError(
                f"model.modalities = {model_cfg.modalities!r} needs a {m} feature set, "
                f"but data.features has none: {data_cfg.features}"
            )
    return {m: by_modality[m] for m in need}
