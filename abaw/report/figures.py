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
