"""The report of one ensemble: member weights and scores, honest estimates, devel per column.

Reads the ensemble folder through the ensembler's own loader (`load_ensemble_devel`: the
manifest and devel predictions of Contract B; the test file is not read).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from abaw.ensemble.manifest import load_ensemble_devel
from abaw.plots import bar_chart, pyplot, save_png
from abaw.report.devel import devel_part
from abaw.report.html import Report, fmt_param, num, page, table, write_html

SCORE_ROWS = (
    ("ensemble_devel", "ensemble on devel (selected there: optimistic)"),
    ("honest_ensemble", "ensemble, honest estimate (cross-fitted)"),
    ("best_single_devel", "best single member on devel"),
    ("honest_best_single", "best single member, honest estimate"),
)


def ensemble_report(name: str, runs: Path, out: Path) -> Report:
    """Write `out/report.html` and the PNGs of ensemble `name` under `runs`."""
    manifest, pred = load_ensemble_devel(name, runs)
    members = manifest["members"]
    scores = manifest["scores"]
    metric = manifest.get("metric", "score")
    out.mkdir(parents=True, exist_ok=True)
    labels = [member_label(m, i) for i, m in enumerate(members)]
    figures: dict[str, Path] = {}
    notes: list[str] = []
    if members:
        figures["weights"] = bar_chart(
            labels,
            [float(m.get("weight", 0.0)) for m in members],
            out / "weights.png",
            title=f"Member weights ({manifest.get('method', '?')})",
            ylabel="weight",
        )
        figures["scores"] = plot_scores(labels, members, scores, metric, out / "scores.png")
    else:
        notes.append("The manifest lists no members.")
    devel_figures, devel_sections = devel_part(pred, out, f"ensemble {name}")
    figures.update(devel_figures)
    sections = [
        "<h2>Scores</h2>",
        table(
            ["", f"devel {metric}"],
            [[label, num(scores.get(k))] for k, label in SCORE_ROWS if k in scores],
        ),
        "<h2>Members</h2>",
        table(
            ["member", "weight", f"devel {metric}", "params"],
            [
                [
                    lab,
                    num(m.get("weight")),
                    num(m.get("devel_score")),
                    ", ".join(f"{k}={fmt_param(v)}" for k, v in (m.get("params") or {}).items()),
                ]
                for lab, m in zip(labels, members, strict=True)
            ],
        ),
        *devel_sections,
    ]
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
    text = page(f"abaw report: ensemble {name}", facts, sections, figures, notes)
    return Report(write_html(out, text), figures, notes, "ensemble", name)


def member_label(m: dict[str, Any], i: int) -> str:
    """ "study#trial" for a study member, "folder/file" for a teammate's file."""
    if m.get("source") == "study" or m.get("study"):
        return f"{m.get('study', '?')}#{m.get('trial', '?')}"
    path = Path(str(m.get("path") or f"member {i}"))
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


def plot_scores(
    labels: Sequence[str],
    members: Sequence[dict[str, Any]],
    scores: dict[str, Any],
    metric: str,
    path: Path,
) -> Path:
    """Members' devel scores as bars, the ensemble and honest estimates as reference lines."""
    plt = pyplot()
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
    return save_png(fig, path)
