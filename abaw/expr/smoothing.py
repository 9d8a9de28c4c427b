"""Temporal smoothing of per-frame class probabilities, one video at a time.

Expressions last many frames while per-frame predictions flicker; averaging
each frame's probabilities with its neighbours' (a moving or Gaussian window of
up to ~40 frames, tuned on validation) is reported by later ABAW teams to be
worth several F1 points. The window never crosses from one video into the
next: near a video's ends it is truncated and renormalised (a normalised
convolution), so a constant signal stays exactly constant.

Plain functions on arrays and on `Predictions`, so the ensembler can tune
`kind` and `width` on validation predictions without the model
(`smooth_by_video`: any row order, one video in memory at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from abaw.predictions import Predictions

KINDS = ("none", "moving", "gaussian")


@dataclass
class SmoothingConfig:
    """Post-processing of per-frame probabilities (the `[predict]` section)."""

    kind: Literal["none", "moving", "gaussian"] = "none"  # none | moving (box) | gaussian window
    width: int = (
        1  # window length in frames (odd; even widths are rounded up); gaussian sigma = width / 6
    )

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"predict.kind must be one of {KINDS}, found {self.kind!r}")
        if self.width < 1:
            raise ValueError(f"predict.width must be >= 1 frame, found {self.width}")


def kernel(kind: str, width: int) -> np.ndarray:
    """The (odd-length, unnormalised) smoothing kernel for `kind` and `width`."""
    if kind not in KINDS:
        raise ValueError(f"smoothing kind must be one of {KINDS}, found {kind!r}")
    half = max(0, int(width) // 2)
    if kind == "none" or half == 0:
        return np.ones(1)
    if kind == "moving":
        return np.ones(2 * half + 1)
    sigma = max(width / 6.0, 1e-6)
    t = np.arange(-half, half + 1, dtype=np.float64)
    return np.exp(-0.5 * (t / sigma) ** 2)


def smooth_probs(
    probs: np.ndarray, bounds: np.ndarray, *, kind: str = "gaussian", width: int = 15
) -> np.ndarray:
    """Smooth (n, C) per-frame values within each segment [bounds[i], bounds[i+1]).

    Args:
        probs: (n, C) per-frame probabilities, frames of a video consecutive and in frame order.
        bounds: (V+1,) increasing segment boundaries, bounds[0] = 0, bounds[-1] = n.
        kind: "none", "moving" or "gaussian".
        width: window length in frames.

    Rows keep summing to 1 when the input rows do (a weighted average of rows).
    """
    x = np.asarray(probs, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.int64)
    if x.ndim != 2:
        raise ValueError(f"probs must be (n, C), got shape {x.shape}")
    if bounds[0] != 0 or bounds[-1] != len(x) or (np.diff(bounds) < 0).any():
        raise ValueError(f"bounds must rise from 0 to {len(x)}, got {bounds[:3]}...{bounds[-3:]}")
    k = kernel(kind, width)
    half = len(k) // 2
    if half == 0 or len(x) == 0:
        return x.astype(np.float32)
    # Lay the segments out with `half` zeros between them, so one convolution per
    # column never mixes two videos; divide by the convolved indicator (normalised convolution).
    lengths = np.diff(bounds)
    nz = lengths > 0
    starts = bounds[:-1][nz] + np.arange(nz.sum()) * half + half
    pos = np.repeat(starts - bounds[:-1][nz], lengths[nz]) + np.arange(len(x))
    size = len(x) + (nz.sum() + 1) * half
    padded = np.zeros((size, x.shape[1] + 1))
    padded[pos, :-1] = x
    padded[pos, -1] = 1.0
    out = np.empty_like(padded[pos])
    for j in range(padded.shape[1]):
        out[:, j] = np.convolve(padded[:, j], k, mode="same")[pos]
    return (out[:, :-1] / out[:, -1:]).astype(np.float32)


def smooth_predictions(
    pred: Predictions, *, kind: str = "gaussian", width: int = 15
) -> Predictions:
    """Smooth Expr predictions over time within each video, whatever the row order.

    Rows are sorted by (video, frame) for smoothing and returned in their original order.
    """
    if "video" not in pred.keys or "frame" not in pred.keys:
        raise ValueError(f"smoothing needs 'video' and 'frame' keys, found {list(pred.keys)}")
    if kind == "none" or width <= 1:
        return pred
    video = pred.keys["video"]
    frame = pred.keys["frame"].astype(np.int64)
    order = np.lexsort((frame, video))
    v_sorted = video[order]
    change = np.flatnonzero(v_sorted[1:] != v_sorted[:-1]) + 1
    bounds = np.concatenate([[0], change, [len(order)]])
    smoothed = np.empty_like(pred.values)
    smoothed[order] = smooth_probs(pred.values[order], bounds, kind=kind, width=width)
    meta = dict(pred.meta, smoothing={"kind": kind, "width": int(width)})
    return Predictions(
        pred.track, pred.split, dict(pred.keys), smoothed, pred.columns, pred.labels, meta
    )


def segments(video: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(row order or None, segment cuts): each segment one video's frames in frame order.

    When every video's rows are already contiguous and in frame order (the test frame list,
    devel in store order) no sort and no copy of the names is made (order None).
    """
    n = len(video)
    change = np.flatnonzero(video[1:] != video[:-1]) + 1
    cuts = np.concatenate([[0], change, [n]])
    starts = video[cuts[:-1]]
    inside = np.ones(n, bool)
    inside[cuts[:-1]] = False
    if len(np.unique(starts)) == len(starts) and (np.diff(frame)[inside[1:]] > 0).all():
        return None, cuts
    order = np.lexsort((frame.astype(np.int64), video))
    v = video[order]
    return order, np.concatenate([[0], np.flatnonzero(v[1:] != v[:-1]) + 1, [n]])


def smooth_by_video(
    values: np.ndarray, video: np.ndarray, frame: np.ndarray, kind: str, width: int
) -> np.ndarray:
    """Temporal smoothing within each video, one video at a time (memory: one video's frames)."""
    if kind == "none" or width <= 1 or len(values) == 0:
        return values
    order, cuts = segments(video, frame)
    out = np.empty_like(values)
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        rows = slice(a, b) if order is None else order[a:b]
        out[rows] = smooth_probs(values[rows], np.array([0, b - a]), kind=kind, width=width)
    return out
