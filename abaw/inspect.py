"""`abaw inspect`: what the loaders find in a data folder, and every problem.

Each track's data module returns an `InspectReport` (plain data); this module
only renders it. A user runs this on the real data before spending GPU hours.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from abaw.console import console, escape
from abaw.errors import AbawError


@dataclass
class Section:
    """One titled table of the report."""

    title: str
    columns: list[str]
    rows: list[list[object]] = field(default_factory=list)


@dataclass
class InspectReport:
    """What was found (sections) and what is wrong (problems, one sentence each)."""

    track: str
    root: Path
    summary: dict[str, object] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # errors: training would fail or be wrong
    warnings: list[str] = field(default_factory=list)  # handled by a documented policy

    def render(self) -> None:
        """Print the report as rich tables."""
        # Everything from the data (paths, IDs like [batch2/00030]) is escaped: rich would
        # take square brackets for markup and drop them.
        head = Table(title=escape(f"{self.track.upper()} data at {self.root}"), show_header=False)
        head.add_column("what", style="bold")
        head.add_column("value")
        for k, v in self.summary.items():
            head.add_row(escape(str(k)), escape(str(v)))
        if self.summary:  # (an empty headerless table would span the whole console)
            console.print(head)
        else:
            console.print(escape(f"{self.track.upper()} data at {self.root}"))
        for sec in self.sections:
            t = Table(title=escape(sec.title))
            for c in sec.columns:
                t.add_column(escape(c))
            for row in sec.rows:
                t.add_row(*[escape(_fmt(x)) for x in row])
            console.print(t)
        for w in self.warnings:
            console.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
        for p in self.problems:
            console.print(f"[bold red]problem:[/] {escape(p)}", soft_wrap=True)
        if not self.problems:
            console.print("[green]No problems found.[/]")


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def main(args: argparse.Namespace) -> int:
    """CLI: render the track's inspection; exit 1 when problems were found."""
    from abaw.track import get_track

    features = [f.strip() for f in args.features.split(",")] if args.features else None
    extra = {}
    if getattr(args, "test_frames", None) or getattr(args, "test_videos", None):
        if args.track != "expr":
            raise AbawError("--test-frames / --test-videos are Expr options")
        extra = {"test_frames": args.test_frames, "test_videos": args.test_videos}
    report: InspectReport = get_track(args.track).inspect(
        Path(args.data), features=features, use_cache=not args.no_cache, **extra
    )
    report.render()
    return 1 if report.problems else 0
