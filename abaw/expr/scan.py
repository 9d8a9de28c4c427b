"""Reading and validating the Expr layout: annotations, test lists, which feature files.

`scan_layout` parses everything small (annotations, test lists, feature file headers) so
structural problems surface before any heavy reading; one video's feature values are read
later (abaw/expr/features.py). It either raises the first DataError or, for `abaw inspect`,
collects every one (`Problems(collect=True)`). The test lists' format is abaw/expr/framelist.py,
shared with `abaw submit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from abaw.errors import DataError, split_overlap
from abaw.expr.features import FeatureFile, feature_file, last_frame, short_features_warning
from abaw.expr.framelist import FrameList, read_frame_list, read_video_list
from abaw.expr.layout import (
    ANNOTATION_DIRS,
    FEATURES_DIR,
    HEADER,
    NUM_CLASSES,
    SPLIT_DIRS,
    TEST_FRAME_LIST,
    TEST_FRAME_LISTS,
    TEST_VIDEO_LISTS,
)
from abaw.io import find_data_root, folder_problem, list_dir, path_error, read_text
from abaw.leakage import leakage_warning


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


def _annotation_root(root: Path) -> Path:
    bad = folder_problem(root, "the Expr data set folder")
    if bad is not None:
        raise bad
    for name in ANNOTATION_DIRS:
        bad = folder_problem(root / name, "the annotation folder")
        if bad is not None:
            raise bad
        if (root / name).is_dir():
            return root / name
    found = [p.name for p in list_dir(root)][:8] if root.is_dir() else "no such folder"
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


def _search_dirs(root: Path, pr: Problems) -> list[Path]:
    """The folders the test lists may be in; one that cannot be entered is a problem named
    with its folder (Path.is_file inside it raises PermissionError instead of answering)."""
    dirs = [root]
    if root.is_dir():
        subs = [d for d in list_dir(root) if d.is_dir() and not d.name.startswith(".")]
        for d in [s for s in subs if "test" in s.name.lower() or s.name in ANNOTATION_DIRS]:
            bad = folder_problem(d, "a folder the test lists may be in")
            if bad is None:
                dirs.append(d)
            else:
                pr.add(bad)
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
    dirs = _search_dirs(Path(root), pr)
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


# ---------------------------------------------------------------- scan_layout, step by step


@dataclass
class _Annotated:
    """The annotated videos (train, then devel) and their labels, as read."""

    videos: list[str] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)


@dataclass
class _TestSet:
    """The test videos the loader adds after the annotated ones, and the frame list."""

    fpath: Path | None  # the frame list file; None = not found
    videos: list[str]  # test videos: not annotated, the video list's order, then first-seen
    rows: FrameList | None  # the frame list's rows; None without one
    inputs: list[Path]


@dataclass
class _Headers:
    """Every feature file found, by (backbone, video), with each backbone's width and format."""

    files: dict[tuple[str, str], FeatureFile] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    inputs: list[Path] = field(default_factory=list)


def scan_layout(
    root: Path,
    backbones: list[str] | None,
    pr: Problems,
    *,
    test_frames: str | Path | None = None,
    test_videos: str | Path | None = None,
) -> Layout:
    """Parse annotations and test lists, look at every feature file's header.

    `test_frames` / `test_videos` name the test lists explicitly (see find_test_lists). The
    steps run in this order because each needs the last: the test videos are the listed ones
    that are not annotated, and every video of both needs a feature file per backbone.
    """
    root = Path(root)
    ann_root = _annotation_root(root)
    ann = _scan_annotations(ann_root, pr)
    tests = _scan_test_lists(root, ann_root, ann, pr, test_frames, test_videos)
    fdir = root / FEATURES_DIR
    chosen = _choose_backbones(fdir, backbones)
    heads = _scan_feature_headers(fdir, chosen, ann, tests.videos, pr)
    split_of = {
        **dict(zip(ann.videos, ann.split, strict=True)),
        **{v: "test" for v in tests.videos},
    }
    for b in chosen:
        leak = leakage_warning(
            fdir / b, [(split_of[v], ff.path) for (bb, v), ff in heads.files.items() if bb == b]
        )
        if leak:
            pr.warnings.append(leak)
    test_labels = _test_video_labels(heads.files, chosen, tests, pr)
    if not tests.videos or tests.fpath is None:
        pr.warnings.append(no_test_list_warning(root, tests.videos, tests.fpath))
    all_videos = ann.videos + tests.videos
    tv, tf = _test_rows(tests.rows, all_videos)
    return Layout(
        root,
        ann_root.name,
        chosen,
        heads.dims,
        heads.formats,
        all_videos,
        ann.split + ["test"] * len(tests.videos),
        ann.labels + test_labels,
        heads.files,
        tv,
        tf,
        ann.inputs + tests.inputs + heads.inputs,
    )


def _scan_annotations(ann_root: Path, pr: Problems) -> _Annotated:
    """Every annotation file of the split folders, parsed (train first, then devel)."""
    out = _Annotated()
    for sp, folder in SPLIT_DIRS.items():
        d = ann_root / folder
        expected = f"{folder}/ with one <video>.txt per video"
        bad = folder_problem(d, expected)
        if bad is not None or not d.is_dir():
            pr.add(bad or DataError(d, "missing split folder", expected=expected, found="nothing"))
            continue
        for path in (p for p in list_dir(d, expected) if p.name.endswith(".txt")):
            out.inputs.append(path)
            try:
                lab = read_annotation(path)
            except DataError as e:
                pr.add(e)
                continue
            out.videos.append(path.stem)
            out.split.append(sp)
            out.labels.append(lab)
    return out


def _scan_test_lists(
    root: Path,
    ann_root: Path,
    ann: _Annotated,
    pr: Problems,
    frames: str | Path | None,
    videos: str | Path | None,
) -> _TestSet:
    """Find and parse the test lists; check them against the annotations and each other."""
    fpath, vpath = find_test_lists(root, frames, videos, pr)
    rows = read_frame_list(fpath, vpath, report=pr.add) if fpath is not None else None
    if rows is not None:
        listed, names = rows.listed, rows.videos
    else:
        listed = read_video_list(vpath, pr.add) if vpath is not None else []
        names = listed
    overlap = split_overlap(
        [(v, sp, f"{v}.txt") for v, sp in zip(ann.videos, ann.split, strict=True)]
        + [(v, "test", v) for v in names],
        path=ann_root,
        what="video",
    )
    if overlap is not None:
        pr.add(_name_test_lists(overlap, set(ann.videos) & set(names), set(listed), vpath, fpath))
    if listed and rows is not None and vpath is not None:
        for v in rows.videos[len(listed) :]:  # videos of the frame list only
            pr.add(
                DataError(
                    rows.path,
                    "video not in the test video list",
                    row=int(np.argmax(rows.video == v)) + 2,
                    expected=f"a video of {vpath.name}",
                    found=v,
                )
            )
    known = set(ann.videos)
    inputs = [p for p in (vpath, fpath) if p is not None]
    return _TestSet(fpath, [v for v in names if v not in known], rows, inputs)


def _name_test_lists(
    err: DataError, shared: set[str], listed: set[str], vpath: Path | None, fpath: Path | None
) -> DataError:
    """`err` (videos in two splits) with the test list file that names each annotated test video."""
    if not shared:
        return err
    files = {str(vpath if vpath is not None and v in listed else fpath) for v in shared}
    return DataError(
        err.path,
        err.problem,
        expected=err.expected,
        found=err.found,
        hint=f"{err.hint}; the test video(s) among them are listed in {', '.join(sorted(files))}",
    )


def _choose_backbones(fdir: Path, backbones: list[str] | None) -> list[str]:
    """The backbones asked for (default: every folder under features/), each checked to exist."""
    bad = folder_problem(fdir, "features/<Backbone>/<video>.npy or .csv")
    if bad is not None:
        raise bad
    present = (
        [p.name for p in list_dir(fdir) if p.is_dir() and not p.name.startswith(".")]
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
        bad = folder_problem(fdir / b, f"a folder of per-video feature files ({b})")
        if bad is not None:
            raise bad
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
    return chosen


def _scan_feature_headers(
    fdir: Path, chosen: list[str], ann: _Annotated, test_videos: list[str], pr: Problems
) -> _Headers:
    """The header of every video's feature file, per backbone; widths must agree."""
    out = _Headers()
    length: dict[str, int] = {}
    for v, lab in zip(ann.videos, ann.labels, strict=True):
        length.setdefault(v, len(lab))
    test_set = set(test_videos)
    for b in chosen:
        first: FeatureFile | None = None
        for v in ann.videos + test_videos:
            path = _feature_path(fdir / b, v, "test list" if v in test_set else "annotations", pr)
            if path is None:
                continue
            out.inputs.append(path)
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
            out.files[(b, v)] = ff
            if v not in test_set:
                w = short_features_warning(ff, length[v])
                if w:
                    pr.warnings.append(w)
        if first is not None:
            out.dims[b], out.formats[b] = first.width, first.fmt
    return out


def _feature_path(folder: Path, video: str, where: str, pr: Problems) -> Path | None:
    """The .npy or .csv feature file of `video`; None (and a problem) when there is none."""
    cand = [folder / f"{video}.npy", folder / f"{video}.csv"]
    present = [p for p in cand if p.is_file()]
    if len(present) > 1:
        pr.warnings.append(
            f"{folder}: video {video} has two feature files, {present[0].name} and "
            f"{present[1].name}; {present[0].name} is used (move the other away if it is the "
            "one you meant)."
        )
    if present:
        return present[0]
    bad = next((e for e in (path_error(p, "a feature file") for p in cand) if e), None)
    pr.add(  # a folder, dangling link or loop is named as such, not as "missing"
        bad
        or DataError(
            cand[0],
            "missing feature file",
            expected=f"features of video {video} ({where})",
            found="no .npy or .csv file",
        )
    )
    return None


def _test_video_labels(
    files: dict[tuple[str, str], FeatureFile], chosen: list[str], tests: _TestSet, pr: Problems
) -> list[np.ndarray]:
    """All -1 labels per test video: as long as its longest feature file or last listed frame."""
    listed_max = tests.rows.n_frames if tests.rows is not None else {}
    name = tests.fpath.name if tests.fpath else TEST_FRAME_LIST
    out = []
    for v in tests.videos:
        ffs = [files[(b, v)] for b in chosen if (b, v) in files]
        n = max([ff.rows for ff in ffs if ff.rows is not None] + [0])
        for ff in ffs:
            if ff.rows is None:  # csv: rows known only after reading
                n = max(n, last_frame(ff))
        last = listed_max.get(v, 0)
        if last > n:
            pr.warnings.append(
                f"{name}: video {v} lists frames up to {last} but its features "
                f"end at frame {n}; the frames beyond are filled ({last - n} frames)."
            )
        out.append(np.full(max(n, last), -1, np.int8))
    return out


def _test_rows(rows: FrameList | None, videos: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(video index, frame) of every frame-list row whose video is loaded, in list order."""
    if rows is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tv = rows.video_index(videos)
    keep = tv >= 0
    return tv[keep], rows.frame[keep]
