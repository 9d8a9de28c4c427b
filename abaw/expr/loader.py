"""Loading Expr data: annotations + per-frame features -> one cached, standardised store.

`load_expr` validates the layout (abaw/expr/scan.py), then builds once, under
`cache_dir_for(root, "expr")`, a float16 store of the chosen backbones' features concatenated
(standardised with train-frame statistics, missing frames filled), written video by video so
memory stays bounded at full scale. Later loads only stat the input files and open the store.
See docs/data-expr.md for the layout, fill policy and cache. Import it from abaw.expr.data,
the Expr data's public entry points (this module sits below abaw/expr/inspection.py, which
uses the loader).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from abaw.console import progress
from abaw.errors import ConfigError, DataError
from abaw.expr.features import read_features, short_features_warning
from abaw.expr.layout import ANNOTATION_DIRS, FEATURES_DIR, NUM_CLASSES, SPLIT_DIRS
from abaw.expr.scan import Layout, Problems, find_expr_root, find_test_lists, scan_layout
from abaw.expr.store import ColumnStats, FeatureStore, StoreWriter, fill_rows
from abaw.io import (
    atomic_open,
    atomic_path,
    cache_dir_for,
    cache_key,
    content_digest,
    remove_stale_tmp,
    writable_dir,
    writing,
)

LOADER_VERSION = 1  # bump when the store's content would change for the same inputs
FILL_POLICIES = ("nearest", "previous", "zero")
CACHE_WHAT = "Expr feature-store cache (set ABAW_CACHE=DIR to keep it elsewhere)"
SPLITS = ("train", "devel", "test")


@dataclass
class ExprData:
    """The loaded data set: frame-level arrays in store row order plus a FeatureStore."""

    root: Path
    backbones: list[str]
    dims: dict[str, int]  # backbone -> feature width
    videos: list[str]  # annotation-level names: train, devel, then test
    split: np.ndarray  # (V,) "train" | "devel" | "test"
    offsets: np.ndarray  # (V+1,) int64; video v is store rows offsets[v]:offsets[v+1]
    labels: np.ndarray  # (total_frames,) int8; -1 = not annotated (all test frames)
    has_face: np.ndarray  # (total_frames,) bool; False = some backbone's features were filled
    store: FeatureStore  # .read(start, stop), .read_rows(index) -> float32
    test_frames: dict[str, np.ndarray]  # test video -> 1-based frames, in test frame list order
    test_order: tuple[
        np.ndarray, np.ndarray
    ]  # (video index, frame) of every test list row, in order
    fill: str = "nearest"  # how frames without features were filled
    warnings: list[str] = field(default_factory=list)  # handled by a documented policy

    def video_slice(self, v: int) -> slice:
        """Store rows of video `v`."""
        return slice(int(self.offsets[v]), int(self.offsets[v + 1]))

    def indices(self, split: str) -> np.ndarray:
        """Video indices of `split`."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return np.flatnonzero(self.split == split)

    def backbone_columns(self, name: str) -> slice:
        """Store columns of backbone `name`."""
        if name not in self.dims:
            raise KeyError(f"backbone {name!r} not loaded; loaded: {', '.join(self.backbones)}")
        start = sum(self.dims[b] for b in self.backbones[: self.backbones.index(name)])
        return slice(start, start + self.dims[name])

    def frame_split(self) -> np.ndarray:
        """(total_frames,) split of every store row."""
        return np.repeat(self.split, np.diff(self.offsets))

    def class_counts(self, split: str) -> np.ndarray:
        """(8,) annotated frames per class in `split`."""
        lab = np.concatenate(
            [self.labels[self.video_slice(v)] for v in self.indices(split)]
            or [np.zeros(0, np.int8)]
        )
        return np.bincount(lab[lab >= 0].astype(np.int64), minlength=NUM_CLASSES)


def _cache_key(layout_inputs: list[Path], backbones: list[str], fill: str) -> str:
    """abaw.io.cache_key over settings and every input's stat (size, mtime, inode, ctime)."""
    return cache_key(
        {"v": LOADER_VERSION, "backbones": backbones, "fill": fill},
        ((str(p), p.stat()) for p in layout_inputs),
    )


def _quick_inputs(
    root: Path,
    backbones: list[str] | None,
    test_frames: str | Path | None = None,
    test_videos: str | Path | None = None,
) -> tuple[list[Path], list[str]] | None:
    """All files a store depends on, found by listing folders only (no parsing).

    Backbones come back sorted: the store holds them in that order, so one store serves
    every order a sweep lists them in.
    """
    fdir = root / FEATURES_DIR
    try:  # anything unusual (a folder without permission): the full scan names it
        ann = next((root / d for d in ANNOTATION_DIRS if (root / d).is_dir()), None)
        if ann is None or not fdir.is_dir():
            return None
        present = sorted(
            p.name for p in fdir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
    except OSError:
        return None
    chosen = sorted(set(backbones)) if backbones else present
    if any(b not in present for b in chosen):
        return None
    pr = Problems(collect=True)
    lists = find_test_lists(root, test_frames, test_videos, pr)
    if pr.errors:
        return None
    try:
        files = [p for s in SPLIT_DIRS.values() for p in (ann / s).glob("*.txt")]
        files += [p for p in lists if p is not None]
        files += [p for b in chosen for p in (fdir / b).iterdir() if p.suffix in (".npy", ".csv")]
        files = [p for p in files if p.is_file()]
    except OSError:
        return None
    return files, chosen


def load_expr(
    root: str | Path,
    backbones: list[str] | None = None,
    *,
    use_cache: bool = True,
    fill: str = "nearest",
    show_progress: bool | None = None,
    test_frames: str | Path | None = None,
    test_videos: str | Path | None = None,
) -> ExprData:
    """Load an Expr data set (building its feature store on first use).

    Args:
        root: folder holding EXPR_Classification_Challenge/ (or EXPR_Recognition_Challenge/),
            features/<Backbone>/ and the test lists.
        backbones: backbones to load (default: all found). The store holds them sorted by
            name whatever the order given (`ExprData.backbone_columns` finds each), so every
            order shares one store.
        use_cache: reuse a store whose inputs (paths, sizes, mtimes, inodes, ctimes),
            backbones, fill and loader version match; False rebuilds it.
        fill: how frames without features are filled: "nearest", "previous" or "zero".
        show_progress: force the progress bar on/off (default: when stderr is a terminal).
        test_frames, test_videos: the test frame list and test video list (relative to root
            unless absolute); default: found by any edition's file name (find_test_lists).
    """
    if fill not in FILL_POLICIES:
        raise ConfigError(f"fill must be one of {FILL_POLICIES}, got {fill!r}")
    root, note = find_expr_root(Path(root))
    lists = {"test_frames": test_frames, "test_videos": test_videos}
    quick = _quick_inputs(root, backbones, **lists)
    chosen = quick[1] if quick else sorted(set(backbones or []))
    tag = hashlib.sha1(json.dumps([chosen or "all", fill]).encode()).hexdigest()[:10]
    cache_root = cache_dir_for(root, "expr")
    with contextlib.suppress(OSError):
        remove_stale_tmp(cache_root)
    cdir = cache_root / tag
    data = None
    if use_cache and quick is not None:
        key = _cache_key(quick[0], quick[1], fill)
        data = _open_cached(root, cdir, key)
    if data is None:
        pr = Problems(collect=False)
        layout = scan_layout(root, chosen or None, pr, **lists)
        quick = _quick_inputs(root, layout.backbones, **lists)
        assert quick is not None, "scan_layout accepted the layout"
        key = _cache_key(quick[0], quick[1], fill)
        with writing(cdir, CACHE_WHAT):  # a full disk while writing: the cache folder named
            _build(layout, cdir, key, fill, pr, show_progress)
        data = _open_cached(root, cdir, key)
        assert data is not None, "store just built must open"
    if note:
        data.warnings.insert(0, note)
    return data


def _open_cached(root: Path, cdir: Path, key: str) -> ExprData | None:
    mpath = cdir / "manifest.json"
    try:
        man = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if man.get("key") != key:
        return None
    try:
        arr = {
            n: np.load(cdir / f"{n}.npy", allow_pickle=False)
            for n in ("offsets", "labels", "has_face", "test_video", "test_frame")
        }
        store = FeatureStore(cdir / "features.f16.npy")
    except (OSError, ValueError):
        return None
    if tuple(store.shape) != tuple(man["shape"]) or not store.is_complete():
        return None  # another shape, or cut short (a full disk?): rebuilt from the inputs
    videos = man["videos"]
    tv, tf = arr["test_video"], arr["test_frame"]
    test_frames = {videos[v]: tf[tv == v] for v in np.unique(tv).tolist()}
    return ExprData(
        root,
        man["backbones"],
        man["dims"],
        videos,
        np.array(man["split"]),
        arr["offsets"],
        arr["labels"],
        arr["has_face"],
        store,
        test_frames,
        (tv, tf),
        man["fill"],
        man["warnings"],
    )


@dataclass
class _StoreFacts:
    """What writing the store found out: faces per frame, and what the warnings report."""

    has_face: np.ndarray  # (total_frames,) False = some backbone's features were filled
    extra_rows: int = 0  # feature files with a few rows beyond their annotation
    empty: list[str] = field(default_factory=list)  # feature files without any face


def _build(
    layout: Layout, cdir: Path, key: str, fill: str, pr: Problems, show_progress: bool | None
) -> None:
    """Two passes: train-frame column statistics, then standardise + fill + write, video by video."""
    if layout.files and not layout.backbones:
        raise DataError(layout.root / FEATURES_DIR, "no backbone selected")
    writable_dir(cdir, CACHE_WHAT)
    (cdir / "manifest.json").unlink(missing_ok=True)  # a half-rebuilt cache must never look valid
    lengths = np.array([len(lab) for lab in layout.labels], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    width = sum(layout.dims[b] for b in layout.backbones)
    disable = None if show_progress is None else not show_progress
    with progress(disable=disable) as bar:
        mean, std = _train_statistics(layout, bar)
        t2 = bar.add_task("expr: build feature store", total=len(layout.videos))
        facts = _StoreFacts(np.ones(int(offsets[-1]), bool))
        with atomic_path(cdir / "features.f16.npy") as tmp:
            writer = StoreWriter(tmp, (int(offsets[-1]), width))
            try:
                for v in range(len(layout.videos)):
                    writer.write(_video_rows(layout, v, offsets, (mean, std), fill, pr, facts))
                    bar.advance(t2)
            except BaseException:  # the bad file's error, not "store written with k of n rows";
                writer.close(check=False)  # atomic_path then removes the half-written store
                raise
            writer.close()
    arrays = {
        "offsets": offsets,
        "labels": np.concatenate(layout.labels or [np.zeros(0, np.int8)]),
        "has_face": facts.has_face,
        "test_video": layout.test_video,
        "test_frame": layout.test_frame,
        "mean": np.concatenate([mean[b] for b in layout.backbones]),
        "std": np.concatenate([std[b] for b in layout.backbones]),
    }
    for name, a in arrays.items():
        with atomic_path(cdir / f"{name}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, a)
    manifest = {
        "key": key,
        "loader_version": LOADER_VERSION,
        "shape": [int(offsets[-1]), width],
        "backbones": layout.backbones,
        "dims": layout.dims,
        "formats": layout.formats,
        "fill": fill,
        "annotation_dir": layout.annotation_dir,
        "videos": layout.videos,
        "split": layout.split,
        "warnings": _build_warnings(layout, offsets, facts, pr, fill),
    }
    with atomic_open(cdir / "manifest.json") as fh:  # written last: the store is complete
        json.dump(manifest, fh)


def _train_statistics(
    layout: Layout, bar: Progress
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(mean, std) per backbone over the train frames that have features (the first pass)."""
    is_train = [s == "train" for s in layout.split]
    stats = {b: ColumnStats(layout.dims[b]) for b in layout.backbones}
    t1 = bar.add_task("expr: train statistics", total=sum(is_train))
    for v, name in enumerate(layout.videos):
        if not is_train[v]:
            continue
        for b in layout.backbones:
            stats[b].update(
                read_features(layout.files[(b, name)], len(layout.labels[v]), annotated=True)
            )
        bar.advance(t1)
    mean = {b: stats[b].mean.astype(np.float32) for b in layout.backbones}
    std = {b: stats[b].std().astype(np.float32) for b in layout.backbones}
    return mean, std


def _video_rows(
    layout: Layout,
    v: int,
    offsets: np.ndarray,
    scale: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
    fill: str,
    pr: Problems,
    facts: _StoreFacts,
) -> np.ndarray:
    """Store rows of video `v`: each backbone's features standardised and filled, side by side."""
    mean, std = scale
    name, n, annotated = (
        layout.videos[v],
        int(offsets[v + 1] - offsets[v]),
        layout.split[v] != "test",
    )
    blocks = []
    for b in layout.backbones:
        ff = layout.files[(b, name)]
        x = read_features(ff, n, annotated=annotated)
        facts.extra_rows += int(annotated and ff.rows is not None and ff.rows > n)
        if annotated and ff.fmt == "csv":  # a CSV's last frame is known only once read (the
            short = short_features_warning(ff, n)  # train pass may have read it first)
            if short:
                pr.warnings.append(short)
        valid = ~np.isnan(x).any(axis=1)
        if not valid.any():
            facts.empty.append(f"{ff.path}")
        facts.has_face[offsets[v] : offsets[v + 1]] &= valid
        x -= mean[b]
        x /= std[b]
        blocks.append(fill_rows(x, valid, fill))
    return np.concatenate(blocks, axis=1)


def _build_warnings(
    layout: Layout, offsets: np.ndarray, facts: _StoreFacts, pr: Problems, fill: str
) -> list[str]:
    """What the build handled by policy: the scan's warnings, extra rows, empty files, fills."""
    warnings = list(dict.fromkeys(pr.warnings))
    if facts.extra_rows:
        warnings.append(
            f"{facts.extra_rows} feature files have a few rows beyond their annotation "
            f"(within tolerance); the extra rows were ignored."
        )
    for path in facts.empty:
        warnings.append(
            f"{path}: no frame has features (no face found in the whole video); filled with zeros."
        )
    for s in SPLITS:
        rows = np.concatenate(
            [
                np.arange(offsets[v], offsets[v + 1])
                for v in range(len(layout.videos))
                if layout.split[v] == s
            ]
            or [np.zeros(0, np.int64)]
        )
        miss = int((~facts.has_face[rows]).sum())
        if miss:
            warnings.append(
                f"{s}: {miss} of all {len(rows)} frames of the split (annotated or not; "
                f"{100 * miss / max(1, len(rows)):.1f}%) have no features for some backbone; "
                f"filled by policy {fill!r}."
            )
    return warnings


def data_identity(data: ExprData) -> dict[str, Any]:
    """What a study records of its data set (`Track.data_identity`): root, annotation folder,
    videos per split and a fingerprint of every video name, split and frame label."""
    root = Path(data.root).resolve()
    layout = next((d for d in ANNOTATION_DIRS if (root / d).is_dir()), "?")
    return {
        "root": str(root),
        "layout": layout,
        "splits": {s: int((data.split == s).sum()) for s in SPLITS},
        "unit": "videos",
        "labels": content_digest(
            "\n".join(data.videos), data.split.astype(str), data.offsets, data.labels
        ),
    }


def clear_cache(root: str | Path) -> None:
    """Delete every Expr store of `root` (always safe; the next load rebuilds)."""
    shutil.rmtree(cache_dir_for(root, "expr"), ignore_errors=True)
