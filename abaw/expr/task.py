"""The Expr training task (Aff-Wild2): per-frame expression classes from per-frame features.

Built by `abaw.expr.track.TRACK.prepare` for the one trainer. `ExprTask` turns the data into windows
(abaw.expr.windows), computes the focal loss on annotated frames, and predicts
per-frame probabilities for every frame of a split: devel in store order, test
in the exact order of the organisers' test frame list.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.table import Table
from torch import nn

from abaw.console import progress
from abaw.errors import ConfigError, DataError
from abaw.expr import CLASSES, NUM_CLASSES
from abaw.expr.models import build_model, model_config
from abaw.expr.smoothing import SmoothingConfig, smooth_probs
from abaw.expr.windows import (
    FrameSource,
    Windows,
    average_overlaps,
    chunk_ids,
    iter_windows,
    make_windows,
)
from abaw.losses import focal_loss
from abaw.metrics import Score, confusion_matrix, macro_f1
from abaw.predictions import Predictions


@dataclass
class ExprDataConfig:
    """What to load and how to cut it into windows (the `[data]` section)."""

    backbones: list[str] | None = None  # backbones to fuse, in order (None = all found)
    window: int = 64  # frames per window
    stride: int = 32  # frames between training window starts; 0 = window // 2
    eval_stride: int = 0  # frames between inference windows (overlaps averaged); 0 = window // 2
    fill: str = "nearest"  # how the loader fills frames without a face (see abaw.expr.data)
    balanced_sampling: bool = False  # draw training windows by their labels' inverse frequency
    loss_on_missing_faces: bool = True  # count frames without a face (filled features) in the loss
    memory_budget_mb: int = 1024  # hold train+devel features in memory (GPU if any) when they fit
    chunk_mb: int = 64  # rows per sequential read when streaming from the store
    buffer_chunks: int = 4  # chunks whose windows are shuffled together (streaming only)
    eval_batch_size: int = 64  # windows per forward pass at inference
    use_cache: bool = True  # reuse the loader's feature store cache
    test_frames: str | None = None  # test frame list file (relative to the data root); None = found
    test_videos: str | None = None  # test video list file (relative to the data root); None = found

    def __post_init__(self) -> None:
        if self.window < 1 or self.stride < 0 or self.eval_stride < 0:
            raise ValueError("data.window must be >= 1, data.stride and data.eval_stride >= 0")
        if min(self.memory_budget_mb, self.chunk_mb, self.buffer_chunks, self.eval_batch_size) < 0:
            raise ValueError(
                "data.memory_budget_mb, chunk_mb, buffer_chunks, eval_batch_size must be >= 0"
            )
        if self.backbones is not None and not self.backbones:
            raise ValueError(
                "data.backbones must name at least one backbone (or be left out for all)"
            )


ALPHA_KINDS = ("uniform", "inverse", "sqrt_inverse", "effective")


@dataclass
class FocalConfig:
    """Focal loss `-alpha_t (1 - p_t)^gamma log p_t` (the `[loss]` section)."""

    gamma: float = 2.0  # focusing parameter in [0, 5]; 0 = (weighted) cross-entropy
    alpha: str | list[float] = (
        "uniform"  # uniform | inverse | sqrt_inverse | effective (Cui et al. 2019) | 8 weights
    )
    label_smoothing: float = 0.0  # eps of the smoothed target distribution
    effective_beta: float = 0.9999  # alpha = "effective": weight (1 - beta) / (1 - beta^count)

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 5.0:
            raise ValueError(f"loss.gamma must be in [0, 5], found {self.gamma}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"loss.label_smoothing must be in [0, 1), found {self.label_smoothing}"
            )
        if not 0.0 < self.effective_beta < 1.0:
            raise ValueError(f"loss.effective_beta must be in (0, 1), found {self.effective_beta}")
        if isinstance(self.alpha, str):
            if self.alpha not in ALPHA_KINDS:
                raise ValueError(
                    f"loss.alpha must be one of {', '.join(ALPHA_KINDS)} or 8 numbers, "
                    f"found {self.alpha!r}"
                )
        elif len(self.alpha) != NUM_CLASSES or any(a < 0 for a in self.alpha):
            raise ValueError(
                f"loss.alpha must list {NUM_CLASSES} non-negative weights, found {self.alpha}"
            )


def class_alpha(cfg: FocalConfig, train_counts: np.ndarray) -> np.ndarray:
    """Per-class alpha from the train class counts, normalised to mean 1 over present classes.

    uniform: ones; inverse: 1 / count; sqrt_inverse: 1 / sqrt(count) (milder);
    effective: (1 - beta) / (1 - beta^count), the effective number of samples (Cui et
    al. 2019), between uniform (beta -> 0) and inverse (beta -> 1); or the given list.
    Classes absent from train get weight 0 (they never occur as a target there).
    """
    if not isinstance(cfg.alpha, str):
        return np.asarray(cfg.alpha, dtype=np.float32)
    if cfg.alpha == "uniform":
        return np.ones(NUM_CLASSES, dtype=np.float32)
    counts = np.asarray(train_counts, dtype=np.float64)
    if cfg.alpha == "inverse":
        inv = counts
    elif cfg.alpha == "sqrt_inverse":
        inv = np.sqrt(counts)
    else:
        inv = (1.0 - np.power(cfg.effective_beta, counts)) / (1.0 - cfg.effective_beta)
    w = np.divide(1.0, inv, out=np.zeros_like(counts), where=counts > 0)
    present = counts > 0
    if present.any():
        w[present] /= w[present].mean()
    return w.astype(np.float32)


def _test_list(data) -> tuple[np.ndarray, np.ndarray]:
    """The test frame list as (video index, 1-based frame), in the organisers' order.

    `ExprData.test_order` holds video indices; names are accepted too (mapped to indices, -1 if unknown).
    """
    videos, frames = data.test_order
    videos = np.asarray(videos)
    if videos.dtype.kind in "iu":
        return videos.astype(np.int64), np.asarray(frames, dtype=np.int64)
    index = {v: i for i, v in enumerate(data.videos)}
    uniq, inv = np.unique(videos.astype(str), return_inverse=True)
    ids = np.array([index.get(u, -1) for u in uniq.tolist()], dtype=np.int64)
    return ids[inv].reshape(-1), np.asarray(frames, dtype=np.int64)


class ExprTask:
    """One Expr run's data, windows, loss and metric, ready for abaw.train.fit."""

    track = "expr"
    metric = "macro_f1"

    def __init__(
        self,
        data,
        model: str,
        configs: dict[str, Any],
        device: torch.device | str = "cpu",
        *,
        show_progress: bool | None = None,
    ) -> None:
        self.data = data
        self.model_name = model
        self.cfg: ExprDataConfig = configs.get("data") or ExprDataConfig()
        self.model_cfg = configs.get("model") or model_config(model)()
        self.loss_cfg: FocalConfig = configs.get("loss") or FocalConfig()
        self.smooth_cfg: SmoothingConfig = configs.get("predict") or SmoothingConfig()
        train_cfg = configs.get("train")
        self.batch_size = getattr(train_cfg, "batch_size", 32)
        self.device = torch.device(device)
        self.show_progress = show_progress
        self.notes: list[str] = []

        backbones = list(self.cfg.backbones or data.backbones)
        missing = [b for b in backbones if b not in data.backbones]
        if missing:
            raise ConfigError(f"data.backbones: {missing} not loaded; available: {data.backbones}")
        self.backbones = backbones
        self.dims = [int(data.dims[b]) for b in backbones]
        cols = [np.arange(data.store.shape[1])[data.backbone_columns(b)] for b in backbones]
        cols = np.concatenate(cols)
        self.columns = None if np.array_equal(cols, np.arange(data.store.shape[1])) else cols
        width = len(cols)
        self.model_spec = {
            "model": model,
            "config": dataclasses.asdict(self.model_cfg),
            "dims": self.dims,
        }

        # Which frames the loss sees: annotated ones, optionally only those with a face.
        labels = np.asarray(data.labels)
        eligible = labels >= 0
        if not self.cfg.loss_on_missing_faces:
            eligible &= np.asarray(data.has_face, dtype=bool)
        self._target = np.where(eligible, labels, -1).astype(np.int64)
        self.alpha = torch.as_tensor(class_alpha(self.loss_cfg, data.class_counts("train")))

        row_bytes = 4 * width
        chunk_rows = max(self.cfg.window, (self.cfg.chunk_mb << 20) // row_bytes)
        half = max(1, self.cfg.window // 2)
        train_stride, eval_stride = self.cfg.stride or half, self.cfg.eval_stride or half
        self.windows: dict[str, Windows] = {}
        self.chunks: dict[str, np.ndarray] = {}
        self.sources: dict[str, FrameSource] = {}
        budget = self.cfg.memory_budget_mb << 20
        for split in ("train", "devel", "test"):
            vids = np.flatnonzero(np.asarray(data.split) == split)
            offsets = np.asarray(data.offsets, dtype=np.int64)
            n = offsets[vids + 1] - offsets[vids]
            stride = train_stride if split == "train" else eval_stride
            win = make_windows(vids, offsets[vids], n, size=self.cfg.window, stride=stride)
            if split == "train":
                win = self._trainable(win)
            lo, hi = (
                (int(offsets[vids].min()), int(offsets[vids + 1].max())) if len(vids) else (0, 0)
            )
            fits = split != "test" and (hi - lo) * row_bytes <= budget
            if fits:
                budget -= (hi - lo) * row_bytes
            self.windows[split] = win
            self.chunks[split] = chunk_ids(win, None if fits else chunk_rows)
            self.sources[split] = FrameSource(
                data.store.read,
                columns=self.columns,
                device=self.device if fits else "cpu",
                preload=(lo, hi) if fits and hi > lo else None,
            )
            if split != "test":
                mb = (hi - lo) * row_bytes / 2**20
                how = (
                    f"held in memory on {self.device}"
                    if fits
                    else f"streamed in {chunk_rows}-row chunks"
                )
                self.notes.append(
                    f"{split}: {len(win)} windows over {hi - lo} frames ({mb:.0f} MB), {how}"
                )
        if len(self.windows["train"]) == 0:
            raise DataError(
                data.root, "no annotated training frames", expected="train videos with labels 0..7"
            )
        self._sample_weights = self._balanced_weights() if self.cfg.balanced_sampling else None

    # -- training -------------------------------------------------------------------------

    def _eligible_counts(self, win: Windows, mask: np.ndarray) -> np.ndarray:
        cs = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        return cs[win.row + win.length] - cs[win.row]

    def _trainable(self, win: Windows) -> Windows:
        """Drop training windows without a single frame the loss can use."""
        return win.take(np.flatnonzero(self._eligible_counts(win, self._target >= 0) > 0))

    def _balanced_weights(self) -> torch.Tensor:
        """Window weight = mean inverse train frequency of its loss frames' classes."""
        win = self.windows["train"]
        counts = np.asarray(self.data.class_counts("train"), dtype=np.float64)
        inv = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
        total = np.zeros(len(win))
        for c in range(NUM_CLASSES):
            total += inv[c] * self._eligible_counts(win, self._target == c)
        n = self._eligible_counts(win, self._target >= 0)
        return torch.as_tensor(total / np.maximum(n, 1), dtype=torch.float64)

    def build_model(self) -> nn.Module:
        """A fresh model for this run (CPU; the trainer moves it)."""
        return build_model(self.model_name, self.model_cfg, self.dims)

    batch_unit = "windows"  # what the trainer's progress counts per second

    def steps_per_epoch(self) -> int:
        """About the optimiser steps of one epoch (the trainer's in-epoch progress and ETA).

        A lower bound: each buffer of chunks ends in its own partial batch.
        """
        return -(-len(self.windows["train"]) // self.batch_size)

    def train_batches(self, *, epoch: int, generator: torch.Generator):
        """One epoch of shuffled windows: {"x": (B,L,D), "pad": (B,L), "y": (B,L) with -1 = no loss}."""
        win = self.windows["train"]
        if self._sample_weights is not None:
            order = torch.multinomial(
                self._sample_weights, len(win), replacement=True, generator=generator
            ).numpy()
        else:
            order = np.arange(len(win))
        for wb in iter_windows(
            self.sources["train"],
            win,
            order,
            batch_size=self.batch_size,
            chunk=self.chunks["train"],
            buffer_chunks=self.cfg.buffer_chunks,
            generator=generator,
        ):
            y = self._target[wb.rows]
            y[wb.pad] = -1
            yield {
                "x": wb.x.to(self.device, non_blocking=True),
                "pad": torch.from_numpy(wb.pad).to(self.device, non_blocking=True),
                "y": torch.from_numpy(y).to(self.device, non_blocking=True),
            }

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Focal loss over every loss frame of the batch (padding and -1 frames excluded)."""
        logits = model(batch["x"], batch["pad"])
        return focal_loss(
            logits.reshape(-1, NUM_CLASSES),
            batch["y"].reshape(-1),
            gamma=self.loss_cfg.gamma,
            alpha=self.alpha.to(logits.device),
            label_smoothing=self.loss_cfg.label_smoothing,
        )

    # -- prediction -----------------------------------------------------------------------

    def frame_probs(self, model: nn.Module, split: str) -> np.ndarray:
        """(frames of `split`, 8) probabilities averaged over overlapping windows, store order."""
        win, source = self.windows[split], self.sources[split]
        model.eval()
        sums = counts = None
        # A transient bar (nested inside the trainer's when validating); auto: only on a terminal.
        disable = None if self.show_progress is None else not self.show_progress
        with torch.no_grad(), progress(transient=True, disable=disable) as bar:
            job = bar.add_task(f"predict {split}", total=len(win))
            for wb in iter_windows(
                source,
                win,
                np.arange(len(win)),
                batch_size=self.cfg.eval_batch_size,
                chunk=self.chunks[split],
            ):
                x = wb.x.to(self.device, non_blocking=True)
                pad = torch.from_numpy(wb.pad).to(self.device)
                probs = torch.softmax(model(x, pad).float(), dim=-1)
                sums, counts = average_overlaps(win.take(wb.index), probs, sums, counts)
                bar.advance(job, len(wb.index))
        if sums is None:
            return np.zeros((0, NUM_CLASSES), dtype=np.float32)
        return (sums / counts[:, None]).numpy().astype(np.float32)

    def _split_frames(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(video index per frame, 1-based frame, store row) for every frame of `split`, store order."""
        offsets = np.asarray(self.data.offsets, dtype=np.int64)
        vids = np.flatnonzero(np.asarray(self.data.split) == split)
        n = offsets[vids + 1] - offsets[vids]
        vid = np.repeat(vids, n)
        frame = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + 1
        return vid, frame, offsets[vid] + frame - 1

    def predict(self, model: nn.Module, split: str) -> Predictions:
        """Per-frame probabilities: every devel frame (store order), or the test list in its order."""
        if split not in ("train", "devel", "test"):
            raise ValueError(f"split must be train, devel or test, got {split!r}")
        if split == "train":
            raise ValueError("predict on train is not supported; use devel or test")
        probs = self.frame_probs(model, split)
        vid, frame, rows = self._split_frames(split)
        if self.smooth_cfg.kind != "none" and self.smooth_cfg.width > 1:
            n = np.bincount(np.searchsorted(np.unique(vid), vid)) if len(vid) else np.zeros(0, int)
            bounds = np.concatenate([[0], np.cumsum(n)])
            probs = smooth_probs(
                probs, bounds, kind=self.smooth_cfg.kind, width=self.smooth_cfg.width
            )
        names = np.asarray(self.data.videos).astype(str)
        meta = {
            "model": self.model_name,
            "backbones": self.backbones,
            "smoothing": dataclasses.asdict(self.smooth_cfg),
        }
        if split == "devel":
            keys = {"video": names[vid], "frame": frame}
            labels = np.asarray(self.data.labels)[rows].astype(np.int64)
            return Predictions("expr", split, keys, probs, CLASSES, labels, meta)
        # Test: one row per entry of the organisers' frame list, in its order.
        v, t_frame = _test_list(self.data)
        offsets = np.asarray(self.data.offsets, dtype=np.int64)
        test_vids = np.flatnonzero(np.asarray(self.data.split) == "test")
        n = offsets[test_vids + 1] - offsets[test_vids]
        split_base = np.full(len(names), -1, dtype=np.int64)
        split_base[test_vids] = np.cumsum(n) - n
        known = (v >= 0) & (v < len(names))
        base = np.where(known, split_base[np.where(known, v, 0)], -1)
        n_of = np.where(base >= 0, (offsets[1:] - offsets[:-1])[np.where(known, v, 0)], 0)
        bad = np.flatnonzero((base < 0) | (t_frame < 1) | (t_frame > n_of))
        if len(bad):
            i = int(bad[0])
            name = names[v[i]] if known[i] else f"video #{v[i]}"
            raise DataError(
                self.data.root,
                f"entry {i + 1} of the test frame list has no frame in the loaded test videos",
                found=f"{name}/{t_frame[i]:05d}",
            )
        keys = {"video": names[v], "frame": t_frame}
        return Predictions("expr", split, keys, probs[base + t_frame - 1], CLASSES, None, meta)

    def score(self, predictions: Predictions) -> Score:
        """Macro F1 of the argmax class over annotated frames."""
        if predictions.labels is None:
            raise ValueError("these predictions have no labels to score against")
        return macro_f1(predictions.labels, predictions.values.argmax(axis=1), columns=CLASSES)

    def summary(self, predictions: Predictions) -> list[Table]:
        """Per-class F1 and the confusion matrix of devel predictions, as rich tables."""
        return summary_tables(predictions)


def summary_tables(predictions: Predictions) -> list[Table]:
    """Per-class F1 table and confusion matrix (rows = true class, columns = predicted)."""
    labels = np.asarray(predictions.labels).astype(np.int64)
    pred = predictions.values.argmax(axis=1)
    score = macro_f1(labels, pred, columns=CLASSES)
    keep = labels >= 0
    cm = confusion_matrix(labels[keep], pred[keep], NUM_CLASSES)
    f1 = Table(title=f"devel macro F1 {score.value:.4f}")
    for col, just in (
        ("class", "left"),
        ("F1", "right"),
        ("frames", "right"),
        ("predicted", "right"),
    ):
        f1.add_column(col, justify=just)
    for i, c in enumerate(CLASSES):
        f1.add_row(c, f"{score.per_column[c]:.4f}", str(int(cm[i].sum())), str(int(cm[:, i].sum())))
    conf = Table(title="confusion matrix (rows: true, columns: predicted)")
    conf.add_column("true \\ pred")
    for c in CLASSES:
        conf.add_column(c[:4], justify="right")
    for i, c in enumerate(CLASSES):
        conf.add_row(c, *[str(int(v)) for v in cm[i]])
    return [f1, conf]
