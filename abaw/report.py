"""`abaw report`: one self-contained HTML page and PNG figures for a study or an ensemble.

A team with a deadline wants to see, at a glance and without a server, whether a
search converged, which settings mattered, where pruning cut, and how the best
model (or the ensemble) does per emotion or per class. The page embeds every
figure as a base64 PNG (no network, no JavaScript) and the same PNGs are
written beside it for slides and chat.

Study reports read only what `abaw/trials.py` defines (Contract A): the study's
attributes, its kept trials and their devel predictions from the artifact
store. Ensemble reports read `<runs>/ensembles/NAME/manifest.json` and
`predictions-devel.npz` (Contract B). Python: `make_report(study=...)` or
`make_report(ensemble=...)`; `abaw demo` calls it once per track.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from abaw import __version__
from abaw.errors import AbawError, DataError
from abaw.io import atomic_open, safe_name
from abaw.metrics import confusion_matrix, macro_f1, mean_pearson
from abaw.predictions import Predictions
from abaw.trials import (
    TRIAL_BEST_EPOCH,
    TRIAL_EPOCHS_RUN,
    TRIAL_FAIL_REASON,
    TRIAL_KEPT,
    TRIAL_SECONDS,
    kept_trials,
    study_info,
    trial_predictions,
)

LEADERBOARD_ROWS = 20  # completed trials shown in the study table
MIN_TRIALS_FOR_IMPORTANCE = 3  # fANOVA on fewer completed trials says nothing


@dataclass
class Report:
    """What `make_report` wrote.

    Args:
        html: the self-contained page.
        figures: figure name (e.g. "history") -> PNG path beside the page.
        notes: figures that were left out and why (too few trials, no kept trial, ...).
        kind: "study" or "ensemble".
        name: the study or ensemble name.
    """

    html: Path
    figures: dict[str, Path]
    notes: list[str] = field(default_factory=list)
    kind: str = "study"
    name: str = ""


def _load_study(name: str, storage: str | None, runs: Path) -> optuna.Study:
    from abaw.tune import load_study

    return load_study(name, storage=storage, runs=runs)


def _load_ensemble(name: str, runs: Path) -> tuple[dict[str, Any], Predictions]:
    """The manifest and devel predictions of `<runs>/ensembles/NAME/` (Contract B)."""
    root = Path(runs) / "ensembles"
    folder = root / safe_name(name, what="ensemble name")
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise AbawError(
            f"no ensemble {name!r}: {manifest_path} does not exist; ensembles in {root}: "
            f"{', '.join(found) or 'none'}"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(manifest_path, "not a readable JSON manifest", found=str(e)) from None
    for key in ("track", "members", "scores"):
        if key not in manifest:
            raise DataError(manifest_path, f"manifest has no {key!r} entry")
    return manifest, Predictions.load(folder / "predictions-devel.npz")


# ---------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, *, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _optuna_plot(
    fn, study: optuna.Study, path: Path, title: str, *, integer_x: bool = False, **kw
) -> Path:
    """An `optuna.visualization.matplotlib` plot, saved with our title and size."""
    plt = _plt()
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
    return _save(fig, path, tight=False)


def _plot_intermediate(study: optuna.Study, metric: str, path: Path) -> Path | None:
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
    plt = _plt()
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
    return _save(fig, path)


def _plot_bars(names, values, path: Path, *, title: str, ylabel: str, ref=None) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    x = np.arange(len(names))
    bars = ax.bar(x, values, color="tab:blue")
    for b, v in zip(bars, values, strict=True):
        ax.annotate(
            f"{v:.3f}",
            (b.get_x() + b.get_width() / 2, v),
            ha="center",
            va="bottom" if v >= 0 else "top",
            fontsize=8,
        )
    if ref is not None:
        ax.axhline(ref[1], color="tab:orange", ls="--", lw=1.2, alpha=0.8, label=ref[0])
        ax.legend(loc="best")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0, color="black", lw=0.8)
    lo, hi = min(0.0, min(values)), max(0.0, max(values))
    pad = 0.12 * (hi - lo or 1.0)
    ax.set_ylim(lo - (pad if lo < 0 else 0), hi + pad)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _plot_scatter(pred: Predictions, path: Path, title: str) -> Path:
    """Predicted vs true intensity, one panel per emotion, with r in each title."""
    plt = _plt()
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
    return _save(fig, path)


def _plot_confusion(pred: Predictions, path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (each true class sums to 1) of the argmax."""
    plt = _plt()
    t, p = _expr_labels(pred)
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
    return _save(fig, path)


def _expr_labels(pred: Predictions) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(pred.labels).astype(np.int64).ravel()
    keep = labels != -1
    return labels[keep], pred.values[keep].argmax(axis=1)


def _score(pred: Predictions) -> dict[str, float] | None:
    """Per-column devel scores of labelled predictions, or None when they carry no labels."""
    if pred.labels is None:
        return None
    if pred.track == "eri":
        ok = np.isfinite(pred.labels).all(axis=1)
        if ok.sum() < 2:
            return None
        return mean_pearson(pred.labels[ok], pred.values[ok], pred.columns).per_column
    t, p = _expr_labels(pred)
    if len(t) == 0:
        return None
    return macro_f1(t, p, len(pred.columns), pred.columns).per_column


def _prediction_figures(pred: Predictions, out: Path, what: str) -> dict[str, Path]:
    """Per-column bars plus the scatter (ERI) or confusion matrix (Expr) of devel predictions."""
    per = _score(pred)
    if per is None:
        return {}
    names, vals = list(per), list(per.values())
    mean = float(np.mean(vals))
    if pred.track == "eri":
        return {
            "per_column": _plot_bars(
                names,
                vals,
                out / "per_column.png",
                title=f"Pearson r per emotion on devel, {what}",
                ylabel="Pearson r",
                ref=(f"mean {mean:.4f}", mean),
            ),
            "scatter": _plot_scatter(
                pred, out / "scatter.png", f"Devel: predicted vs true, {what}"
            ),
        }
    return {
        "per_column": _plot_bars(
            names,
            vals,
            out / "per_column.png",
            title=f"F1 per class on devel, {what}",
            ylabel="F1",
            ref=(f"macro F1 {mean:.4f}", mean),
        ),
        "confusion": _plot_confusion(
            pred, out / "confusion.png", f"Devel confusion (row-normalised), {what}"
        ),
    }


# ---------------------------------------------------------------- HTML


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4f}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CAPTIONS = {
    "history": "Optimisation history: each completed trial's devel score and the best so far.",
    "importances": "Hyperparameter importances (fANOVA) on the completed trials.",
    "intermediate": "Per-epoch devel score: completed trials (solid) vs pruned ones (dashed).",
    "slice": "Slice plot: devel score against each searched parameter.",
    "per_column": "Devel score per emotion / class.",
    "scatter": "Predicted vs true intensity on devel, one panel per emotion, with the "
    "least-squares line (the y axis spans the predictions).",
    "confusion": "Row-normalised confusion matrix of the argmax on annotated devel frames.",
    "weights": "Member weights in the ensemble.",
    "scores": "Devel score of each member, the ensemble, and the honest (cross-fitted) estimates.",
}

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}figure{margin:1em 0 2em}
img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.9em;color:#555}
.facts th{text-align:left;background:#f7f7f7}
.note{background:#fff8e0;border-left:4px solid #e0b000;padding:0.4em 0.8em}"""


def _html_page(title: str, facts: list[tuple[str, Any]], sections: list[str], figures, notes):
    """Facts, notes, figures first (the at-a-glance part), then the tables."""
    facts_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<table class="facts"><tbody>{facts_rows}</tbody></table>',
    ]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    parts.append("<h2>Figures</h2>")
    for name, path in figures.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(
            f'<figure id="fig-{name}"><img alt="{path.name}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{path.name}</b>: {html.escape(CAPTIONS.get(name, ''))}"
            "</figcaption></figure>"
        )
    parts += sections
    parts.append(f"<p><small>abaw {__version__}</small></p></body></html>")
    return "\n".join(parts)


def _write_html(out: Path, text: str) -> Path:
    path = out / "report.html"
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return path


# ---------------------------------------------------------------- study


def _fmt_param(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _study_report(
    study: optuna.Study, out: Path, artifacts: str | os.PathLike[str] | None
) -> Report:
    info = study_info(study)
    metric = info.get("metric", "value")
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in trials:
        counts[t.state.name.lower()] += 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    complete.sort(key=lambda t: (sign * t.value, t.number))
    figures: dict[str, Path] = {}
    notes: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    vis = optuna.visualization.matplotlib

    if complete:
        figures["history"] = _optuna_plot(
            vis.plot_optimization_history,
            study,
            out / "history.png",
            "Optimisation history",
            integer_x=True,
            target_name=f"devel {metric}",
        )
    else:
        notes.append("No completed trial yet: no optimisation history, importances or slices.")
    searched = sorted({p for t in complete for p in t.params})
    varied = [p for p in searched if len({repr(t.params.get(p)) for t in complete}) > 1]
    if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE and varied:
        try:
            figures["importances"] = _optuna_plot(
                vis.plot_param_importances,
                study,
                out / "importances.png",
                "Hyperparameter importances",
                params=varied,
                target_name=f"devel {metric}",
            )
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            notes.append(f"Parameter importances could not be computed: {e}")
    elif complete:
        notes.append(
            f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials "
            f"with varied parameters; this study has {len(complete)} completed."
        )
    path = _plot_intermediate(study, metric, out / "intermediate.png")
    if path:
        figures["intermediate"] = path
    else:
        notes.append("No trial reported per-epoch values: no learning-curve figure.")
    if complete and varied:
        figures["slice"] = _optuna_plot(
            vis.plot_slice,
            study,
            out / "slice.png",
            "Devel score against each searched parameter",
            params=varied[:8],
            target_name=f"devel {metric}",
        )

    sections = [
        "<h2>Trials</h2>",
        _table(["state", "trials"], [[k, v] for k, v in counts.items() if v]),
    ]
    shown = [p for p in searched][:8]
    rows = [
        [
            rank,
            t.number,
            t.value,
            t.user_attrs.get(TRIAL_BEST_EPOCH, ""),
            t.user_attrs.get(TRIAL_EPOCHS_RUN, ""),
            _num(t.user_attrs.get(TRIAL_SECONDS)),
            "yes" if t.user_attrs.get(TRIAL_KEPT) else "",
            *[_fmt_param(t.params.get(p, "")) for p in shown],
        ]
        for rank, t in enumerate(complete[:LEADERBOARD_ROWS], 1)
    ]
    sections += [
        f"<h3>Leaderboard (best {min(len(complete), LEADERBOARD_ROWS)} completed)</h3>",
        _table(
            ["rank", "trial", f"devel {metric}", "best epoch", "epochs", "seconds", "kept", *shown],
            rows,
        ),
    ]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if failed:
        sections += [
            "<h3>Failed trials</h3>",
            _table(
                ["trial", "reason"],
                [[t.number, t.user_attrs.get(TRIAL_FAIL_REASON, "")] for t in failed[:20]],
            ),
        ]
    best_kept: FrozenTrial | None = next(iter(kept_trials(study, 1)), None)
    if best_kept is None:
        notes.append("No kept trial with files: no per-emotion / per-class figures.")
    else:
        try:
            pred = trial_predictions(study, best_kept, "devel", artifacts=artifacts)
        except AbawError as e:
            notes.append(f"Best kept trial's devel predictions unreadable: {e}")
        else:
            what = f"trial {best_kept.number}"
            figures.update(_prediction_figures(pred, out, what))
            sections += _per_column_section(pred, what)
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
    page = _html_page(f"abaw report: study {study.study_name}", facts, sections, figures, notes)
    return Report(_write_html(out, page), figures, notes, "study", study.study_name)


def _per_column_section(pred: Predictions, what: str) -> list[str]:
    per = _score(pred)
    if per is None:
        return []
    label = "Pearson r" if pred.track == "eri" else "F1"
    rows = [[c, v] for c, v in per.items()] + [["mean", float(np.mean(list(per.values())))]]
    return [
        f"<h3>Devel {label} per column, {html.escape(what)}</h3>",
        _table(["column", label], rows),
    ]


# ---------------------------------------------------------------- ensemble


def _member_label(m: dict[str, Any], i: int) -> str:
    if m.get("source") == "study" or m.get("study"):
        return f"{m.get('study', '?')}#{m.get('trial', '?')}"
    path = Path(str(m.get("path") or f"member {i}"))
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


def _ensemble_report(name: str, runs: Path, out: Path) -> Report:
    manifest, pred = _load_ensemble(name, runs)
    members = manifest["members"]
    scores = manifest["scores"]
    metric = manifest.get("metric", "score")
    out.mkdir(parents=True, exist_ok=True)
    labels = [_member_label(m, i) for i, m in enumerate(members)]
    figures: dict[str, Path] = {}
    notes: list[str] = []
    if members:
        figures["weights"] = _plot_bars(
            labels,
            [float(m.get("weight", 0.0)) for m in members],
            out / "weights.png",
            title=f"Member weights ({manifest.get('method', '?')})",
            ylabel="weight",
        )
        figures["scores"] = _plot_scores(labels, members, scores, metric, out / "scores.png")
    else:
        notes.append("The manifest lists no members.")
    figures.update(_prediction_figures(pred, out, f"ensemble {name}"))
    score_names = [
        ("ensemble_devel", "ensemble on devel (selected there: optimistic)"),
        ("honest_ensemble", "ensemble, honest estimate (cross-fitted)"),
        ("best_single_devel", "best single member on devel"),
        ("honest_best_single", "best single member, honest estimate"),
    ]
    sections = [
        "<h2>Scores</h2>",
        _table(
            ["", f"devel {metric}"],
            [[label, _num(scores.get(k))] for k, label in score_names if k in scores],
        ),
        "<h2>Members</h2>",
        _table(
            ["member", "weight", f"devel {metric}", "params"],
            [
                [
                    lab,
                    _num(m.get("weight")),
                    _num(m.get("devel_score")),
                    ", ".join(f"{k}={_fmt_param(v)}" for k, v in (m.get("params") or {}).items()),
                ]
                for lab, m in zip(labels, members, strict=True)
            ],
        ),
    ]
    sections += _per_column_section(pred, f"ensemble {name}")
    post = manifest.get("postprocess") or {}
    facts = [
        ("ensemble", manifest.get("name", name)),
        ("track", manifest["track"]),
        ("method", manifest.get("method", "")),
        ("metric", metric),
        ("members", len(members)),
        ("post-processing", json.dumps(post) if post else "none"),
        ("created", manifest.get("created", "")),
        ("made by", f"abaw {manifest.get('abaw_version', '?')}"),
    ]
    page = _html_page(f"abaw report: ensemble {name}", facts, sections, figures, notes)
    return Report(_write_html(out, page), figures, notes, "ensemble", name)


def _num(v: Any) -> Any:
    return (
        float(v)
        if isinstance(v, int | float) and not isinstance(v, bool)
        else ("" if v is None else v)
    )


def _plot_scores(labels, members, scores, metric: str, path: Path) -> Path:
    """Members' devel scores as bars, the ensemble and honest estimates as reference lines."""
    plt = _plt()
    vals = [float(m.get("devel_score", float("nan"))) for m in members]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(labels))
    bars = ax.bar(x, vals, color="tab:gray", label="member (devel)")
    for b, v in zip(bars, vals, strict=True):
        if np.isfinite(v):
            ax.annotate(
                f"{v:.4f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8
            )
    lines = [
        ("ensemble_devel", "ensemble (devel)", "tab:blue", "-"),
        ("honest_ensemble", "ensemble (honest)", "tab:blue", "--"),
        ("best_single_devel", "best single (devel)", "tab:orange", "-"),
        ("honest_best_single", "best single (honest)", "tab:orange", "--"),
    ]
    shown = [v for v in vals if np.isfinite(v)]
    for key, label, color, ls in lines:
        v = scores.get(key)
        if isinstance(v, int | float) and np.isfinite(v):
            ax.axhline(v, color=color, ls=ls, lw=1.8, label=f"{label} {v:.4f}")
            shown.append(float(v))
    lo, hi = (min(shown), max(shown)) if shown else (0.0, 1.0)
    pad = 0.15 * (hi - lo or abs(hi) or 1.0)
    ax.set_ylim(min(0.0, lo - pad) if lo < 0 else max(0.0, lo - 3 * pad), hi + pad)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel(f"devel {metric}")
    ax.set_title("Members vs ensemble, with honest (cross-fitted) estimates")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


# ---------------------------------------------------------------- entry points


def make_report(
    *,
    study: str | optuna.Study | None = None,
    ensemble: str | None = None,
    storage: str | None = None,
    runs: str | os.PathLike[str] = "runs",
    artifacts: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> Report:
    """Write the HTML page and PNG figures of one study or one ensemble.

    Args:
        study: a study name (opened from `storage`) or an `optuna.Study` already open.
        ensemble: an ensemble name under `<runs>/ensembles/` (exclusive with `study`).
        storage: Optuna storage URL; None = the local journal file under `runs`.
        runs: the run directory.
        artifacts: artifact store folder; None = the one the study records.
        out: output folder; default `<runs>/reports/<name>/`.
    """
    if (study is None) == (ensemble is None):
        raise AbawError("give exactly one of a study or an ensemble to report on")
    runs = Path(runs)
    if ensemble is not None:
        dest = Path(out) if out else runs / "reports" / safe_name(ensemble, what="ensemble name")
        return _ensemble_report(ensemble, runs, dest)
    st = study if isinstance(study, optuna.Study) else _load_study(study, storage, runs)
    dest = Path(out) if out else runs / "reports" / safe_name(st.study_name, what="study name")
    return _study_report(st, dest, artifacts)
