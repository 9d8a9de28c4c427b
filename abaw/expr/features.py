"""One per-frame Expr feature file: its header, and its values aligned to the video's frames.

`feature_file` looks at the header only (format, rows of a .npy, width), so `scan_layout` can
check every file before any heavy reading; `read_features` reads one video's features of one
backbone. Both raise a DataError naming the file, line and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from abaw.errors import DataError
from abaw.expr.layout import EXTRA_ROWS_TOLERANCE, SHORT_FEATURES_FRACTION, SHORT_FEATURES_FRAMES
from abaw.io import load_npy, npy_header, reading

_F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class FeatureFile:
    """One per-frame feature file: where, which format, rows (npy; None for csv until read), width."""

    path: Path
    fmt: str
    rows: int | None
    width: int
    # csv, once read: (first frame, last frame, frames listed within the annotation). Why:
    # a CSV of frames 91-120 of 136 ends near the end, yet 90 frames have no features.
    span: tuple[int, int, int] | None = None


def feature_file(path: Path) -> FeatureFile:
    """Header-only look at a feature file: format, rows (npy) and width."""
    if path.suffix == ".npy":
        shape, dtype, _, _ = npy_header(path)
        if len(shape) != 2 or dtype.kind not in "fiu":
            raise DataError(
                path,
                "wrong feature array",
                expected="a 2-D numeric array (frames, width)",
                found=f"shape {shape}, dtype {dtype}",
            )
        return FeatureFile(path, "npy", int(shape[0]), int(shape[1]))
    with reading(path, "a feature CSV"), open(path, encoding="utf-8", errors="replace") as fh:
        head = fh.readline().strip().split(",")
    if head[0] != "frame" or len(head) < 2:
        raise DataError(
            path,
            "wrong CSV header",
            row=1,
            column=1,
            expected="'frame' then one column per feature",
            found=repr(",".join(head)[:80]),
        )
    return FeatureFile(path, "csv", None, len(head) - 1)


def _read_csv(ff: FeatureFile) -> tuple[np.ndarray, np.ndarray]:
    """(frames int64, values float32) of a CSV feature file, validated."""
    try:
        with reading(ff.path, "a feature CSV"):
            df = pd.read_csv(
                ff.path,
                header=0,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8",
                encoding_errors="replace",
            )
    except pd.errors.ParserError:  # a row with more fields than the header
        raise _csv_field_count_error(ff) from None
    if df.shape[1] != ff.width + 1:
        raise DataError(
            ff.path, "wrong column count", row=1, expected=ff.width + 1, found=df.shape[1]
        )
    num = df.apply(pd.to_numeric, errors="coerce")
    bad = num.isna().to_numpy() & (df.to_numpy() != "")
    bad[:, 0] |= num.iloc[:, 0].isna().to_numpy()
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(
            ff.path,
            "value is not a number",
            row=int(r) + 2,
            column=str(df.columns[c]),
            expected="a number" if c else "a 1-based frame number",
            found=repr(df.iat[int(r), int(c)][:40]),
        )
    big = num.iloc[:, 1:].abs().to_numpy(np.float64) > _F32_MAX
    if big.any():
        r, c = np.argwhere(big)[0]
        raise DataError(
            ff.path,
            "value too large for float32",
            row=int(r) + 2,
            column=str(df.columns[c + 1]),
            expected=f"a number within +-{_F32_MAX:.4g}",
            found=df.iat[int(r), int(c) + 1][:40],
        )
    frames = num.iloc[:, 0].to_numpy(np.float64)
    if ((frames < 1) | (frames != np.round(frames))).any():
        r = int(np.argmax((frames < 1) | (frames != np.round(frames))))
        raise DataError(
            ff.path,
            "bad frame number",
            row=r + 2,
            column="frame",
            expected="an integer >= 1",
            found=frames[r],
        )
    frames = frames.astype(np.int64)
    uniq, first = np.unique(frames, return_index=True)
    if len(uniq) != len(frames):
        dup = np.setdiff1d(np.arange(len(frames)), first)[0]
        raise DataError(
            ff.path,
            "frame listed twice",
            row=int(dup) + 2,
            column="frame",
            expected="each frame once",
            found=int(frames[dup]),
        )
    return frames, num.iloc[:, 1:].to_numpy(np.float32)


def last_frame(ff: FeatureFile) -> int:
    """The last frame of a feature file: its rows (.npy), or its largest frame (.csv, read now)."""
    if ff.rows is not None:
        return ff.rows
    return int(_read_csv(ff)[0].max(initial=0))


def _csv_field_count_error(ff: FeatureFile) -> DataError:
    """The first line of a feature CSV whose field count differs from the header's."""
    with reading(ff.path, "a feature CSV"), open(ff.path, encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(fh, start=1):
            n = line.rstrip("\r\n").count(",") + 1
            if i > 1 and line.strip() and n != ff.width + 1:
                return DataError(
                    ff.path,
                    "wrong column count",
                    row=i,
                    expected=f"{ff.width + 1} columns like the header",
                    found=n,
                )
    return DataError(ff.path, "unreadable CSV", expected="comma-separated numbers")


def short_features_warning(ff: FeatureFile, n_frames: int) -> str | None:
    """A per-video warning when the features cover far fewer frames than the annotation:
    a .npy that ends early, a CSV that lists only the start or the middle of the video."""
    if ff.rows is None:
        return None
    first, last, covered = ff.span or (1, min(ff.rows, n_frames), min(ff.rows, n_frames))
    gap = n_frames - covered
    if gap <= max(SHORT_FEATURES_FRAMES, SHORT_FEATURES_FRACTION * n_frames):
        return None
    tail = "have no features and are filled (do the annotation and feature files belong together?)."
    share = f"{gap} ({100 * gap / max(1, n_frames):.0f}%)"
    if not covered:
        return f"{ff.path}: features cover none of the annotation's {n_frames} frames: all {tail}"
    if first == 1 and last == covered:  # one run from frame 1: the file ends early
        return (
            f"{ff.path}: features end at frame {last} but the annotation has {n_frames} "
            f"frames: the last {share} {tail}"
        )
    holes = "" if covered == last - first + 1 else f", {covered} of them listed"
    return (
        f"{ff.path}: features cover frames {first}-{last} of {n_frames}{holes}: the other "
        f"{share} {tail}"
    )


def read_features(ff: FeatureFile, n_frames: int, *, annotated: bool) -> np.ndarray:
    """float32 (n_frames, width): row i-1 = frame i; NaN rows = no face (or no row in the file).

    A row with any NaN counts as no face. Rows beyond `n_frames` are dropped when within
    EXTRA_ROWS_TOLERANCE of an annotated video's length; more is an error (wrong file pairing).
    """
    if ff.fmt == "npy":
        arr = load_npy(ff.path)
        frames = np.arange(1, arr.shape[0] + 1)
        row_of = lambda i: None  # noqa: E731  (npy has no text lines)
        if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
            big = np.abs(arr) > _F32_MAX
            if big.any():
                r, c = np.argwhere(big)[0]
                raise DataError(
                    ff.path,
                    f"value too large for float32 in frame {r + 1}",
                    column=int(c) + 1,
                    expected=f"a number within +-{_F32_MAX:.4g}",
                    found=float(arr[r, c]),
                )
    else:
        frames, arr = _read_csv(ff)
        ff.rows = int(frames.max()) if len(frames) else 0  # known now: the last frame listed
        inside = frames[frames <= n_frames]
        ff.span = (int(inside.min()), int(inside.max()), len(inside)) if len(inside) else (1, 0, 0)
        row_of = lambda i: int(i) + 2  # noqa: E731
    if arr.shape[1] != ff.width:
        raise DataError(ff.path, "feature width differs", expected=ff.width, found=arr.shape[1])
    arr = arr.astype(np.float32, copy=False)
    inf = np.isinf(arr)
    if inf.any():
        r, c = np.argwhere(inf)[0]
        raise DataError(
            ff.path,
            f"infinite value in frame {frames[r]}",
            row=row_of(r),
            column=int(c) + 1,
            expected="finite numbers (a whole NaN row = no face)",
            found=arr[r, c],
        )
    last = int(frames.max()) if len(frames) else 0
    if annotated and last > n_frames + EXTRA_ROWS_TOLERANCE:
        raise DataError(
            ff.path,
            "feature file longer than its annotation",
            row=row_of(len(frames) - 1),
            expected=f"at most {n_frames} frames (+{EXTRA_ROWS_TOLERANCE} tolerated)",
            found=f"{last} frames",
        )
    if ff.fmt == "npy" and len(arr) >= n_frames:  # the common case: no copy
        return arr[:n_frames]
    out = np.full((n_frames, ff.width), np.nan, np.float32)
    keep = frames <= n_frames
    out[frames[keep] - 1] = arr[keep]
    return out
