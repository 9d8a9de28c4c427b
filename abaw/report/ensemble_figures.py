"""The ensemble report's own figures: member weights, and the honest comparison made readable.

Two rules from looking at the pages in a browser: no line crosses a label (values live in
tick labels and the tables, not on the bars), and the axis is zoomed to the numbers that
matter (a gain of 0.003 is invisible on an axis from 0 to 0.8).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from abaw.plots import pyplot, save_png

USED, UNUSED = "tab:blue", "0.78"


def _zoom(values: Sequence[float], share: float = 0.25) -> tuple[float, float]:
    """Axis limits around `values` with `share` of their range as margin (never zero-width)."""
    lo, hi = float(min(values)), float(max(values))
    pad = share * (hi - lo) if hi > lo else 0.01 * (abs(hi) or 1.0)
    return lo - pad, hi + pad


def plot_weights(labels: Sequence[str], weights: Sequence[float], path: Path, title: str) -> Path:
    """Horizontal bars of the members' weights; a weight-0 member is grey and says "not used"."""
    plt = pyplot()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.38 * n))
    y = np.arange(n)[::-1]
    colors = [USED if w > 0 else UNUSED for w in weights]
    ax.barh(y, [max(w, 0.0) for w in weights], color=colors, height=0.6)
    ticks = [
        f"{lab}  {w:.3f}" if w > 0 else f"{lab}  0 (not used)"
        for lab, w in zip(labels, weights, strict=True)
    ]
    ax.set_yticks(y, ticks, fontsize=9)
    ax.set_xlim(0, max([*weights, 1e-9]) * 1.08)
    ax.set_xlabel("weight (share of the ensemble)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return save_png(fig, path)


def plot_scores(
    labels: Sequence[str],
    members: Sequence[dict[str, Any]],
    scores: dict[str, Any],
    metric: str,
    path: Path,
    *,
    verdict: dict[str, Any] | None = None,
) -> Path:
    """Left: each member's devel score (grey = not used). Right: best single vs ensemble,
    devel (selected there, optimistic) and honest (cross-fitted), on a zoomed axis."""
    plt = pyplot()
    vals = [float(m.get("devel_score", float("nan"))) for m in members]
    used = [float(m.get("ensemble_weight", m.get("weight", 0.0)) or 0.0) > 0 for m in members]
    n = len(labels)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, 1.6 + 0.38 * max(n, 4)), gridspec_kw={"width_ratios": [3, 2]}
    )
    y = np.arange(n)[::-1]
    finite = [v for v in vals if np.isfinite(v)] or [0.0]
    lo, hi = _zoom(finite)
    left.barh(y, [v - lo if np.isfinite(v) else 0 for v in vals], left=lo, height=0.6,
              color=[USED if u else UNUSED for u in used])  # fmt: skip
    left.set_yticks(y, [f"{lab}  {v:.4f}" for lab, v in zip(labels, vals, strict=True)], fontsize=9)
    left.set_xlim(lo, hi)
    left.set_xlabel(f"devel {metric} (axis zoomed)")
    left.set_title("Members (grey: weight 0, not used)")
    left.grid(axis="x", alpha=0.3)
    rows = [
        ("best single", scores.get("best_single_devel"), scores.get("honest_best_single")),
        ("ensemble", scores.get("ensemble_devel"), scores.get("honest_ensemble")),
    ]
    shown = [float(v) for _, a, b in rows for v in (a, b) if isinstance(v, int | float)]
    for i, (_name, dev, honest) in enumerate(rows):
        if isinstance(dev, int | float) and isinstance(honest, int | float):
            right.plot([honest, dev], [i, i], color="0.6", lw=1.5, zorder=1)
        if isinstance(dev, int | float):
            right.scatter([dev], [i], marker="o", facecolors="none", edgecolors="tab:orange",
                          s=70, zorder=2, label="devel (selected there)" if i == 0 else None)  # fmt: skip
        if isinstance(honest, int | float):
            right.scatter([honest], [i], marker="o", color="tab:blue", s=70, zorder=3,
                          label="honest (cross-fitted)" if i == 0 else None)  # fmt: skip
    right.set_yticks([0, 1], [r[0] for r in rows])
    right.set_ylim(-0.7, 1.7)
    if shown:
        right.set_xlim(*_zoom(shown, 0.35))
    right.set_xlabel(f"{metric} (axis zoomed)")
    title = "Honest comparison"
    if verdict and "honest_gain" in verdict:  # two lines: one would run past the panel
        word = (
            "ensemble wins"
            if verdict.get("ensemble_wins")
            else "ensemble kept one member alone"
            if verdict.get("members_used") == 1
            else "ensemble does not win"
        )
        title += f"\ngain {verdict['honest_gain']:+.4f}: {word}"
    right.set_title(title, fontsize=10)
    right.grid(axis="x", alpha=0.3)
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, fontsize=8, frameon=False)
    return save_png(fig, path)
