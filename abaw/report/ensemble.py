"""The report of one ensemble: the verdict, member weights and scores, devel per column.

Reads the ensemble folder through the ensembler's own loader (`load_ensemble_devel`: the
manifest and devel predictions of Contract B; the test file is not read). Nothing here asks
which track it is: post-processing is shown as the manifest records it, flattened to a table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from abaw.ensemble.manifest import load_ensemble_devel
from abaw.ensemble.verdict import verdict_of
from abaw.io import writable_dir
from abaw.metrics import metric_label
from abaw.report.devel import devel_part
from abaw.report.ensemble_figures import plot_scores, plot_weights
from abaw.report.html import Report, fmt_param, num, page, paragraph, table, write_html

SCORE_ROWS = (
    ("ensemble_devel", "ensemble on devel (selected there: optimistic)"),
    ("honest_ensemble", "ensemble, honest estimate (cross-fitted)"),
    ("best_single_devel", "best single member on devel"),
    ("honest_best_single", "best single member, honest estimate"),
)
WHY_WEIGHT_ZERO = (
    "Greedy selection (Caruana et al. 2004) starts from the best few members and then, step "
    "by step, adds (with replacement) the member whose addition raises the devel score most; "
    "the weights are the counts of the best prefix of that trajectory. A member that is never "
    "added gets weight 0 even when it scores well alone: at every step another member raised "
    "the score more. A near copy of a member already in adds almost nothing, while a weaker "
    "member whose errors differ can add more, so weights do not follow the members' own scores."
)


def ensemble_report(name: str, runs: Path, out: Path) -> Report:
    """Write `out/report.html` and the PNGs of ensemble `name` under `runs`."""
    manifest, pred = load_ensemble_devel(name, runs)
    members = manifest["members"]
    scores = manifest["scores"]
    metric = metric_label(manifest.get("metric"))
    verdict = verdict_of(manifest)
    writable_dir(out, "report folder")
    labels = [member_label(m, i) for i, m in enumerate(members)]
    figures: dict[str, Path] = {}
    notes: list[str] = []
    if members:
        weights = [float(m.get("weight", 0.0)) for m in members]
        fallback = manifest.get("method_used") == "best_single"
        title = "Member weights" + (
            " (the ensemble did not win: the best single member is written)"
            if fallback
            else f" ({manifest.get('method_used', '?')} ensemble)"
        )
        figures["weights"] = plot_weights(labels, weights, out / "weights.png", title)
        figures["scores"] = plot_scores(
            labels, members, scores, metric, out / "scores.png", verdict=verdict
        )
    else:
        notes.append("The manifest lists no members.")
    devel_figures, devel_sections = devel_part(pred, out, f"ensemble {name}")
    figures.update(devel_figures)
    sections = [
        *_comparison(scores, verdict, manifest, metric),
        *_members(labels, members, metric),
        *_selection(manifest, metric),
        *_postprocess(manifest.get("postprocess") or {}),
        *devel_sections,
    ]
    facts = [
        ("ensemble", manifest.get("name", name)),
        ("track", manifest["track"]),
        ("method asked", manifest.get("method", "")),
        ("written predictions", _written(manifest)),
        ("metric", f"devel {metric}"),
        ("members", len(members)),
        ("created", manifest.get("created", "")),
        ("made by", f"abaw {manifest.get('abaw_version', '?')}"),
    ]
    lead = []
    if verdict:
        lead.append(paragraph(verdict["line"], "ok" if verdict.get("ensemble_wins") else "note"))
    text = page(f"abaw report: ensemble {name}", facts, sections, figures, notes, lead=lead)
    return Report(write_html(out, text), figures, notes, "ensemble", name)


def _written(manifest: dict[str, Any]) -> str:
    """What the folder's predictions (and so the submission) are, in words."""
    used = manifest.get("method_used", "")
    if used == "best_single":
        best = manifest.get("scores", {}).get("best_single_member", "?")
        return f"best single member {best} (the {manifest.get('ensemble_method_used', '')} ensemble did not win)"
    return f"{used} ensemble"


def _comparison(
    scores: dict[str, Any], verdict: dict[str, Any], manifest: dict[str, Any], metric: str
) -> list[str]:
    """The honest comparison as a table: devel and honest per side, the gain, the verdict."""
    best = scores.get("best_single_member", "?")
    ens = manifest.get("ensemble_method_used", manifest.get("method_used", ""))
    rows = [
        [
            f"best single ({best})",
            num(scores.get("best_single_devel")),
            num(scores.get("honest_best_single")),
        ],
        [
            f"ensemble ({ens})",
            num(scores.get("ensemble_devel")),
            num(scores.get("honest_ensemble")),
        ],
    ]
    if verdict:
        rows.append(["honest gain (ensemble - best single)", "", f"{verdict['honest_gain']:+.4f}"])
        word = "ensemble wins" if verdict.get("ensemble_wins") else "ensemble does not win"
        rows.append(["verdict", "", f"{word}; written: {verdict.get('written', '')}"])
    return [
        "<h2>Honest comparison</h2>",
        paragraph(
            "Devel scores were selected on devel and are optimistic; the honest estimate fits "
            "everything on one half of devel and scores the other, both ways."
        ),
        table(["", f"devel {metric}", f"honest {metric}"], rows),
    ]


def _members(labels: list[str], members: list[dict[str, Any]], metric: str) -> list[str]:
    """Members with their weights; weight 0 reads "not used" and the row is greyed."""
    fallback = any("ensemble_weight" in m for m in members)
    header = ["member", "weight", *(["ensemble weight"] if fallback else []), f"devel {metric}"]
    rows, classes = [], []
    for lab, m in zip(labels, members, strict=True):
        w = float(m.get("weight", 0.0) or 0.0)
        ew = [_weight(m.get("ensemble_weight"))] if fallback else []
        params = ", ".join(f"{k}={fmt_param(v)}" for k, v in (m.get("params") or {}).items())
        rows.append([lab, _weight(w), *ew, num(m.get("devel_score")), params])
        classes.append("" if w > 0 else "unused")
    wrap = (len(header),)
    return [
        "<h2>Members</h2>",
        table([*header, "params"], rows, wrap=wrap, row_class=classes, names=True),
    ]


def _weight(w: Any) -> str:
    if not isinstance(w, int | float):
        return ""
    return f"{w:.3f}" if w > 0 else "0 (not used)"


def _selection(manifest: dict[str, Any], metric: str) -> list[str]:
    """Greedy's trajectory: which member each step added, the score after it, what was kept."""
    sel = manifest.get("selection")
    if not sel:
        return []
    kept, start = int(sel.get("kept", 0)), int(sel.get("start", 0))
    rows, classes = [], []
    for i, step in enumerate(sel.get("steps", []), 1):
        how = "start (best alone)" if i <= start else "added"
        rows.append([i, how, step["member"], float(step["score"]), "yes" if i <= kept else ""])
        classes.append("" if i <= kept else "unused")
    return [
        "<h2>Greedy selection: why each weight is what it is</h2>",
        paragraph(WHY_WEIGHT_ZERO),
        paragraph(
            f"The first {kept} of {len(rows)} steps were kept (the shortest prefix with the "
            "best devel score); each member's weight is how often it appears there. Scores "
            "here are of the plain weighted average, before any post-processing below, so "
            "the last one kept can differ from the ensemble's devel score."
        ),
        table(
            ["step", "how", "member", f"devel {metric} after (before post-processing)", "kept"],
            rows,
            row_class=classes,
            left=(1, 2, 4),
        ),
    ]


def _postprocess(post: dict[str, Any]) -> list[str]:
    """The post-processing the ensemble fitted, as rows of what / setting / value."""
    rows = []
    for key, value in post.items():
        if isinstance(value, dict) and value and not any(value.values()):
            rows.append([key.replace("_", " "), f"all {len(value)}", "0 (none kept)"])
        elif isinstance(value, dict):
            for sub, v in value.items():
                shown = f"{v:+.2f}" if isinstance(v, float) else fmt_param(v)
                rows.append([key.replace("_", " "), sub, shown])
        else:
            rows.append([key.replace("_", " "), "", fmt_param(value)])
    if not rows:
        return [
            "<h2>Post-processing</h2>",
            paragraph(
                "none chosen on devel (only what the track always applies, e.g. clipping to the label range)"
            ),
        ]
    return ["<h2>Post-processing (chosen on devel)</h2>", table(["step", "setting", "value"], rows)]


def member_label(m: dict[str, Any], i: int) -> str:
    """ "study#trial" for a study member, "folder/file" for a teammate's file."""
    if m.get("source") == "study" or m.get("study"):
        return f"{m.get('study', '?')}#{m.get('trial', '?')}"
    path = Path(str(m.get("path") or f"member {i}"))
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem
