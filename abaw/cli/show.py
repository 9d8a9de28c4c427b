"""How the CLI prints what the library returns: tables and lines on the console.

Everything from the data (paths, IDs like `[batch2/00030]`) is printed without markup or
escaped: rich would take square brackets for markup and drop them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from abaw.console import console, err_console, escape
from abaw.metrics import metric_label
from abaw.problems import SHOWN, Problem, total


def line(text: str) -> None:
    """One plain line (no markup: data may hold square brackets)."""
    console.print(text, markup=False, soft_wrap=True)


def tables(items: Sequence[Any]) -> None:
    """Rich renderables (e.g. a Task's summary tables), one after the other."""
    for t in items:
        console.print(t)


def _fmt(x: object) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def inspect_report(report: Any) -> None:
    """An `abaw.findings.InspectReport` as rich tables, then its warnings and problems."""
    title = escape(f"{report.track.upper()} data at {report.root}")
    head = Table(title=title, show_header=False)
    head.add_column("what", style="bold")
    head.add_column("value")
    for k, v in report.summary.items():
        head.add_row(escape(str(k)), escape(str(v)))
    if report.summary:  # (an empty headerless table would span the whole console)
        console.print(head)
    else:
        console.print(title)
    for sec in report.sections:
        t = Table(title=escape(sec.title))
        for c in sec.columns:
            t.add_column(escape(c))
        for row in sec.rows:
            t.add_row(*[escape(_fmt(x)) for x in row])
        console.print(t)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
    for p in report.problems:
        console.print(f"[bold red]problem:[/] {escape(p)}", soft_wrap=True)
    if not report.problems:
        console.print("[green]No problems found.[/]")


def studies(rows: list[dict[str, Any]], where: str) -> None:
    """`abaw studies`: a table on a terminal, one line per study in a log."""
    from abaw.tune import fmt_value

    if not rows:
        print(f"no studies in {where}")
        return
    states = ("complete", "pruned", "fail", "running", "waiting")

    def params(r: dict[str, Any]) -> str:
        return " ".join(f"{k}={fmt_value(v)}" for k, v in r["best_params"].items())

    def metric(r: dict[str, Any]) -> str:
        return metric_label(r.get("metric"))

    if not sys.stdout.isatty():
        for r in rows:
            best = (
                "-"
                if r["best_value"] is None
                else f"{metric(r)} {r['best_value']:.4f} (trial {r['best_trial']})"
            )
            counts = " ".join(f"{s} {r[s]}" for s in states)
            print(f"{r['study']}  {r['track']}/{r['model']}  {counts}  best {best}  {params(r)}")
        return
    table = Table(title=f"studies in {where}")
    for col in ("study", "track", "model", *states, "metric", "best", "best params"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["study"],
            r["track"],
            r["model"],
            *[str(r[s]) for s in states],
            metric(r),
            "" if r["best_value"] is None else f"{r['best_value']:.4f} (#{r['best_trial']})",
            params(r),
        )
    console.print(table)


def _weight(e: dict[str, Any], key: str = "weight") -> str:
    """A member's weight; 0 reads "0 (not used)", so nobody takes it for a rounding."""
    w = e.get(key)
    if w is None:
        return ""
    return f"{w:.3f}" if w > 0 else "0 (not used)"


def ensemble(manifest: dict[str, Any], members: Sequence[Any] | None = None) -> None:
    """Each member's devel score and weight, then best single / ensemble, plain and honest,
    then the verdict: one line with both honest numbers and what was written."""
    from abaw.ensemble.verdict import verdict_of
    from abaw.metrics import metric_label

    sc = manifest["scores"]
    label = metric_label(manifest.get("metric"))
    fallback = any("ensemble_weight" in e for e in manifest["members"])
    t = Table(title=f"ensemble {manifest['name']} ({manifest['track']}, devel {label})")
    for col, just in (("member", "left"), ("source", "left"), ("devel", "right")):
        t.add_column(col, justify=just)
    t.add_column("weight", justify="right")
    if fallback:
        t.add_column("ensemble weight (not written)", justify="right")
    names = (
        [m.name for m in members]
        if members
        else [
            f"{e['study']}#{e['trial']}" if e["source"] == "study" else e["path"]
            for e in manifest["members"]
        ]
    )
    for n, e in zip(names, manifest["members"], strict=True):
        row = [n, e["source"], f"{e['devel_score']:.4f}", _weight(e)]
        t.add_row(*row, *([_weight(e, "ensemble_weight")] if fallback else []))
    console.print(t)
    s = Table(
        title=f"{label} (honest = fitted on one half of devel, scored on the other, both ways)"
    )
    for col in ("", "devel (selection set)", "honest"):
        s.add_column(col, justify="right" if col else "left")
    s.add_row(
        f"best single ({sc['best_single_member']})",
        f"{sc['best_single_devel']:.4f}",
        f"{sc['honest_best_single']:.4f}",
    )
    s.add_row(
        f"ensemble ({manifest.get('ensemble_method_used', manifest['method_used'])})",
        f"{sc['ensemble_devel']:.4f}",
        f"{sc['honest_ensemble']:.4f}",
    )
    gain = sc["honest_ensemble"] - sc["honest_best_single"]
    s.add_row("honest gain", "", f"{gain:+.4f}")
    console.print(s)
    if manifest.get("postprocess"):
        pp = manifest["postprocess"]
        offs = ", ".join(f"{k} {v:+.2f}" for k, v in pp["class_offsets"].items() if v)
        console.print(
            f"post-processing: smoothing {pp['smoothing']['kind']} width "
            f"{pp['smoothing']['width']}; class offsets: {offs or 'none'}",
            soft_wrap=True,
        )
    verdict = verdict_of(manifest)
    for note in manifest.get("notes", []):
        if note != verdict.get("line"):
            line(f"note: {note}")
    if verdict:
        quiet = verdict["ensemble_wins"] or verdict.get("members_used") == 1
        line(("" if quiet else "WARNING: ") + verdict["line"])


def submitted(res: Any) -> None:
    """What `abaw submit` wrote (an `abaw.submit.SubmitResult`)."""
    for note in res.notes:
        line(f"note: {note}")
    what = (
        f"{len(res.files)} per-video files in {res.folder}/"
        if len(res.files) > 1
        else str(res.files[0])
    )
    line(f"validated: {res.rows} rows, 0 problems")
    line(f"submission: {what}")
    line(f"upload:     {res.zip}")
    line(f"manifest:   {res.manifest}")


def problems(found: list[Problem], path: str, limit: int = SHOWN) -> None:
    """The first `limit` problems on stderr, then how many more."""
    n = total(found)
    err_console.print(
        f"{path}: {n} problem(s); the server would reject it", markup=False, soft_wrap=True
    )
    shown = 0
    for p in found:
        if shown >= limit:
            break
        err_console.print(f"  {p}", markup=False, soft_wrap=True)
        shown += p.count
    if n > shown:
        err_console.print(f"  ... and {n - shown} more problem(s)", markup=False, soft_wrap=True)


def report(rep: Any) -> None:
    """What `abaw report` wrote (an `abaw.report.Report`)."""
    for note in rep.notes:
        console.print(f"note: {note}")
    console.print(f"{rep.kind} {rep.name}: {len(rep.figures)} figures")
    for path in rep.figures.values():
        console.print(f"  {path}")
    console.print(f"report: {rep.html}")


def _pct(x: float | None, ceiling: float | None) -> str:
    if x is None or not ceiling:
        return "-"
    return f"{100 * x / ceiling:.0f} %"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def demo_summary(results: list[Any], seconds: float) -> None:
    """The demo's closing table: every variant, the verdict, test truth, and the files."""
    from abaw.metrics import metric_label

    t = Table(title=f"abaw demo: {seconds / 60:.1f} min", title_justify="left")
    for col, just in (
        ("track (metric)", "left"),
        ("model", "left"),
        ("trials (done / pruned)", "right"),
        ("devel", "right"),
        ("% of oracle", "right"),
        ("honest devel", "right"),
        ("honest gain", "right"),
        ("test (synthetic truth)", "right"),
        ("submitted", "left"),
    ):
        t.add_column(col, justify=just)
    for r in results:
        track = f"{r.track} ({metric_label(r.metric)})"
        for v in r.variants:
            t.add_row(
                track, v.study, f"{v.complete} / {v.pruned}", _f(v.best),
                _pct(v.best, r.oracle_devel), "", "", "", "",
            )  # fmt: skip
        s, verdict = r.ensemble, r.verdict
        single = verdict.get("written") == "best_single"
        gain = verdict.get("honest_gain")
        word = (
            ""
            if not verdict
            else " wins"
            if verdict.get("ensemble_wins")
            else " = one member"
            if verdict.get("members_used") == 1
            else " loses"
        )
        t.add_row(
            track, f"best single ({s.get('best_single_member', '?')})", "",
            _f(s.get("best_single_devel")), _pct(s.get("best_single_devel"), r.oracle_devel),
            _f(s.get("honest_best_single")), "", _f(r.best_single_test),
            "yes (+ post-processing)" if single else "",
        )  # fmt: skip
        t.add_row(
            track, f"[bold]ensemble[/] (greedy){word}", "", _f(s.get("ensemble_devel")),
            _pct(s.get("ensemble_devel"), r.oracle_devel), _f(s.get("honest_ensemble")),
            "" if gain is None else f"{gain:+.4f}", _f(r.ensemble_test),
            "" if single else "yes",
        )  # fmt: skip
        t.add_row(
            track, "oracle (ceiling)", "", _f(r.oracle_devel), "100 %", "", "", _f(r.oracle_test), ""
        )  # fmt: skip
        t.add_section()
    console.print(t)
    for r in results:
        if r.verdict:
            line(f"{r.track}: {r.verdict['line']}")
        for v in r.variants:
            first = (
                ""
                if v.fixed_first is None
                else f"; first trial ([fixed] values) {v.fixed_first:.4f}"
            )
            line(f"{r.track} {v.study}: {v.pruning()}{first}")
    for r in results:
        if r.submitted_test is not None:
            line(
                f"{r.track} submitted predictions score {r.submitted_test:.4f} on the synthetic test truth"
            )
        console.print(f"{r.track} submission: {escape(str(r.zip))} (validated: {r.valid})")
        for p in r.submission[:3]:
            console.print(f"  {escape(str(p))}")
        if len(r.submission) > 3:
            console.print(f"  ... {len(r.submission)} files")
        console.print(f"{r.track} report: {escape(str(r.report))}")
