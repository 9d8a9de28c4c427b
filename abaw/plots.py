"""Plotting helpers shared by the report and the tracks' own figures (matplotlib, Agg backend).

A base module below the wings: a track draws its per-emotion / per-class figures with these
helpers without importing a pipeline stage (`abaw.report` imports the wings' figures, never
the other way round). matplotlib is imported on first use, so importing this is free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from abaw.io import atomic_open


def pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend (no display: reports are made on servers)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path, *, tight: bool = True) -> Path:
    """Write `fig` to `path` atomically (a reader never sees half a PNG) and close it."""
    if tight:
        fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def bar_chart(
    names: Sequence[str],
    values: Sequence[float],
    path: Path,
    *,
    title: str,
    ylabel: str,
    ref: tuple[str, float] | None = None,
) -> Path:
    """One bar per name, its value in the tick label, and an optional dashed reference line
    (label, value) whose value is in the legend: no line ever crosses a number."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    x = np.arange(len(names))
    ax.bar(x, values, color="tab:blue")
    if ref is not None:
        ax.axhline(ref[1], color="tab:orange", ls="--", lw=1.2, alpha=0.8, label=ref[0])
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    labels = [f"{n} {v:.3f}" for n, v in zip(names, values, strict=True)]
    ax.set_xticks(x, labels, rotation=35, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0, color="black", lw=0.8)
    lo, hi = min(0.0, min(values)), max(0.0, max(values))
    pad = 0.12 * (hi - lo or 1.0)
    ax.set_ylim(lo - (pad if lo < 0 else 0), hi + pad)
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path)
