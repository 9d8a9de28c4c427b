"""Expr post-processing of ensembled class probabilities, chosen on devel (`Track.postprocessor`).

Two steps, both fitted on labelled devel frames and applied to any frames of the track:

1. temporal smoothing within each video (`abaw.expr.smoothing`): `none`, or a moving /
   Gaussian window from `SMOOTH_GRID`, whichever gives the best macro F1;
2. per-class log-probability offsets tuned for macro F1 (coordinate ascent on `OFFSET_GRID`),
   kept only when they raise macro F1 on videos they were not fitted on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from abaw.expr.smoothing import smooth_by_video
from abaw.metrics import EXPR_NUM_CLASSES

SMOOTH_GRID: tuple[tuple[str, int], ...] = (("none", 1),) + tuple(
    (k, w) for k in ("moving", "gaussian") for w in (5, 9, 15, 25, 41)
)
OFFSET_GRID = np.linspace(-3.0, 3.0, 25)
EPS = 1e-7


def f1_fast(labels: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 of int64 class labels (no -1) and predicted classes, from one bincount.

    The same value as `abaw.metrics.macro_f1` (exact integer counts), without its checks:
    the offset search calls it 25 times per class and round.
    """
    cm = np.bincount(labels * EXPR_NUM_CLASSES + pred, minlength=EXPR_NUM_CLASSES**2).reshape(
        EXPR_NUM_CLASSES, EXPR_NUM_CLASSES
    )
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)
    return float(np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0).mean())


def f1_scorer(labels: np.ndarray) -> Callable[[np.ndarray], float]:
    """Macro F1 of the argmax of class probabilities of these rows (annotated frames only)."""
    keep = labels >= 0
    y = labels[keep].astype(np.int64)
    return lambda values: f1_fast(y, values[keep].argmax(1))


def apply_offsets(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """softmax(log p + offsets): class probabilities whose argmax is the offset decision."""
    z = np.log(np.maximum(values, EPS)) + np.asarray(offsets, np.float32)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32, copy=False)


def fit_offsets(values: np.ndarray, labels: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Per-class log-probability offsets maximising macro F1 (coordinate ascent on a grid)."""
    keep = labels >= 0
    lp = np.log(np.maximum(values[keep], EPS)).astype(np.float64)
    y = labels[keep].astype(np.int64)
    b = np.zeros(values.shape[1])
    if len(y) == 0:
        return b
    best = f1_fast(y, (lp + b).argmax(1))
    for _ in range(rounds):
        improved = False
        for c in range(values.shape[1]):
            others = lp + b
            others[:, c] = -np.inf
            arg_o, max_o = others.argmax(1), others.max(1)
            for d in OFFSET_GRID:
                pred = np.where(lp[:, c] + d > max_o, c, arg_o)
                s = f1_fast(y, pred)
                if s > best + 1e-12:
                    best, b[c], improved = s, d, True
        if not improved:
            break
    return b


def checked_offsets(
    values: np.ndarray, labels: np.ndarray, video: np.ndarray | None, seed: int, notes: list[str]
) -> np.ndarray:
    """Class offsets fitted on all rows, kept only if they help on videos they were not fitted on.

    Offsets tuned for macro F1 on a dozen videos can fit those videos' class mix rather than
    the task (measured: -0.03 honest F1 on the small demo set). Two folds by video: fit on
    one, score on the other, both ways; the offsets stay only when the mean held-out gain is
    positive, as `stack` stays only when it beats greedy on held-out folds.
    """
    offsets = fit_offsets(values, labels)
    if not np.any(offsets) or video is None:
        return offsets
    names = np.unique(video)
    if len(names) < 4:
        notes.append("class offsets off: fewer than 4 devel videos to check them on")
        return np.zeros_like(offsets)
    fold_of = dict(
        zip(np.random.default_rng(seed).permutation(names), range(len(names)), strict=True)
    )
    fold = np.fromiter((fold_of[v] % 2 for v in video), dtype=np.int64, count=len(video))
    keep = labels >= 0
    gains = []
    for f in (0, 1):
        fit_rows, held = fold != f, (fold == f) & keep
        if not held.any():
            continue
        b = fit_offsets(values[fit_rows], labels[fit_rows])
        y = labels[held].astype(np.int64)
        plain = f1_fast(y, values[held].argmax(1))
        gains.append(f1_fast(y, apply_offsets(values[held], b).argmax(1)) - plain)
    if not gains or float(np.mean(gains)) <= 0:
        notes.append(
            "class offsets off: they did not raise macro F1 on held-out videos "
            f"(mean gain {np.mean(gains) if gains else 0:+.4f})"
        )
        return np.zeros_like(offsets)
    notes.append(f"class offsets on: held-out macro F1 gain {np.mean(gains):+.4f}")
    return offsets


class ExprPostprocess:
    """Smoothing then checked class offsets, fitted on devel frames (a `PostProcessor`).

    Args:
        columns: the class names (keys of the manifest's `class_offsets`).
        enabled: False leaves the probabilities as they are (`--no-postprocess`).
        seed: the seed of the video folds that check the offsets.
    """

    def __init__(self, columns: Sequence[str], *, enabled: bool = True, seed: int = 0) -> None:
        self.columns = tuple(columns)
        self.enabled = enabled
        self.seed = seed
        self.smoothing: tuple[str, int] = ("none", 1)
        self.offsets: np.ndarray | None = None
        self.notes: list[str] = []

    def fit(
        self, values: np.ndarray, labels: np.ndarray, keys: dict[str, np.ndarray]
    ) -> ExprPostprocess:
        """The best smoothing of SMOOTH_GRID on these frames, then offsets on the smoothed."""
        self.smoothing, self.offsets, self.notes = ("none", 1), None, []
        if not self.enabled:
            return self
        video, frame = keys["video"], keys["frame"]
        score = f1_scorer(labels)
        best = (score(values), ("none", 1))
        for kind, width in SMOOTH_GRID[1:]:
            s = score(smooth_by_video(values, video, frame, kind, width))
            if s > best[0] + 1e-12:
                best = (s, (kind, width))
        self.smoothing = best[1]
        smoothed = smooth_by_video(values, video, frame, *best[1])
        self.offsets = checked_offsets(smoothed, labels, video, self.seed, self.notes)
        return self

    def apply(self, values: np.ndarray, keys: dict[str, np.ndarray]) -> np.ndarray:
        """Smoothing within each video (any row order), then the class offsets if any."""
        kind, width = self.smoothing
        values = smooth_by_video(values, keys["video"], keys["frame"], kind, width)
        if self.offsets is not None and np.any(self.offsets):
            values = apply_offsets(values, self.offsets)
        return values

    def clone(self) -> ExprPostprocess:
        """Unfitted, same settings."""
        return ExprPostprocess(self.columns, enabled=self.enabled, seed=self.seed)

    def to_manifest(self) -> dict[str, Any]:
        """{"smoothing": {"kind", "width"}, "class_offsets": {class: offset}}."""
        offsets = self.offsets if self.offsets is not None else np.zeros(len(self.columns))
        return {
            "smoothing": {"kind": self.smoothing[0], "width": int(self.smoothing[1])},
            "class_offsets": dict(zip(self.columns, map(float, offsets), strict=True)),
        }

    def from_manifest(self, entry: dict[str, Any]) -> ExprPostprocess:
        """A fitted copy holding the choices of a manifest's `postprocess` entry."""
        post = self.clone()
        post.smoothing = (str(entry["smoothing"]["kind"]), int(entry["smoothing"]["width"]))
        post.offsets = np.array([float(entry["class_offsets"][c]) for c in self.columns])
        return post
