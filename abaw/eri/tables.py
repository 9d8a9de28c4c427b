"""The ERI tables: labels.csv + partition.csv (MuSe layout) or data_info.csv (ABAW5 layout).

IDs, splits and intensities are validated here, each problem a DataError that
names the table, line and column (collected instead of raised for `abaw inspect`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from abaw.eri import EMOTIONS
from abaw.eri.csvio import _report, check_id, file_stem, read_table
from abaw.errors import DataError, split_overlap
from abaw.io import find_data_root, folder_problem

SPLITS = ("train", "devel", "test")
_ABAW5_SPLITS = {"Train": "train", "Val": "devel", "Test": "test"}


def _has_tables(d: Path) -> bool:
    return (d / "data_info.csv").is_file() or (d / "labels.csv").is_file()


def find_eri_root(root: Path) -> tuple[Path, str | None]:
    """The folder holding the ERI tables: `root`, or its one subfolder that does.

    The MuSe release unpacks into `c2_muse_reaction/`; a user pointing `--data` at the
    folder above it gets that subfolder, and a note saying so.
    """
    root = Path(root)
    found, cands = find_data_root(root, _has_tables)
    if found != root:
        return found, f"{root} holds no ERI tables; using its subfolder {found.name}/, which does."
    return root, None


def detect_layout(root: Path) -> str:
    """ "abaw5" if data_info.csv exists, "muse" if labels.csv and partition.csv do."""
    bad = folder_problem(root, "the ERI data set folder")
    if bad is not None:
        raise bad
    if not root.is_dir():
        raise DataError(root, "data folder not found", expected="a folder", found="nothing")
    if (root / "data_info.csv").is_file():
        return "abaw5"
    if (root / "labels.csv").is_file() or (root / "partition.csv").is_file():
        for name in ("labels.csv", "partition.csv"):
            if not (root / name).is_file():
                raise DataError(
                    root / name,
                    "file not found",
                    expected="labels.csv and partition.csv (MuSe layout)",
                    found="only the other one",
                )
        return "muse"
    _, cands = find_data_root(root, _has_tables)
    raise DataError(
        root,
        "no ERI table found",
        expected="data_info.csv (ABAW5) or labels.csv + partition.csv (MuSe)",
        found="neither"
        + (f"; subfolders that have them: {', '.join(c.name for c in cands)}" if cands else ""),
        hint="Point --data at one of those subfolders" if cands else None,
    )


@dataclass
class _Rows:
    """The sample rows of a layout's tables: IDs, splits, raw label cells, line numbers."""

    table: Path  # the table the labels come from (for messages)
    ids: list[str] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    raw: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    meta: pd.DataFrame | None = None


def read_tables(
    root: Path,
    layout: str,
    problems: list[DataError] | None = None,
    *,
    notes: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame | None]:
    """IDs, splits, labels and metadata from the layout's tables.

    Returns (ids, split, labels, meta). `notes` collects what was handled by policy
    (e.g. non-UTF-8 bytes in an unused metadata column).
    """
    rows = _read_muse(root, problems) if layout == "muse" else _read_abaw5(root, problems, notes)
    labels = _parse_labels(rows.table, rows.raw, rows.split, rows.lines, problems)
    _check_one_file_per_id(rows.table, rows.ids, rows.split, rows.lines, problems)
    return np.array(rows.ids, dtype=str), np.array(rows.split, dtype=str), labels, rows.meta


def _read_muse(root: Path, problems: list[DataError] | None) -> _Rows:
    """labels.csv joined with partition.csv; an ID in only one of them is a problem."""
    lab_path, part_path = root / "labels.csv", root / "partition.csv"
    _, lab_rows = read_table(lab_path, ["File_ID", *EMOTIONS])
    _check_ids(lab_path, lab_rows, problems)
    _, part_rows = read_table(part_path, ["Id", "Partition"])
    part = _read_partition(part_path, part_rows, problems)
    out = _Rows(lab_path)
    for lineno, row in enumerate(lab_rows, start=2):
        if row[0] not in part:
            _report(
                problems,
                DataError(
                    lab_path,
                    "ID not in partition.csv",
                    row=lineno,
                    column="File_ID",
                    expected="an ID listed in partition.csv",
                    found=repr(row[0]),
                ),
            )
            continue
        out.ids.append(row[0])
        out.split.append(part[row[0]])
        out.raw.append(row[1:])
        out.lines.append(lineno)
    known = {r[0] for r in lab_rows}
    for lineno, (pid, _) in enumerate(part_rows, start=2):
        if pid not in known:
            _report(
                problems,
                DataError(
                    part_path,
                    "ID not in labels.csv",
                    row=lineno,
                    column="Id",
                    expected="an ID listed in labels.csv",
                    found=repr(pid),
                ),
            )
    return out


def _read_partition(
    part_path: Path, part_rows: list[list[str]], problems: list[DataError] | None
) -> dict[str, str]:
    """partition.csv as ID -> split; a repeated ID or an unknown partition is a problem."""
    part: dict[str, str] = {}
    for lineno, (pid, value) in enumerate(part_rows, start=2):
        if pid in part:
            _report(
                problems,
                DataError(
                    part_path,
                    "duplicated ID",
                    row=lineno,
                    column="Id",
                    expected="each ID once",
                    found=f"{pid!r} again",
                ),
            )
        if value not in SPLITS:
            _report(
                problems,
                DataError(
                    part_path,
                    "unknown partition",
                    row=lineno,
                    column="Partition",
                    expected="train, devel or test",
                    found=repr(value),
                ),
            )
        part[pid] = value
    return part


def _read_abaw5(root: Path, problems: list[DataError] | None, notes: list[str] | None) -> _Rows:
    """data_info.csv: ID, split, the 7 labels, then metadata columns (Age, Country, ...)."""
    table = root / "data_info.csv"
    header, rows = read_table(table, ["File_ID", "Split", *EMOTIONS], prefix_only=True, notes=notes)
    _check_ids(table, rows, problems)
    out, extra = _Rows(table), []
    for lineno, row in enumerate(rows, start=2):
        if row[1] not in _ABAW5_SPLITS:
            _report(
                problems,
                DataError(
                    table,
                    "unknown split",
                    row=lineno,
                    column="Split",
                    expected="Train, Val or Test",
                    found=repr(row[1]),
                ),
            )
            continue
        out.ids.append(row[0])
        out.split.append(_ABAW5_SPLITS[row[1]])
        out.raw.append(row[2 : 2 + len(EMOTIONS)])
        extra.append(row[2 + len(EMOTIONS) :])
        out.lines.append(lineno)
    cols = header[2 + len(EMOTIONS) :]
    out.meta = pd.DataFrame(extra, columns=cols) if cols else None
    if out.meta is not None and "Age" in out.meta:
        out.meta["Age"] = pd.to_numeric(out.meta["Age"], errors="coerce")
    return out


def _check_one_file_per_id(table: Path, ids, split, lines, problems) -> None:
    """Two spellings of one ID (`[00030]` and `00030`) read the same feature file: across
    splits that is leakage (the shared split-overlap check), within one a duplicate."""
    err = split_overlap(((file_stem(i), s, i) for i, s in zip(ids, split, strict=True)), path=table)
    if err is not None:
        _report(problems, err)
    first: dict[tuple[str, str], tuple[str, int]] = {}
    for i, s, ln in zip(ids, split, lines, strict=True):
        k = (file_stem(i), s)
        if k in first and first[k][0] != i:
            _report(
                problems,
                DataError(
                    table,
                    "two IDs name the same feature file",
                    row=ln,
                    column="File_ID",
                    expected=f"one ID per file {k[0]}.csv (line {first[k][1]} has {first[k][0]!r})",
                    found=repr(i),
                ),
            )
        first.setdefault(k, (i, ln))


def _check_ids(table: Path, rows: list[list[str]], problems: list[DataError] | None) -> None:
    """Each File_ID once, and safe to use as a file name."""
    first: dict[str, int] = {}
    for lineno, row in enumerate(rows, start=2):
        i = row[0]
        if i in first:
            err = DataError(
                table,
                "duplicated ID",
                row=lineno,
                column="File_ID",
                expected=f"each ID once (first on line {first[i]})",
                found=repr(i),
            )
            _report(problems, err)
        first.setdefault(i, lineno)
        err = check_id(table, lineno, "File_ID", i)
        if err:
            _report(problems, err)


def _parse_labels(
    table: Path, raw: list[list[str]], split: list[str], lines: list[int], problems
) -> np.ndarray:
    """Intensities in [0, 1] for labelled rows; NaN for test rows (their values are ignored)."""
    labels = np.full((len(raw), len(EMOTIONS)), np.nan, dtype=np.float32)
    arr = (
        pd.DataFrame(raw, columns=list(EMOTIONS))
        .apply(pd.to_numeric, errors="coerce")
        .to_numpy(np.float64)
        if raw
        else labels
    )
    for k, s in enumerate(split):
        if s == "test":
            continue
        row = arr[k]
        bad = np.flatnonzero(~np.isfinite(row) | (row < 0) | (row > 1))
        if bad.size:
            j = int(bad[0])
            _report(
                problems,
                DataError(
                    table,
                    f"bad label for a {s} sample",
                    row=lines[k],
                    column=EMOTIONS[j],
                    expected="a number in [0, 1]",
                    found=repr(raw[k][j]),
                ),
            )
        labels[k] = row
    return labels
