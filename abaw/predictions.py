"""The one on-disk form of predictions, read by ensembling, metrics and submission.

A `Predictions` is a table: key columns that identify each row (ERI: `id`;
Expr: `video`, `frame`), a float matrix of values with named columns (ERI: the
7 intensities; Expr: the 8 class probabilities), optional labels (so the
ensembler can score validation predictions without reloading the data set),
and a small JSON-able `meta` dict (model, trial, metric, ...).

Stored as a `.npz` of plain arrays (strings as fixed-width unicode, never
objects) and read back with `allow_pickle=False`: nothing is unpickled.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abaw.errors import DataError
from abaw.io import atomic_open, os_error, path_error

FORMAT_VERSION = 1


@dataclass
class Predictions:
    """Per-row predictions of one model on one split.

    Args:
        track: "eri" or "expr".
        split: "devel" or "test" (or "train").
        keys: name -> 1-D array, one entry per row; together they identify a row.
        values: (n_rows, n_columns) float32.
        columns: names of the value columns.
        labels: optional ground truth, (n_rows, n_columns) floats (ERI) or (n_rows,) ints (Expr, -1 = none).
        meta: plain JSON-able facts about where the predictions came from.
    """

    track: str
    split: str
    keys: dict[str, np.ndarray]
    values: np.ndarray
    columns: tuple[str, ...]
    labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        self.columns = tuple(self.columns)
        if self.values.ndim != 2 or self.values.shape[1] != len(self.columns):
            raise ValueError(f"values must be (n, {len(self.columns)}), got {self.values.shape}")
        n = self.values.shape[0]
        if not self.keys:
            raise ValueError("predictions need at least one key column")
        self.keys = {k: np.asarray(v) for k, v in self.keys.items()}
        for k, v in self.keys.items():
            if v.shape != (n,):
                raise ValueError(f"key {k!r} has shape {v.shape}, expected ({n},)")
            if v.dtype == object:
                self.keys[k] = v.astype(str)
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.shape[0] != n:
                raise ValueError(f"labels have {self.labels.shape[0]} rows, values {n}")

    def __len__(self) -> int:
        return self.values.shape[0]

    def key_tuples(self) -> list[tuple]:
        """Row keys as tuples (for messages and small tables; alignment uses `match_rows`)."""
        cols = [self.keys[k].tolist() for k in self.keys]
        return list(zip(*cols, strict=True))

    def take(self, rows: np.ndarray) -> Predictions:
        """The rows `rows` (an index array), in that order, with the same meta."""
        return Predictions(
            self.track,
            self.split,
            {k: v[rows] for k, v in self.keys.items()},
            self.values[rows],
            self.columns,
            None if self.labels is None else self.labels[rows],
            dict(self.meta),
        )

    def order_by(self, other: Predictions) -> Predictions:
        """Return these predictions re-ordered to `other`'s rows (same key set required)."""
        if tuple(self.keys) != tuple(other.keys):
            raise ValueError(f"key columns differ: {tuple(self.keys)} vs {tuple(other.keys)}")
        m = match_rows(self.keys, other.keys)
        if (m.take < 0).any():
            i = int(np.flatnonzero(m.take < 0)[0])
            raise ValueError(f"row {describe_row(other.keys, i)} of the reference is missing here")
        if len(self) != len(other):
            raise ValueError(f"{len(self)} rows here, {len(other)} in the reference")
        return self.take(m.take)

    def save(self, path: str | Path) -> Path:
        """Write atomically as `.npz` (plain arrays only)."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "values": self.values,
            "columns": np.array(self.columns, dtype=str),
            "header": np.array(
                json.dumps(
                    {
                        "format": FORMAT_VERSION,
                        "track": self.track,
                        "split": self.split,
                        "keys": list(self.keys),
                        "meta": self.meta,
                    }
                )
            ),
        }
        for k, v in self.keys.items():
            arrays[f"key_{k}"] = v
        if self.labels is not None:
            arrays["labels"] = self.labels
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Predictions:
        """Read a file written by `save`; a missing, truncated or foreign file raises DataError.

        The one reader of prediction files (ensemble members, ensembles, `abaw submit`), so
        every caller names what it was given the same way: a CSV, a lone .npy, a cut copy.
        """
        path = Path(path)
        foreign = sniff_npz(path)
        if foreign is not None:
            raise foreign
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                keys = {k: z[f"key_{k}"] for k in header["keys"]}
                labels = z["labels"] if "labels" in z.files else None
                return cls(
                    header["track"],
                    header["split"],
                    keys,
                    z["values"],
                    tuple(z["columns"].tolist()),
                    labels,
                    header.get("meta", {}),
                )
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise DataError(
                path,
                "truncated or damaged predictions file",
                expected="a whole " + NPZ_EXPECTED.removeprefix("a "),
                found=f"a damaged zip ({e})",
                hint="The file was cut short (an interrupted copy or a full disk?); "
                "copy or write it again",
            ) from None
        except (KeyError, ValueError, TypeError, AttributeError, OSError) as e:
            raise DataError(
                path,
                "not an abaw predictions file",
                expected=NPZ_EXPECTED,
                found=f"a .npz without the expected arrays ({type(e).__name__}: {e})",
                hint="Write it with abaw.predictions.Predictions(...).save(path) "
                "(docs/ensembling.md, 'Bringing a teammate's predictions')",
            ) from None

    def to_frame(self):
        """A pandas DataFrame: key columns then value columns (for CSV export and reports)."""
        import pandas as pd

        data = {k: v for k, v in self.keys.items()}
        data.update({c: self.values[:, i] for i, c in enumerate(self.columns)})
        return pd.DataFrame(data)


NPZ_EXPECTED = "a predictions .npz written by abaw.predictions.Predictions.save"


def sniff_npz(path: Path) -> DataError | None:
    """A DataError saying what `path` is when it cannot be a predictions .npz, else None.

    Why: `np.load` of a CSV says "pickled data", which sends a user looking for pickles.
    """
    bad = path_error(path, NPZ_EXPECTED)
    if bad is not None:
        return bad
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        return DataError(path, "predictions file not found", expected=NPZ_EXPECTED, found="nothing")
    except OSError as e:
        return os_error(path, e, NPZ_EXPECTED)
    if head.startswith(b"PK"):
        return None
    if not head:
        found = "an empty file"
    elif head.startswith(b"\x93NUMPY"):
        found = "a single .npy array, not a .npz"
    elif all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        found = f"a text file (a CSV?) starting {head.decode(errors='replace')!r}"
    else:
        found = f"another kind of file (first bytes {head!r})"
    splits = [s for s in ("devel", "test") if s in Path(path).name] or ["devel", "test"]
    wrote = " or ".join(f"predictions-{s}.npz" for s in splits)  # the file this one stands for
    return DataError(
        path,
        "not a predictions file",
        expected=NPZ_EXPECTED,
        found=found,
        hint=f"Pass the .npz that `abaw train`, `abaw tune` or `abaw ensemble` wrote "
        f"({wrote}), not a submission CSV",
    )


def check_finite(pred: Predictions, where: str | Path) -> None:
    """Refuse predictions holding NaN or inf, naming `where` (the file), the first row's key
    and the column: a NaN would reach a submission as the text "nan"."""
    bad = ~np.isfinite(pred.values)
    if not bad.any():
        return
    row, col = (int(i) for i in np.argwhere(bad)[0])
    raise DataError(
        where,
        f"{int(bad.any(axis=1).sum())} row(s) of {pred.split} predictions are not finite",
        column=pred.columns[col],
        expected="finite numbers",
        found=f"{pred.values[row, col]} first in row {describe_row(pred.keys, row)}",
        hint="Fix the model or the file that produced them (a diverged model gives NaN); "
        "rebuild it, then try again",
    )


# ---------------------------------------------------------------- row alignment
# The one way rows of two key tables are matched (ensemble members, frame lists,
# `Predictions.order_by`): each key column is coded against the reference's sorted unique
# values, so a million Expr frames are matched with sorts, never a dict of tuples.


def row_codes(
    cols: Sequence[np.ndarray], ref_cols: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """One int64 code per row of `cols` and of `ref_cols`, equal iff the key tuples are equal.

    Rows of `cols` holding a value absent from the reference get code -1 (never equal to a
    reference code).
    """
    code = np.zeros(len(cols[0]), np.int64)
    ref = np.zeros(len(ref_cols[0]), np.int64)
    ok = np.ones(len(cols[0]), bool)
    for c, r in zip(cols, ref_cols, strict=True):
        if c.dtype.kind in "US" or r.dtype.kind in "US":
            c, r = c.astype(str), r.astype(str)
        u = np.unique(r)
        pos = np.searchsorted(u, c).clip(0, max(len(u) - 1, 0))
        ok &= (u[pos] == c) if len(u) else np.zeros(len(c), bool)
        code = code * (len(u) + 1) + pos
        ref = ref * (len(u) + 1) + np.searchsorted(u, r)
    return np.where(ok, code, -1), ref


@dataclass
class RowMatch:
    """How the rows of a key table meet the rows of a reference key table."""

    take: np.ndarray  # (n_ref,) the row of `keys` holding each reference row; -1 = none
    extra: np.ndarray  # rows of `keys` that are not reference rows
    duplicate: int | None  # a row of `keys` whose key appeared on an earlier row; None = none
    ref_duplicate: int | None  # the same for the reference


def match_rows(keys: dict[str, np.ndarray], ref_keys: dict[str, np.ndarray]) -> RowMatch:
    """Match the rows of `keys` to those of `ref_keys` (the same key columns, in `ref_keys` order).

    Callers word their own errors from the result: which reference rows are missing, which
    rows are extra, which are listed twice.
    """
    names = list(ref_keys)
    code, ref = row_codes([keys[k] for k in names], [ref_keys[k] for k in names])
    n_ref = len(ref)
    order_ref = np.argsort(ref, kind="stable")
    ref_dup = np.flatnonzero(np.diff(ref[order_ref]) == 0)
    order = np.argsort(code, kind="stable")
    sc = code[order]
    dup = np.flatnonzero((np.diff(sc) == 0) & (sc[1:] >= 0))
    if n_ref and len(sc):
        pos = np.searchsorted(sc, ref).clip(0, len(sc) - 1)
        take = np.where(sc[pos] == ref, order[pos], -1)
    else:
        take = np.full(n_ref, -1, np.int64)
    extra = np.flatnonzero((code < 0) | ~np.isin(code, ref))
    return RowMatch(
        take.astype(np.int64),
        extra,
        int(order[dup[0] + 1]) if len(dup) else None,
        int(order_ref[ref_dup[0] + 1]) if len(ref_dup) else None,
    )


def describe_row(keys: dict[str, np.ndarray], i: int) -> str:
    """Row `i` of a key table as text for messages: "00012", "video3/42"."""
    return "/".join(str(keys[k][i]) for k in keys)
