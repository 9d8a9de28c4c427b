"""ERI figures of labelled devel predictions for `abaw report`: Pearson r per emotion, scatter.

Drawn with the shared helpers of `abaw.plots` (a base module; a wing never imports a stage).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from abaw.metrics import mean_pearson
from abaw.plots import bar_chart, pyplot, save_png
from abaw.predictions import Predictions


def devel_figures(
    pred: Predictions, per: dict[str, float], out: Path, what: str
) -> dict[str, Path]:
    """Per-emotion bars of `per` (with the mean) and the predicted-vs-true scatter."""
    vals = list(per.values())
    mean = float(np.mean(vals))
    return {
        "per_column": bar_chart(
            list(per),
            vals,
            out / "per_column.png",
            title=f"Pearson r per emotion on devel, {what}",
            ylabel="Pearson r",
            ref=(f"mean {mean:.4f}", mean),
        ),
        "scatter": plot_scatter(pred, out / "scatter.png", f"Devel: predicted vs true, {what}"),
    }


def plot_scatter(pred: Predictions, path: Path, title: str) -> Path:
    """Predicted vs true intensity, one panel per emotion, with r in each title."""
    plt = pyplot()
    ok = np.isfinite(pred.labels).all(axis=1)
    y, p = pred.labels[ok], pred.values[ok]
    n = len(pred.columns)
    cols = 4
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.9 * rows), squeeze=False)
    r = mean_pearson(y, p, pred.columns).per_column if len(y) >= 2 else {}
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.axis("off")
            continue
        c = pred.columns[i]
        ax.scatter(y[:, i], p[:, i], s=6, alpha=0.5, color="tab:blue")
        # Pearson ignores scale: the y axis follows the predictions (an early model's sit in
        # a narrow band) and the line is the least-squares fit, whose slope sign is r's.
        if np.ptp(y[:, i]) > 0:
            slope, icept = np.polyfit(y[:, i], p[:, i], 1)
            ax.axline((0, icept), slope=slope, color="tab:orange", lw=1.2)
        ax.set_xlim(-0.03, 1.03)
        lo, hi = float(p[:, i].min()), float(p[:, i].max())
        pad = 0.08 * (hi - lo) or 0.05
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(f"{c}  (r = {r.get(c, float('nan')):.3f})", fontsize=10)
        ax.set_xlabel("true intensity", fontsize=9)
        ax.set_ylabel("predicted", fontsize=9)
    fig.suptitle(title)
    return save_png(fig, path)
