"""What a data check found: titled tables, problems and warnings, as plain data.

Each track's data module fills an `InspectReport` (`Track.inspect`); the CLI renders it
(`abaw inspect`). It lives below both wings so a wing never imports a pipeline stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
