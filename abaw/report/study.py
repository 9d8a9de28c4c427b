"""The report of one study: Optuna's figures, the leaderboard, the best kept trial's devel scores.

Reads only what `abaw/trials.py` defines (Contract A): the study's attributes, its kept
trials and their devel predictions from the artifact store. A figure that cannot be drawn
(no completed trial yet, too few for importances, no kept trial) becomes a note, never a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from abaw.errors import AbawError
from abaw.io import writable_dir
from abaw.metrics import metric_label
from abaw.report.devel import devel_part
from abaw.report.figures import optuna_plot, plot_intermediate, plot_slices
from abaw.report.html import Report, fmt_param, page, seconds, table, write_html
from abaw.trials import (
    TRIAL_BEST_EPOCH,
    TRIAL_EPOCHS_RUN,
    TRIAL_FAIL_REASON,
    TRIAL_FIXED_CONFIG,
    TRIAL_KEPT,
    TRIAL_SECONDS,
    kept_trials,
    study_info,
    trial_predictions,
)

LEADERBOARD_ROWS = 20  # completed trials shown in the study table
MIN_TRIALS_FOR_IMPORTANCE = 3  # fANOVA on fewer completed trials says nothing
MAX_SLICE_PANELS = 12  # three rows of four; more panels get too small to read


def study_report(
    study: optuna.Study, out: Path, artifacts: str | os.PathLike[str] | None
) -> Report:
    """Write `out/report.html` and the PNGs of `study`."""
    info = study_info(study)
    metric = metric_label(info.get("metric"))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    complete.sort(key=lambda t: (sign * t.value, t.number))
    searched = sorted({p for t in complete for p in t.params})
    notes: list[str] = []
    writable_dir(out, "report folder")
    figures = _study_figures(study, complete, searched, metric, out, notes)
    sections = _trial_tables(trials, complete, searched, metric)
    best_figures, best_sections = _best_kept(study, artifacts, out, notes)
    figures.update(best_figures)
    sections += best_sections
    facts = [
        ("study", study.study_name),
        ("track", info.get("track", "")),
        ("model", info.get("model", "")),
        ("metric", f"{metric} ({study.direction.name.lower()})"),
        ("trials", len(trials)),
        ("best", f"{complete[0].value:.4f} (trial {complete[0].number})" if complete else "none"),
        ("sweep", info.get("sweep", "")),
        ("data", info.get("data", "")),
    ]
    text = page(f"abaw report: study {study.study_name}", facts, sections, figures, notes)
    return Report(write_html(out, text), figures, notes, "study", study.study_name)


def _study_figures(
    study: optuna.Study,
    complete: list[FrozenTrial],
    searched: list[str],
    metric: str,
    out: Path,
    notes: list[str],
) -> dict[str, Path]:
    """History, importances, learning curves and slices; a note for each one left out."""
    figures: dict[str, Path] = {}
    vis = optuna.visualization.matplotlib
    target = f"devel {metric}"
    if complete:
        figures["history"] = optuna_plot(
            vis.plot_optimization_history,
            study,
            out / "history.png",
            "Optimisation history",
            integer_x=True,
            target_name=target,
        )
    else:
        notes.append("No completed trial yet: no optimisation history, importances or slices.")
    varied = [p for p in searched if len({repr(t.params.get(p)) for t in complete}) > 1]
    if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE and varied:
        try:
            figures["importances"] = optuna_plot(
                vis.plot_param_importances,
                study,
                out / "importances.png",
                "Hyperparameter importances",
                params=varied,
                target_name=target,
                evaluator=FanovaImportanceEvaluator(seed=0),
            )
            # The slice plot shows the most important parameters first (one fANOVA fit more:
            # well under a second for a few hundred trials); alphabetical order once left the
            # most important one, train.lr, out of the panels.
            ranked = optuna.importance.get_param_importances(
                study, params=varied, evaluator=FanovaImportanceEvaluator(seed=0)
            )
            varied = sorted(varied, key=lambda p: -ranked.get(p, 0.0))
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            notes.append(f"Parameter importances could not be computed: {e}")
    elif complete:
        notes.append(
            f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials "
            f"with varied parameters; this study has {len(complete)} completed."
        )
    path = plot_intermediate(study, metric, out / "intermediate.png")
    if path:
        figures["intermediate"] = path
    else:
        notes.append("No trial reported per-epoch values: no learning-curve figure.")
    if complete and varied:
        shown = varied[:MAX_SLICE_PANELS]
        figures["slice"] = plot_slices(complete, shown, metric, out / "slice.png")
        if len(varied) > len(shown):
            notes.append(
                f"The slice plot shows {len(shown)} of the {len(varied)} searched parameters "
                "(the most important first); left out: " + ", ".join(varied[len(shown) :]) + "."
            )
    return figures


def _trial_tables(
    trials: list[FrozenTrial], complete: list[FrozenTrial], searched: list[str], metric: str
) -> list[str]:
    """Trial counts per state, the leaderboard of completed trials, and the failed ones."""
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in trials:
        counts[t.state.name.lower()] += 1
    rows = [
        [
            rank,
            f"{t.number}{' [fixed]' if t.user_attrs.get(TRIAL_FIXED_CONFIG) else ''}",
            t.value,
            t.user_attrs.get(TRIAL_BEST_EPOCH, ""),
            t.user_attrs.get(TRIAL_EPOCHS_RUN, ""),
            seconds(t.user_attrs.get(TRIAL_SECONDS)),
            "yes" if t.user_attrs.get(TRIAL_KEPT) else "",
            ", ".join(f"{p}={fmt_param(t.params[p])}" for p in searched if p in t.params),
        ]
        for rank, t in enumerate(complete[:LEADERBOARD_ROWS], 1)
    ]
    header = ["rank", "trial", f"devel {metric}", "best epoch", "epochs", "seconds", "kept"]
    sections = [
        "<h2>Trials</h2>",
        table(["state", "trials"], [[k, v] for k, v in counts.items() if v]),
        f"<h3>Leaderboard: devel {metric}, best {min(len(complete), LEADERBOARD_ROWS)} completed</h3>",
        table([*header, "parameters"], rows, wrap=(len(header),)),
    ]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if failed:
        sections += [
            "<h3>Failed trials</h3>",
            table(
                ["trial", "reason"],
                [[t.number, t.user_attrs.get(TRIAL_FAIL_REASON, "")] for t in failed[:20]],
                wrap=(1,),
            ),
        ]
    return sections


def _best_kept(
    study: optuna.Study, artifacts: str | os.PathLike[str] | None, out: Path, notes: list[str]
) -> tuple[dict[str, Path], list[str]]:
    """The per-column figures and table of the best kept trial's devel predictions."""
    best: FrozenTrial | None = next(iter(kept_trials(study, 1)), None)
    if best is None:
        notes.append("No kept trial with files: no per-emotion / per-class figures.")
        return {}, []
    try:
        pred = trial_predictions(study, best, "devel", artifacts=artifacts)
    except AbawError as e:
        notes.append(f"Best kept trial's devel predictions unreadable: {e}")
        return {}, []
    return devel_part(pred, out, f"trial {best.number}")
