"""Reading the ERI CSV files strictly: every problem becomes one DataError naming file, line, column.

Feature CSVs are parsed with numpy's C `loadtxt` (about 30x faster than pandas
on these short, wide files); only when that fails, or finds a non-finite
value, does a slow line-by-line pass find the exact line and column to report.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np

from abaw.errors import DataError

N_META = 2  # leading metadata columns of every feature CSV (e.g. id and timestamp)


def read_feature_csv(path: Path) -> np.ndarray:
    """Values of one feature CSV as a (steps, width) float32 array; DataError when malformed."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
        ncols = header.count(",") + 1
        if not header.strip():
            raise DataError(
                path,
                "empty feature file",
                expected="a header line and rows of values",
                found="an empty file",
            )
        if ncols <= N_META:
            raise DataError(
                path,
                "too few columns in the header",
                row=1,
                expected=f"{N_META} metadata columns then feature values",
                found=f"{ncols} column(s)",
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", UserWarning
                )  # "input contained no data": checked below
                values = np.loadtxt(
                    fh, delimiter=",", usecols=range(N_META, ncols), dtype=np.float32, ndmin=2
                )
        except ValueError:
            values = None
    if values is None or not np.isfinite(values).all():
        raise diagnose_feature_csv(path)
    if values.shape[0] == 0:
        raise DataError(
            path,
            "empty feature file",
            expected="at least one row of values after the header",
            found="only the header",
        )
    return values


def diagnose_feature_csv(path: Path) -> DataError:
    """The first problem of a feature CSV that the fast parser rejected, with line and column."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().split("\n")
    ncols = lines[0].count(",") + 1
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            if any(rest.strip() for rest in lines[lineno:]):
                return DataError(
                    path,
                    "blank line inside the file",
                    row=lineno,
                    expected=f"{ncols} comma-separated values",
                    found="an empty line",
                )
            continue
        cells = line.split(",")
        if len(cells) != ncols:
            return DataError(
                path,
                "wrong column count",
                row=lineno,
                expected=f"{ncols} columns like the header",
                found=f"{len(cells)}",
            )
        for col, cell in enumerate(cells[N_META:], start=N_META + 1):
            try:
                v = float(cell)
            except ValueError:
                return DataError(
                    path,
                    "non-numeric value",
                    row=lineno,
                    column=col,
                    expected="a number",
                    found=repr(cell.strip()),
                )
            if not math.isfinite(v):
                return DataError(
                    path,
                    "non-finite value",
                    row=lineno,
                    column=col,
                    expected="a finite number",
                    found=cell.strip(),
                )
    return DataError(
        path,
        "unreadable feature file",
        expected="comma-separated numbers",
        found="a format numpy cannot parse",
    )


def read_table(
    path: Path, expected_header: list[str], *, prefix_only: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a small CSV table (labels, partition, data_info); checks header and field counts.

    Args:
        expected_header: the exact column names (or the leading ones if prefix_only).
    """
    if not path.is_file():
        raise DataError(path, "file not found", expected="a CSV file", found="nothing")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise DataError(
            path, "empty file", row=1, expected=",".join(expected_header), found="no header"
        )
    header = [h.strip() for h in rows[0]]
    got = header[: len(expected_header)] if prefix_only else header
    if got != expected_header:
        raise DataError(
            path, "wrong header", row=1, expected=",".join(expected_header), found=",".join(header)
        )
    body = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:  # csv gives [] for a blank line; a trailing blank line is harmless
            continue
        if len(row) != len(header):
            raise DataError(
                path, "wrong column count", row=lineno, expected=len(header), found=len(row)
            )
        body.append([c.strip() for c in row])
    return header, body


def file_stem(file_id: str) -> str:
    """Feature file name of an ID: `[00000]` -> `00000` (MuSe CSVs bracket IDs, file names do not)."""
    return file_id[1:-1] if file_id.startswith("[") and file_id.endswith("]") else file_id


def check_id(path: Path, lineno: int, column: str, file_id: str) -> DataError | None:
    """An ID becomes a file name: refuse empty IDs, path separators and `..`."""
    stem = file_stem(file_id)
    if not stem or stem in {".", ".."} or any(c in stem for c in "/\\\x00") or ".." in stem:
        return DataError(
            path,
            "unsafe sample ID",
            row=lineno,
            column=column,
            expected="a plain name (no '/', '\\' or '..')",
            found=repr(file_id),
        )
    return None
