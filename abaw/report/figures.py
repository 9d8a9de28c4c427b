"""Study figures: Optuna's matplotlib plots (titled and sized for the page), learning curves."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from abaw.plots import pyplot, save_png


def optuna_plot(
    fn: Callable[..., Any],
    study: optuna.Study,
    path: Path,
    title: str,
    *,
    integer_x: bool = False,
    **kw: Any,
) -> Path:
    """An `optuna.visualization.matplotlib` plot, saved with our title and size."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    # Optuna switches the global style to ggplot; keep that inside its own figures.
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore")  # ExperimentalWarning of the matplotlib backend
        ax = fn(study, **kw)
    axes = np.atleast_1d(ax).ravel()
    fig = axes[0].figure
    fig.set_size_inches(max(fig.get_size_inches()[0], 7.5), max(fig.get_size_inches()[1], 4.5))
    if integer_x:  # trial numbers: no 0.25 ticks on a young study
        axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:  # replace Optuna's own title, wherever it put it
        for loc in ("left", "center", "right"):
            ax.set_title("", loc=loc)
    if fig._suptitle is not None or len(axes) > 1:
        fig.suptitle(title)
    else:
        axes[0].set_title(title)
    # Optuna lays out its own axes and colorbars; tight_layout would overlap them.
    return save_png(fig, path, tight=False)


def plot_intermediate(study: optuna.Study, metric: str, path: Path) -> Path | None:
    """Per-epoch devel metric of every trial: completed in blue, pruned in red."""
    styles = {
        TrialState.COMPLETE: ("tab:blue", "-", "completed"),
        TrialState.PRUNED: ("tab:red", "--", "pruned"),
    }
    trials = [
        t for t in study.get_trials(deepcopy=False) if t.intermediate_values and t.state in styles
    ]
    if not trials:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    seen: set[TrialState] = set()
    for t in trials:
        color, ls, label = styles[t.state]
        steps = sorted(t.intermediate_values)
        ax.plot(
            steps,
            [t.intermediate_values[s] for s in steps],
            color=color,
            ls=ls,
            marker="o",
            ms=3,
            alpha=0.8,
            label=None if t.state in seen else label,
        )
        seen.add(t.state)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"devel {metric}")
    ax.set_title("Learning curves: completed vs pruned trials")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, path)


def _log_marks(lo: float, hi: float) -> list[float] | None:
    """Three geometric tick marks for a log axis whose data hold fewer than two powers of
    ten (None: enough powers of ten for a LogLocator), rounded to the fewest significant
    digits that keep them distinct and inside the data."""
    if lo <= 0 or hi <= lo:
        return None if lo <= 0 else [lo]
    if np.floor(np.log10(hi)) - np.ceil(np.log10(lo)) >= 1:
        return None
    raw = np.geomspace(lo, hi, 3)
    for digits in (1, 2, 3):
        marks = sorted({float(f"{v:.{digits}g}") for v in raw})
        if len(marks) == 3 and lo <= marks[0] and marks[-1] <= hi:
            return marks
    return [float(f"{v:.3g}") for v in raw]


def plot_slices(
    trials: list[optuna.trial.FrozenTrial], params: list[str], metric: str, path: Path
) -> Path:
    """Devel score against each searched parameter, four panels a row (Optuna's slice plot,
    redrawn so that panels keep a readable width and log-axis tick labels never overlap)."""
    plt = pyplot()
    from matplotlib.ticker import (
        FixedLocator,
        FuncFormatter,
        LogLocator,
        MaxNLocator,
        NullFormatter,
    )

    ncols = min(4, len(params))
    nrows = -(-len(params) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.3 * ncols, 2.9 * nrows), squeeze=False, sharey=True
    )
    numbers = [t.number for t in trials]
    norm = plt.Normalize(min(numbers), max(max(numbers), min(numbers) + 1))
    for ax, name in zip(axes.flat, params, strict=False):
        ts = [t for t in trials if name in t.params]
        dist = ts[0].distributions.get(name) if ts else None
        xs = [t.params[name] for t in ts]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            labels = [str(c) for c in dist.choices]
            xs = [labels.index(str(x)) for x in xs]
            long = max(len(x) for x in labels) > 6 and len(labels) > 2
            ax.set_xticks(range(len(labels)), labels, rotation=25 if long else 0, fontsize=8)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        elif getattr(dist, "log", False):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            lo, hi = (min(xs), max(xs)) if xs else (1.0, 1.0)
            marks = _log_marks(lo, hi)
            if marks is None:
                ax.xaxis.set_major_locator(LogLocator(numticks=4))
            else:  # fewer than two powers of ten inside the data: a LogLocator labels one
                ax.xaxis.set_major_locator(FixedLocator(marks))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.scatter(xs, [t.value for t in ts], c=[t.number for t in ts], cmap="viridis", norm=norm,
                   edgecolors="0.3", linewidths=0.5, s=30)  # fmt: skip
        ax.set_xlabel(name, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(params) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(f"devel {metric}", fontsize=9)
    fig.suptitle("Devel score against each searched parameter (colour: trial number)")
    fig.subplots_adjust(hspace=0.6, wspace=0.12)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes, shrink=0.8)
    bar.set_label("trial")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    return save_png(fig, path, tight=False)
