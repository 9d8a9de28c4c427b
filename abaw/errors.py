"""Errors that reach the user as one clear sentence instead of a traceback.

Every problem with user input names the file, the row or column, what was
expected and what was found, so a user with 25,000 feature files can fix the
one that is wrong. The CLI catches `AbawError`, prints its message and exits 1.
"""

from __future__ import annotations

from os import PathLike


class AbawError(Exception):
    """Base class: an expected failure whose message is shown to the user as is."""


class ConfigError(AbawError):
    """A sweep file, `--set` override or option is invalid."""


class DataError(AbawError):
    """A data file is missing or malformed.

    Args:
        path: the offending file or folder.
        problem: what is wrong, as a short phrase ("wrong column count").
        row: 1-based line number in the file (the header is line 1), if known.
        column: column name or 1-based index, if known.
        expected: what the toolkit expected.
        found: what it found instead.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        problem: str,
        *,
        row: int | None = None,
        column: str | int | None = None,
        expected: object = None,
        found: object = None,
    ) -> None:
        self.path = str(path)
        self.problem = problem
        self.row = row
        self.column = column
        self.expected = expected
        self.found = found
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path
        if self.row is not None:
            where += f", line {self.row}"
        if self.column is not None:
            where += (
                f", column {self.column!r}"
                if isinstance(self.column, str)
                else f", column {self.column}"
            )
        msg = f"{where}: {self.problem}"
        details = []
        if self.expected is not None:
            details.append(f"expected {self.expected}")
        if self.found is not None:
            details.append(f"found {self.found}")
        if details:
            msg += " (" + ", ".join(details) + ")"
        return msg + "."


class SubmissionError(AbawError):
    """A submission file would be rejected by the challenge server."""
