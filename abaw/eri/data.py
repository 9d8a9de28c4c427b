"""Load Hume-Reaction (ERI) data from either real layout into flat arrays, with a binary cache.

Layout A (MuSe-2022): feats/<Feature>/<id>.csv, labels.csv, partition.csv.
Layout B (ABAW5): data_info.csv and a features folder of the same per-sample CSVs.
Each feature set becomes one (total_steps, dim) float32 array plus offsets, so
variable-length sequences cost no padding and a GPU can hold them whole.
The first parse of ~50,000 CSVs runs in parallel; later loads read .npy files
from `abaw.io.cache_dir_for(root, "eri")`, keyed by every file's size and mtime.
See docs/data-eri.md for the policies (missing modality, standardisation).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abaw.eri import EMOTIONS, MODALITIES
from abaw.eri.csvio import (
    KNOWN_MODALITIES,
    _listing,
    file_stem,
    find_feature_root,
    parse_feature_set,
    resolve_features,
)
from abaw.eri.tables import SPLITS, detect_layout, find_eri_root, read_tables
from abaw.errors import AbawError, DataError
from abaw.extraction import coverage_sections
from abaw.io import (
    atomic_open,
    atomic_path,
    cache_dir_for,
    cache_key,
    content_digest,
    list_dir,
    remove_stale_tmp,
)
from abaw.leakage import leakage_warning

LOADER_VERSION = 1  # bump when parsing or cached content changes: invalidates every cache
__all__ = [
    "KNOWN_MODALITIES",
    "LOADER_VERSION",
    "EriData",
    "data_identity",
    "FeatureSet",
    "detect_layout",
    "find_feature_root",
    "inspect_data",
    "load_eri",
    "parse_feature_set",
    "read_tables",
    "resolve_features",
    "standardize_",
]


@dataclass
class FeatureSet:
    """One feature set: every sample's rows concatenated in sample order."""

    name: str  # folder name, e.g. "DeepSpectrum"
    modality: str  # "audio" | "visual"
    dim: int  # feature width (CSV columns minus the 2 metadata columns)
    values: np.ndarray  # (total_steps, dim) float32
    offsets: np.ndarray  # (N+1,) int64; sample i = values[offsets[i]:offsets[i+1]], empty = missing
    mean: np.ndarray | None = None  # (dim,) train-row mean subtracted (None: not standardised)
    std: np.ndarray | None = None  # (dim,) train-row std divided by
    notes: list[str] | None = field(default_factory=list)  # found when parsed (cached); None:
    # a cache entry made before the notes existed (they are found again)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) time steps per sample; 0 = no file for that sample."""
        return np.diff(self.offsets)


@dataclass
class EriData:
    """A loaded ERI data set; arrays are aligned by sample (row i = ids[i])."""

    root: Path  # data set folder
    layout: str  # "muse" | "abaw5"
    ids: np.ndarray  # (N,) str, exactly as spelled in labels.csv / data_info.csv
    split: np.ndarray  # (N,) str in {"train", "devel", "test"}
    labels: np.ndarray  # (N, 7) float32 in EMOTIONS order; NaN rows for test
    features: dict[str, FeatureSet]  # by feature set name
    meta: pd.DataFrame | None = None  # Age, Country (layout B), one row per sample
    problems: list[str] = field(default_factory=list)  # errors (empty after a successful load)
    warnings: list[str] = field(default_factory=list)  # handled by policy, e.g. missing modality

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split, in file order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
        return np.flatnonzero(self.split == split)

    def missing(self, modality: str) -> np.ndarray:
        """(N,) True where a sample has no rows in any feature set of `modality`."""
        names = self.modalities.get(modality)
        if not names:
            return np.ones(len(self.ids), dtype=bool)
        return np.logical_and.reduce([self.features[n].lengths == 0 for n in names])

    @property
    def modalities(self) -> dict[str, list[str]]:
        """Modality -> feature set names loaded for it."""
        out: dict[str, list[str]] = {}
        for fs in self.features.values():
            out.setdefault(fs.modality, []).append(fs.name)
        return out


def standardize_(fs: FeatureSet, split: np.ndarray, *, block: int = 8192) -> None:
    """Subtract the train-row mean and divide by the train-row std, in place.

    Statistics are accumulated block by block (float64, centred on a first
    estimate for accuracy) so no copy of the train rows is made.
    """
    train = np.repeat(split == "train", fs.lengths)
    n = int(train.sum())
    mean = np.zeros(fs.dim, np.float32)
    std = np.ones(fs.dim, np.float32)
    if n:
        first = np.flatnonzero(train)[: min(n, 4096)]
        shift = fs.values[first].mean(axis=0, dtype=np.float64)
        s1 = np.zeros(fs.dim)
        s2 = np.zeros(fs.dim)
        for a in range(0, len(fs.values), block):
            rows = fs.values[a : a + block][train[a : a + block]].astype(np.float64) - shift
            s1 += rows.sum(axis=0)
            s2 += np.square(rows).sum(axis=0)
        m = s1 / n
        mean = (shift + m).astype(np.float32)
        std = np.sqrt(np.maximum(s2 / n - m * m, 0.0)).astype(np.float32)
        std[std < 1e-8] = 1.0
    for a in range(0, len(fs.values), block):
        fs.values[a : a + block] -= mean
        fs.values[a : a + block] /= std
    fs.mean, fs.std = mean, std


# ---------------------------------------------------------------- cache


def _cache_key(
    folder: Path, ids: np.ndarray, split: np.ndarray, modality: str, standardize: bool
) -> str:
    """abaw.io.cache_key over settings, IDs, splits and every CSV's stat (with inode, ctime)."""
    return cache_key(
        [LOADER_VERSION, folder.name, modality, standardize],
        _listing(folder).items(),
        ["\n".join(ids), "\n".join(split)],
    )


def _cache_load(entry: Path, key: str) -> FeatureSet | None:
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        if manifest.get("key") != key or manifest.get("version") != LOADER_VERSION:
            return None
        # values: a copy-on-write map, read lazily; writable in memory, the file never changes.
        arr = {
            k: np.load(
                entry / f"{k}.npy", allow_pickle=False, mmap_mode="c" if k == "values" else None
            )
            for k in manifest["arrays"]
        }
    except (OSError, ValueError, KeyError):
        return None
    return FeatureSet(
        manifest["name"],
        manifest["modality"],
        manifest["dim"],
        arr["values"],
        arr["offsets"],
        arr.get("mean"),
        arr.get("std"),
        list(manifest["notes"]) if isinstance(manifest.get("notes"), list) else None,
    )


def _cache_save(cache: Path, key: str, fs: FeatureSet) -> None:
    """Arrays first, manifest last (each atomically): an entry with a manifest is complete."""
    entry = cache / f"{fs.name}--{key}"
    entry.mkdir(parents=True, exist_ok=True)
    arrays = {"values": fs.values, "offsets": fs.offsets}
    if fs.mean is not None:
        arrays.update(mean=fs.mean, std=fs.std)
    for k, a in arrays.items():
        with atomic_path(entry / f"{k}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, a, allow_pickle=False)
    manifest = {
        "key": key,
        "version": LOADER_VERSION,
        "name": fs.name,
        "modality": fs.modality,
        "dim": fs.dim,
        "arrays": list(arrays),
        "notes": fs.notes,
    }
    with atomic_open(entry / "manifest.json") as fh:
        json.dump(manifest, fh)
    for old in cache.iterdir():  # stale entries of this feature set
        if old != entry and old.name.rsplit("--", 1)[0] == fs.name:
            shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- public


def _missing_notes(ids: np.ndarray, split: np.ndarray, feats: dict[str, FeatureSet]) -> list[str]:
    notes = []
    for modality in MODALITIES:
        names = [n for n, f in feats.items() if f.modality == modality]
        if not names:
            continue
        miss = np.logical_and.reduce([feats[n].lengths == 0 for n in names])
        for s in SPLITS:
            sel = np.flatnonzero(miss & (split == s))
            if sel.size == 0:
                continue
            shown = ", ".join(ids[sel[:5]]) + (" ..." if sel.size > 5 else "")
            policy = (
                "kept; predicted from the other modality"
                if s == "test"
                else "drop them from training (EriData.missing)"
                if s == "train"
                else "scored with the other modality only"
            )
            notes.append(
                f"{sel.size} {s} sample(s) have no {modality} features ({shown}): {policy}."
            )
    return notes


def _leakage_notes(folder: Path, ids: np.ndarray, split: np.ndarray) -> list[str]:
    """A warning when devel / test feature files copy training ones (abaw/leakage.py)."""
    files = [(str(s), folder / f"{file_stem(i)}.csv") for i, s in zip(ids, split, strict=True)]
    leak = leakage_warning(folder, files)
    return [leak] if leak else []


def load_eri(
    root: str | Path,
    features: list[str] | dict[str, str],
    *,
    use_cache: bool = True,
    standardize: bool = True,
    n_jobs: int = -1,
    show_progress: bool | None = None,
) -> EriData:
    """Load an ERI data set (either layout) with the chosen feature sets.

    Args:
        root: data set folder (layout detected from its tables).
        features: feature set names (modality from KNOWN_MODALITIES) or a mapping name -> "audio"|"visual".
        use_cache: read/write the binary cache under cache_dir_for(root, "eri").
        standardize: per-column standardisation fitted on train rows, applied to all splits.
        n_jobs: parallel CSV parsers for the first load (-1: all cores).

    Raises:
        DataError / ConfigError: the first problem found (`abaw inspect` lists them all).
    """
    root, note = find_eri_root(Path(root))
    notes = [note] if note else []
    layout = detect_layout(root)
    ids, split, labels, meta = read_tables(root, layout, notes=notes)
    feat_root = find_feature_root(root, layout)
    mapping = resolve_features(feat_root, features)
    feats: dict[str, FeatureSet] = {}
    cache = cache_dir_for(root, "eri")
    if use_cache:
        with contextlib.suppress(OSError):
            remove_stale_tmp(cache)
    for name, modality in mapping.items():
        folder = feat_root / name
        key = _cache_key(folder, ids, split, modality, standardize) if use_cache else ""
        fs = _cache_load(cache / f"{name}--{key}", key) if use_cache else None
        if fs is None:
            values, offsets = parse_feature_set(
                folder, ids, n_jobs=n_jobs, show_progress=show_progress
            )
            fs = FeatureSet(name, modality, values.shape[1], values, offsets)
            fs.notes = _leakage_notes(folder, ids, split)
            if standardize:
                standardize_(fs, split)
            if use_cache:
                # A read-only data folder: loading still works (set ABAW_CACHE to cache elsewhere).
                with contextlib.suppress(OSError):
                    _cache_save(cache, key, fs)
        if fs.notes is None:
            fs.notes = _leakage_notes(folder, ids, split)
        feats[name] = fs
    warnings = notes + [n for fs in feats.values() for n in fs.notes or []]
    warnings += _missing_notes(ids, split, feats)
    return EriData(root, layout, ids, split, labels, feats, meta, [], warnings)


def data_identity(data: EriData) -> dict[str, Any]:
    """What a study records of its data set (`Track.data_identity`): root, layout, samples per
    split and a fingerprint of every ID, split and label (features are not part of it)."""
    return {
        "root": str(Path(data.root).resolve()),
        "layout": data.layout,
        "splits": {s: int((data.split == s).sum()) for s in SPLITS},
        "unit": "samples",
        "labels": content_digest(data.ids.astype(str), data.split.astype(str), data.labels),
    }


def inspect_data(root: Path, *, features: list[str] | None = None, use_cache: bool = True):
    """Everything `abaw inspect --track eri` shows: counts, feature sets, missing modalities, every problem."""
    from abaw.findings import InspectReport, Section

    root, note = find_eri_root(Path(root))
    rep = InspectReport("eri", root)
    problems: list[DataError] = []
    if note:
        rep.warnings.append(note)
    try:
        layout = detect_layout(root)
        rep.summary["layout"] = {
            "muse": "A (MuSe-2022: labels.csv + partition.csv)",
            "abaw5": "B (ABAW5: data_info.csv)",
        }[layout]
        ids, split, labels, meta = read_tables(root, layout, problems, notes=rep.warnings)
        feat_root = find_feature_root(root, layout)
        rep.summary["features folder"] = str(feat_root)
        mapping = resolve_features(feat_root, features)
    except AbawError as e:
        rep.problems += [str(p) for p in problems] + [str(e)]
        return rep
    for s in SPLITS:
        rep.summary[f"{s} samples"] = int((split == s).sum())
    labelled = np.isfinite(labels).all(axis=1)
    rep.summary["labelled / unlabelled"] = f"{int(labelled.sum())} / {int((~labelled).sum())}"
    unknown = [
        d.name
        for d in list_dir(feat_root, "the features folder")
        if d.is_dir() and d.name not in mapping and not d.name.startswith(".")
    ]
    if unknown:
        named = ",".join(
            [*mapping, *(u if u in KNOWN_MODALITIES else f"{u}=visual" for u in unknown)]
        )
        rep.warnings.append(
            f"feature folders not loaded (unknown modality or not chosen): {', '.join(unknown)}; "
            f"check them too: abaw inspect --track eri --data {shlex.quote(str(root))} "
            f"--features '{named}' (write =audio for an audio set; the same mapping "
            "data.features takes)"
        )
    sec = Section(
        "Feature sets", ["name", "modality", "width", "files", "length min", "median", "max"]
    )
    feats: dict[str, FeatureSet] = {}
    cache = cache_dir_for(root, "eri")
    for name, modality in mapping.items():
        folder = feat_root / name
        key = _cache_key(folder, ids, split, modality, True)
        fs = _cache_load(cache / f"{name}--{key}", key) if use_cache else None
        if fs is None:
            values, offsets = parse_feature_set(folder, ids, problems=problems)
            fs = FeatureSet(name, modality, values.shape[1], values, offsets)
        feats[name] = fs
        rep.warnings += _leakage_notes(folder, ids, split)
        n_files = len(_listing(folder))
        lens = fs.lengths[fs.lengths > 0]
        stats = (
            [int(lens.min()), float(np.median(lens)), int(lens.max())] if lens.size else ["-"] * 3
        )
        sec.rows.append([name, modality, fs.dim, n_files, *stats])
        stems = {file_stem(i) for i in ids}
        orphans = sorted(set(_listing(folder)) - stems)
        if orphans:
            rep.warnings.append(
                f"{len(orphans)} file(s) in {folder} have no row in the table and are ignored ({', '.join(orphans[:5])})"
            )
    rep.sections += [sec, *coverage_sections(feat_root)]  # + what `abaw extract` made
    miss = Section("Samples missing a modality", ["modality", "split", "count", "first IDs"])
    data = EriData(root, layout, ids, split, labels, feats, meta)
    for modality in data.modalities:
        m = data.missing(modality)
        for s in SPLITS:
            sel = np.flatnonzero(m & (split == s))
            if sel.size:
                miss.rows.append([modality, s, int(sel.size), ", ".join(ids[sel[:5]])])
    rep.sections.append(miss)
    rep.warnings += _missing_notes(ids, split, feats)
    rep.sections.append(_label_stats(labels[labelled]))
    rep.problems += [str(p) for p in problems]
    return rep


def _label_stats(lab: np.ndarray):
    """The inspection's label statistics of the labelled samples, one row per emotion."""
    from abaw.findings import Section

    stats = Section(
        "Label statistics (labelled samples)",
        ["emotion", "mean", "std", "min", "max", "share of 1.0"],
    )
    for j, e in enumerate(EMOTIONS):
        col = lab[:, j]
        values = [col.mean(), col.std(), col.min(), col.max(), (col == 1).mean()]
        stats.rows.append([e, *([float(v) for v in values] if col.size else ["-"] * 5)])
    return stats
