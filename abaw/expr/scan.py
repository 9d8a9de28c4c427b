"""Reading and validating the Expr layout: annotations, feature files, test lists.

`scan_layout` parses everything small (annotations, test lists, feature file headers) so
structural problems surface before any heavy reading; `read_features` reads one video's
features of one backbone, aligned to its frames. Both either raise the first DataError or,
for `abaw inspect`, collect every one (`Problems(collect=True)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from abaw.errors import DataError, split_overlap
from abaw.expr.layout import (
    ANNOTATION_DIRS,
    EXTRA_ROWS_TOLERANCE,
    FEATURES_DIR,
    HEADER,
    NUM_CLASSES,
    SHORT_FEATURES_FRACTION,
    SHORT_FEATURES_FRAMES,
    SPLIT_DIRS,
    TEST_FRAME_LIST,
    TEST_FRAME_LISTS,
    TEST_VIDEO_LISTS,
)
from abaw.io import find_data_root, load_npy, npy_header, path_error, read_text, reading, safe_name

_F32_MAX = float(np.finfo(np.float32).max)


class Problems:
    """Raise the first DataError (loading) or collect all of them (inspection)."""

    def __init__(self, collect: bool = False) -> None:
        self.collect = collect
        self.errors: list[DataError] = []
        self.warnings: list[str] = []

    def add(self, err: DataError) -> None:
        if not self.collect:
            raise err
        self.errors.append(err)


@dataclass
class FeatureFile:
    """One per-frame feature file: where, which format, rows (npy; None for csv until read), width."""

    path: Path
    fmt: str
    rows: int | None
    width: int


@dataclass
class Layout:
    """Everything known about a data set before its feature values are read."""

    root: Path
    annotation_dir: str  # which folder-name variant was found
    backbones: list[str]
    dims: dict[str, int]
    formats: dict[str, str]  # backbone -> "npy" | "csv"
    videos: list[str]
    split: list[str]
    labels: list[np.ndarray]  # int8 per video; all -1 for test videos
    files: dict[tuple[str, str], FeatureFile]  # (backbone, video) -> file
    test_video: np.ndarray = field(
        default_factory=lambda: np.zeros(0, np.int64)
    )  # frame list order
    test_frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    inputs: list[Path] = field(default_factory=list)  # every file the result depends on


def read_annotation(path: Path) -> np.ndarray:
    """Labels of one annotation file as int8 (frame i = element i-1), validated."""
    text = read_text(path, expected="an annotation text file (UTF-8)")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(
            path,
            "empty annotation file",
            row=1,
            expected=f"the header {HEADER!r}",
            found="an empty file",
        )
    head = lines[0].strip()
    if head != HEADER:
        raise DataError(path, "wrong header", row=1, expected=repr(HEADER), found=repr(head[:120]))
    body = [s.rstrip("\r") for s in lines[1:]]
    if not body:
        raise DataError(
            path,
            "no frame labels",
            row=2,
            expected="one integer label per frame",
            found="only the header",
        )
    try:
        arr = np.array(body).astype(np.int64)
    except ValueError:
        for i, s in enumerate(body):
            try:
                int(s)
            except ValueError:
                raise DataError(
                    path,
                    "label is not an integer",
                    row=i + 2,
                    expected="an integer in -1..7",
                    found=repr(s[:40]),
                ) from None
        raise
    bad = (arr < -1) | (arr >= NUM_CLASSES)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            path,
            "label out of range",
            row=i + 2,
            expected=f"-1 (not annotated) or 0..{NUM_CLASSES - 1}",
            found=int(arr[i]),
        )
    return arr.astype(np.int8)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    shape, dtype, _, _ = npy_header(path)
    return shape, dtype


def feature_file(path: Path) -> FeatureFile:
    """Header-only look at a feature file: format, rows (npy) and width."""
    if path.suffix == ".npy":
        shape, dtype = _npy_header(path)
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
    """A per-video warning when an annotation is far longer than the video's features."""
    if ff.rows is None:
        return None
    gap = n_frames - ff.rows
    if gap > max(SHORT_FEATURES_FRAMES, SHORT_FEATURES_FRACTION * n_frames):
        return (
            f"{ff.path}: features end at frame {ff.rows} but the annotation has {n_frames} "
            f"frames: the last {gap} ({100 * gap / n_frames:.0f}%) have no features and are "
            "filled (do the annotation and feature files belong together?)."
        )
    return None


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


def _annotation_root(root: Path) -> Path:
    for name in ANNOTATION_DIRS:
        if (root / name).is_dir():
            return root / name
    found = sorted(p.name for p in root.iterdir())[:8] if root.is_dir() else "no such folder"
    _, cands = find_data_root(root, is_expr_root)
    raise DataError(
        root,
        "no Expr annotation folder",
        expected=" or ".join(f"{d}/" for d in ANNOTATION_DIRS),
        found=found,
        hint=f"Subfolders that have one: {', '.join(c.name for c in cands)}; point --data at one"
        if cands
        else None,
    )


def is_expr_root(d: Path) -> bool:
    """Does `d` hold an Expr annotation folder?"""
    return any((d / name).is_dir() for name in ANNOTATION_DIRS)


def find_expr_root(root: Path) -> tuple[Path, str | None]:
    """`root`, or its one subfolder holding the Expr layout (and a note saying so)."""
    root = Path(root)
    found, _ = find_data_root(root, is_expr_root)
    if found != root:
        return found, f"{root} holds no Expr annotation folder; using its subfolder {found.name}/."
    return root, None


def _search_dirs(root: Path) -> list[Path]:
    dirs = [root]
    if root.is_dir():
        subs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        dirs += [d for d in subs if "test" in d.name.lower()]
        dirs += [d for d in subs if d.name in ANNOTATION_DIRS]
    return dirs


def find_test_lists(
    root: Path,
    frames: str | Path | None = None,
    videos: str | Path | None = None,
    pr: Problems | None = None,
) -> tuple[Path | None, Path | None]:
    """(test frame list, test video list): the files named, else found by any edition's name.

    Explicit paths are relative to `root` unless absolute and must exist. Otherwise each list
    is looked for in the data root, its subfolders named like `test_set*` and the annotation
    folder (names in abaw.expr.layout). Two different files for one list is an error: they
    belong to different editions, and a wrong guess would predict the wrong frames.
    """
    pr = pr or Problems()
    out: list[Path | None] = []
    dirs = _search_dirs(Path(root))
    for given, names, what in (
        (frames, TEST_FRAME_LISTS, "test frame list"),
        (videos, TEST_VIDEO_LISTS, "test video list"),
    ):
        if given:
            p = Path(given) if Path(given).is_absolute() else Path(root) / given
            bad = path_error(p, f"the {what}")
            if bad is not None or not p.is_file():
                pr.add(bad or DataError(p, f"{what} not found", expected="a file", found="nothing"))
                out.append(None)
            else:
                out.append(p)
            continue
        kind = "frames" if what.endswith("frame list") else "videos"
        hits = [d / n for d in dirs for n in names if (d / n).is_file()]
        if len(hits) > 1:
            pr.add(
                DataError(
                    hits[1],
                    f"more than one {what}",
                    expected="one",
                    found=", ".join(str(h) for h in hits),
                    hint=f"Name the right one: --set data.test_{kind}=PATH "
                    f"(abaw inspect: --test-{kind} PATH)",
                )
            )
        out.append(hits[0] if hits else None)
    return out[0], out[1]


_ROW = r"^\s*([^,]+)/(\d+)\.jpg\s*(?:,.*)?$"


def _test_lists(
    root: Path, pr: Problems, vpath: Path | None = None, fpath: Path | None = None
) -> tuple[list[str], list[str], np.ndarray, list[Path]]:
    """Test videos (release list order), and the frame list as (video names, frames)."""
    vids: list[str] = []
    inputs = []
    if vpath is not None:
        inputs.append(vpath)
        for i, line in enumerate(
            read_text(vpath, expected="the test video list, one name a line").splitlines()
        ):
            name = line.strip()
            if not name:
                continue
            try:
                vids.append(safe_name(name, what="video name"))
            except ValueError as e:
                pr.add(
                    DataError(
                        vpath, str(e), row=i + 1, expected="a plain video name", found=repr(name)
                    )
                )
    names: list[str] = []
    frames = np.zeros(0, np.int64)
    if fpath is not None:
        inputs.append(fpath)
        lines = read_text(fpath, expected="the test frame list").splitlines()
        # A header line (ABAW5: image_location,...; ABAW6 editions vary): any first line
        # that is not a frame row.
        skip = 1 if lines and not pd.Series(lines[:1]).str.match(_ROW).iat[0] else 0
        s = pd.Series(lines[skip:], dtype=str)
        m = s.str.extract(_ROW)
        bad = m[0].isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            pr.add(
                DataError(
                    fpath,
                    "malformed test frame row",
                    row=i + 1 + skip,
                    expected="'<video>/<frame, 5 digits>.jpg,'",
                    found=repr(s.iat[i][:80]),
                )
            )
            m = m[~bad]
        names = m[0].tolist()
        frames = m[1].astype(np.int64).to_numpy()
        for v in dict.fromkeys(names):
            try:
                safe_name(v, what="video name")
            except ValueError as e:
                i = names.index(v)
                pr.add(
                    DataError(
                        fpath,
                        str(e),
                        row=i + 1 + skip,
                        expected="a plain video name",
                        found=repr(v),
                    )
                )
        if (frames < 1).any():
            i = int(np.argmax(frames < 1))
            pr.add(
                DataError(fpath, "frame number below 1", row=i + 1 + skip, expected=">= 1", found=0)
            )
    return vids, names, frames, inputs


def no_test_list_warning(root: Path, test_videos: list[str], fpath: Path | None) -> str:
    """The loud warning when there is nothing to predict for a submission."""
    what = "no test frame list" if fpath is None else "the test frame list names no video"
    return (
        f"NO TEST SET: {what} found in {root} (looked for {', '.join(TEST_FRAME_LISTS)} and "
        f"{', '.join(TEST_VIDEO_LISTS)} in the data root, its test* subfolders and the "
        "annotation folder). Test predictions will be EMPTY and cannot be submitted; name the "
        "lists with --set data.test_frames=PATH (and data.test_videos=PATH), or "
        "`abaw inspect --test-frames PATH`."
    )


def scan_layout(
    root: Path,
    backbones: list[str] | None,
    pr: Problems,
    *,
    test_frames: str | Path | None = None,
    test_videos: str | Path | None = None,
) -> Layout:
    """Parse annotations and test lists, look at every feature file's header.

    `test_frames` / `test_videos` name the test lists explicitly (see find_test_lists).
    """
    root = Path(root)
    ann_root = _annotation_root(root)
    inputs: list[Path] = []
    videos, split, labels = [], [], []
    for sp, folder in SPLIT_DIRS.items():
        d = ann_root / folder
        if not d.is_dir():
            pr.add(
                DataError(
                    d,
                    "missing split folder",
                    expected=f"{folder}/ with one <video>.txt per video",
                    found="no such folder",
                )
            )
            continue
        for path in sorted(d.glob("*.txt")):
            inputs.append(path)
            try:
                lab = read_annotation(path)
            except DataError as e:
                pr.add(e)
                continue
            videos.append(path.stem)
            split.append(sp)
            labels.append(lab)
    fpath, vpath = find_test_lists(root, test_frames, test_videos, pr)
    test_list, test_names, test_frames, test_inputs = _test_lists(root, pr, vpath, fpath)
    inputs += test_inputs
    known = set(videos)
    test_videos = list(dict.fromkeys(test_list + test_names))
    overlap = split_overlap(
        [(v, sp, f"{v}.txt") for v, sp in zip(videos, split, strict=True)]
        + [(v, "test", v) for v in test_videos],
        path=ann_root,
        what="video",
    )
    if overlap is not None:
        pr.add(overlap)
    listed = set(test_list)
    if test_list:
        for v in dict.fromkeys(test_names):
            if v not in listed:
                pr.add(
                    DataError(
                        fpath,
                        "video not in the test video list",
                        row=test_names.index(v) + 2,
                        expected=f"a video of {vpath.name}",
                        found=v,
                    )
                )
    test_videos = [v for v in test_videos if v not in known and "/" not in v and "\\" not in v]

    fdir = root / FEATURES_DIR
    present = (
        sorted(p.name for p in fdir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if fdir.is_dir()
        else []
    )
    if not present:
        raise DataError(
            fdir,
            "no feature folders",
            expected="features/<Backbone>/<video>.npy or .csv",
            found="nothing" if not fdir.exists() else "an empty folder",
        )
    chosen = list(backbones) if backbones else present
    for b in chosen:
        if b not in present:
            listed = ", ".join(f'"{x}"' for x in present)
            raise DataError(
                fdir / b,
                "unknown backbone",
                expected="one of " + ", ".join(present),
                found=b,
                hint=f"Fix: add --set 'data.backbones=[{listed}]' (or leave data.backbones out "
                "for all), or copy the sweep file and edit its [data] backbones",
            )
    files: dict[tuple[str, str], FeatureFile] = {}
    dims: dict[str, int] = {}
    formats: dict[str, str] = {}
    all_videos = videos + test_videos
    test_set = set(test_videos)
    for b in chosen:
        first: FeatureFile | None = None
        for v in all_videos:
            cand = [fdir / b / f"{v}.npy", fdir / b / f"{v}.csv"]
            path = next((p for p in cand if p.is_file()), None)
            bad = next((e for e in map(lambda p: path_error(p, "a feature file"), cand) if e), None)
            if path is None and bad is not None:  # a folder, dangling link or loop: name it
                pr.add(bad)
                continue
            if path is None:
                where = "test list" if v in test_videos else "annotations"
                pr.add(
                    DataError(
                        cand[0],
                        "missing feature file",
                        expected=f"features of video {v} ({where})",
                        found="no .npy or .csv file",
                    )
                )
                continue
            inputs.append(path)
            try:
                ff = feature_file(path)
            except DataError as e:
                pr.add(e)
                continue
            if first is None:
                first = ff
            elif ff.width != first.width:
                pr.add(
                    DataError(
                        path,
                        f"feature width differs from {first.path.name}",
                        expected=first.width,
                        found=ff.width,
                    )
                )
                continue
            files[(b, v)] = ff
            if v not in test_set:
                w = short_features_warning(ff, len(labels[videos.index(v)]))
                if w:
                    pr.warnings.append(w)
        if first is not None:
            dims[b], formats[b] = first.width, first.fmt

    labels_all = list(labels)
    for v in test_videos:
        rows = [files[(b, v)].rows for b in chosen if (b, v) in files]
        n = max([r for r in rows if r is not None] + [0])
        if any(r is None for r in rows):  # csv: rows known only after reading
            for b in chosen:
                if (b, v) in files and files[(b, v)].fmt == "csv":
                    n = max(n, int(_read_csv(files[(b, v)])[0].max(initial=0)))
        sel = np.array([t == v for t in test_names], bool) if test_names else np.zeros(0, bool)
        listed_max = int(test_frames[sel].max()) if sel.any() else 0
        if listed_max > n:
            pr.warnings.append(
                f"{fpath.name if fpath else TEST_FRAME_LIST}: video {v} lists frames up to {listed_max} but its features "
                f"end at frame {n}; the frames beyond are filled ({listed_max - n} frames)."
            )
        labels_all.append(np.full(max(n, listed_max), -1, np.int8))
    if not test_videos or fpath is None:
        pr.warnings.append(no_test_list_warning(root, test_videos, fpath))
    index = {v: i for i, v in enumerate(all_videos)}
    keep = np.array([n in index for n in test_names], bool)
    tv = np.array([index[n] for n, k in zip(test_names, keep, strict=True) if k], np.int64)
    tf = test_frames[keep] if len(test_frames) else np.zeros(0, np.int64)
    if len(tv):
        key = tv * (1 << 32) + tf
        uniq, first_idx = np.unique(key, return_index=True)
        if len(uniq) != len(key):
            i = int(np.setdiff1d(np.arange(len(key)), first_idx)[0])
            pr.add(
                DataError(
                    fpath or root / TEST_FRAME_LIST,
                    "frame listed twice",
                    expected="each test frame once",
                    found=f"{all_videos[tv[i]]}/{tf[i]:05d}.jpg",
                )
            )
    return Layout(
        root,
        ann_root.name,
        chosen,
        dims,
        formats,
        all_videos,
        split + ["test"] * len(test_videos),
        labels_all,
        files,
        tv,
        tf,
        inputs,
    )
