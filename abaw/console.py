"""One rich console and progress-bar factory, so every command looks the same."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


class InfoColumn(ProgressColumn):
    """Free text a task updates as it goes (`progress.update(t, info="loss 0.12")`)."""

    def render(self, task) -> Text:  # noqa: D102
        return Text(str(task.fields.get("info", "")))


def progress(*, transient: bool = False, disable: bool | None = None) -> Progress:
    """A progress bar with count, elapsed and remaining time.

    Disabled automatically when stderr is not a terminal (CI logs, tests), unless forced.
    """
    if disable is None:
        disable = not sys.stderr.isatty()
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        InfoColumn(),
        console=err_console,
        transient=transient,
        disable=disable,
    )
