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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abaw.errors import DataError
from abaw.io import atomic_open

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
        """Row keys as tuples, for alignment and duplicate checks."""
        cols = [self.keys[k].tolist() for k in self.keys]
        return list(zip(*cols, strict=True))

    def order_by(self, other: Predictions) -> Predictions:
        """Return these predictions re-ordered to `other`'s rows (same key set required)."""
        if tuple(self.keys) != tuple(other.keys):
            raise ValueError(f"key columns differ: {tuple(self.keys)} vs {tuple(other.keys)}")
        index = {k: i for i, k in enumerate(self.key_tuples())}
        try:
            take = np.fromiter(
                (index[k] for k in other.key_tuples()), dtype=np.int64, count=len(other)
            )
        except KeyError as e:
            raise ValueError(f"row {e.args[0]} of the reference is missing here") from None
        if len(self) != len(other):
            raise ValueError(f"{len(self)} rows here, {len(other)} in the reference")
        return Predictions(
            self.track,
            self.split,
            {k: v[take] for k, v in self.keys.items()},
            self.values[take],
            self.columns,
            None if self.labels is None else self.labels[take],
            dict(self.meta),
        )

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
        """Read a file written by `save`; a damaged or foreign file raises DataError."""
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "predictions file not found")
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
        except (KeyError, ValueError, OSError) as e:
            raise DataError(path, "not a readable abaw predictions file", found=str(e)) from None

    def to_frame(self):
        """A pandas DataFrame: key columns then value columns (for CSV export and reports)."""
        import pandas as pd

        data = {k: v for k, v in self.keys.items()}
        data.update({c: self.values[:, i] for i, c in enumerate(self.columns)})
        return pd.DataFrame(data)
