"""Expr figures of labelled devel predictions for `abaw report`: F1 per class, confusion matrix.

Drawn with the shared helpers of `abaw.plots` (a base module; a wing never imports a stage).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from abaw.metrics import confusion_matrix
from abaw.plots import bar_chart, pyplot, save_png
from abaw.predictions import Predictions


def annotated(pred: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """(true class, argmax class) of the annotated frames (label -1 left out)."""
    labels = np.asarray(pred.labels).astype(np.int64).ravel()
    keep = labels != -1
    return labels[keep], pred.values[keep].argmax(axis=1)


def devel_figures(
    pred: Predictions, per: dict[str, float], out: Path, what: str
) -> dict[str, Path]:
    """Per-class F1 bars of `per` (with the macro F1) and the row-normalised confusion matrix."""
    vals = list(per.values())
    mean = float(np.mean(vals))
    return {
        "per_column": bar_chart(
            list(per),
            vals,
            out / "per_column.png",
            title=f"F1 per class on devel, {what}",
            ylabel="F1",
            ref=(f"macro F1 {mean:.4f}", mean),
        ),
        "confusion": plot_confusion(
            pred, out / "confusion.png", f"Devel confusion (row-normalised), {what}"
        ),
    }


def plot_confusion(pred: Predictions, path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (each true class sums to 1) of the argmax."""
    plt = pyplot()
    t, p = annotated(pred)
    k = len(pred.columns)
    cm = confusion_matrix(t, p, k).astype(np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(k), pred.columns, rotation=40, ha="right")
    ax.set_yticks(
        range(k), [f"{c} ({int(n)})" for c, n in zip(pred.columns, cm.sum(1), strict=True)]
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (annotated frames)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    return save_png(fig, path)
