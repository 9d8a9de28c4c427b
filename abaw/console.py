"""One rich console and progress-bar factory, so every command looks the same.

On a terminal rich measures the width and wraps. Anywhere else (a log file, a pipe, a
cluster job, a tune worker) nothing is wrapped: rich's default of 80 columns would split a
run folder path over two lines and break grep. User data in messages goes through
`rich.markup.escape` (see `escape`), or an ID like `[batch2/00030]` is eaten as markup.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
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

PLAIN_WIDTH = 4096  # columns when not on a terminal: tables lay out at their natural width

__all__ = ["PLAIN_WIDTH", "console", "err_console", "escape", "make_console", "progress", "warn"]


def make_console(*, stderr: bool = False) -> Console:
    """A console that wraps on a terminal and never elsewhere."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, width=PLAIN_WIDTH, soft_wrap=True)


console = make_console()
err_console = make_console(stderr=True)


def warn(message: str, *, label: str = "warning") -> None:
    """One `warning:` line on stderr (user data escaped): for what a library function handled
    but the user should know, such as a skipped damaged record."""
    err_console.print(f"[yellow]{label}:[/] {escape(message)}", soft_wrap=True, highlight=False)


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
