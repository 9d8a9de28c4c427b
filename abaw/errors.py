"""Errors that reach the user as one clear sentence instead of a traceback.

Every problem with user input names the file, the row or column, what was
expected and what was found, so a user with 25,000 feature files can fix the
one that is wrong. The CLI catches `AbawError`, prints its message and exits 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike


class AbawError(Exception):
    """Base class: an expected failure whose message is shown to the user as is."""


class ConfigError(AbawError):
    """A sweep file, `--set` override or option is invalid."""


class UnsafeNameError(ConfigError, ValueError):
    """A name that would become a file or folder name is not a plain one (`safe_name`).

    A ValueError too, so loaders that turn a bad name in a data file into a DataError
    still catch it; anywhere else it reaches the user as one sentence, not a traceback.
    """


class DataError(AbawError):
    """A data file is missing or malformed.

    Args:
        path: the offending file or folder.
        problem: what is wrong, as a short phrase ("wrong column count").
        row: 1-based line number in the file (the header is line 1), if known.
        column: column name or 1-based index, if known.
        expected: what the toolkit expected.
        found: what it found instead.
        hint: how to fix it, as a sentence (appended after the message).
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
        hint: str | None = None,
    ) -> None:
        self.path = str(path)
        self.hint = hint
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
        msg += "."
        if self.hint:
            msg += " " + self.hint.rstrip(".") + "."
        return msg

    def __reduce__(self):  # keyword fields: plain pickling would lose them (joblib workers)
        return (
            _rebuild_data_error,
            (
                self.path,
                self.problem,
                self.row,
                self.column,
                self.expected,
                self.found,
                self.hint,
            ),
        )


def _rebuild_data_error(path, problem, row, column, expected, found, hint) -> DataError:
    return DataError(
        path, problem, row=row, column=column, expected=expected, found=found, hint=hint
    )


class SubmissionError(AbawError):
    """A submission file would be rejected by the challenge server."""


def split_overlap(
    items: Iterable[tuple[str, str, str]], *, path: str | PathLike[str], what: str = "sample"
) -> DataError | None:
    """One DataError naming every sample that two splits share, or None.

    `items` are (key, split, shown name): the key is what identifies the underlying data
    (an ERI feature-file stem, an Expr video name), the shown name how the user spells it.
    Used by both tracks: train/devel overlap silently inflates every validation score.
    """
    seen: dict[str, dict[str, list[str]]] = {}
    for key, split, shown in items:
        seen.setdefault(key, {}).setdefault(split, []).append(shown)
    shared = {k: v for k, v in seen.items() if len(v) > 1}
    if not shared:
        return None
    shown = [
        " / ".join(f"{n} ({s})" for s, names in v.items() for n in dict.fromkeys(names))
        for v in shared.values()
    ]
    listing = "; ".join(shown[:10]) + (f"; ... ({len(shown)} in all)" if len(shown) > 10 else "")
    return DataError(
        path,
        f"{len(shared)} {what}(s) in more than one split",
        expected="train, devel and test disjoint",
        found=listing,
        hint="Each sample must belong to exactly one split (shared samples leak labels "
        "into the validation score); fix the split table or remove the duplicate",
    )
