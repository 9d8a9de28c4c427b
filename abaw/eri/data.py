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
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from abaw.console import progress
from abaw.eri import EMOTIONS, MODALITIES
from abaw.eri.csvio import check_id, file_stem, read_feature_csv, read_table
from abaw.errors import AbawError, ConfigError, DataError
from abaw.io import atomic_open, atomic_path, cache_dir_for

LOADER_VERSION = 1  # bump when parsing or cached content changes: invalidates every cache
KNOWN_MODALITIES: dict[str, str] = {
    "DeepSpectrum": "audio",
    "eGeMAPS": "audio",
    "VGGFace2": "visual",
    "FAUs": "visual",
    "PosterV2-ViT": "visual",
    "ResNet18": "visual",
}
SPLITS = ("train", "devel", "test")
_ABAW5_SPLITS = {"Train": "train", "Val": "devel", "Test": "test"}
_BATCH = 64  # files per parallel parsing task
_MIN_PARALLEL = 2000  # fewer files than this are parsed in-process


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


# ---------------------------------------------------------------- tables


def detect_layout(root: Path) -> str:
    """ "abaw5" if data_info.csv exists, "muse" if labels.csv and partition.csv do."""
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
    raise DataError(
        root,
        "no ERI table found",
        expected="data_info.csv (ABAW5) or labels.csv + partition.csv (MuSe)",
        found="neither",
    )


def _report(problems: list[DataError] | None, err: DataError) -> None:
    if problems is None:
        raise err
    problems.append(err)


def read_tables(root: Path, layout: str, problems: list[DataError] | None = None):
    """IDs, splits, labels and metadata from the layout's tables.

    Returns (ids, split, labels, meta, line_of) where line_of maps an ID to (file, line).
    """
    if layout == "muse":
        lab_path, part_path = root / "labels.csv", root / "partition.csv"
        _, lab_rows = read_table(lab_path, ["File_ID", *EMOTIONS])
        _check_ids(lab_path, lab_rows, problems)
        _, part_rows = read_table(part_path, ["Id", "Partition"])
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
        ids, split, raw, lines = [], [], [], []
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
            ids.append(row[0])
            split.append(part[row[0]])
            raw.append(row[1:])
            lines.append(lineno)
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
        meta = None
        table = lab_path
    else:
        table = root / "data_info.csv"
        header, rows = read_table(table, ["File_ID", "Split", *EMOTIONS], prefix_only=True)
        _check_ids(table, rows, problems)
        ids, split, raw, lines, extra = [], [], [], [], []
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
            ids.append(row[0])
            split.append(_ABAW5_SPLITS[row[1]])
            raw.append(row[2 : 2 + len(EMOTIONS)])
            extra.append(row[2 + len(EMOTIONS) :])
            lines.append(lineno)
        cols = header[2 + len(EMOTIONS) :]
        meta = pd.DataFrame(extra, columns=cols) if cols else None
        if meta is not None and "Age" in meta:
            meta["Age"] = pd.to_numeric(meta["Age"], errors="coerce")
    labels = _parse_labels(table, raw, split, lines, problems)
    return np.array(ids, dtype=str), np.array(split, dtype=str), labels, meta


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


# ---------------------------------------------------------------- features


def find_feature_root(root: Path, layout: str) -> Path:
    """`feats/` or `features/` if present, else the one subfolder holding <Feature>/<id>.csv folders."""
    for name in ("feats", "features"):
        if (root / name).is_dir():
            return root / name
    candidates = [
        d
        for d in sorted(root.iterdir())
        if d.is_dir()
        and not d.name.startswith(".")
        and any(sub.is_dir() and any(sub.glob("*.csv")) for sub in d.iterdir())
    ]
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(d.name for d in candidates) if candidates else "no such folder"
    raise DataError(
        root,
        "cannot find the features folder",
        expected="feats/ or features/ holding <Feature>/<id>.csv",
        found=found,
    )


def resolve_features(
    feat_root: Path, features: list[str] | dict[str, str] | None
) -> dict[str, str]:
    """Feature name -> modality; unknown names need an explicit mapping."""
    found = sorted(d.name for d in feat_root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if features is None:
        features = [f for f in found if f in KNOWN_MODALITIES]
    mapping = (
        dict(features)
        if isinstance(features, dict)
        else {f: KNOWN_MODALITIES.get(f, "") for f in features}
    )
    if not mapping:
        raise ConfigError(
            f"no feature sets chosen; feature folders in {feat_root}: {', '.join(found) or 'none'}"
        )
    for name, modality in mapping.items():
        if name not in found:
            raise DataError(
                feat_root / name,
                f"feature set {name!r} not found",
                expected=f"one of the folders in {feat_root}",
                found=", ".join(found) or "no folders",
            )
        if not modality:
            raise ConfigError(
                f"feature set {name!r} has no known modality; pass features as a mapping name -> 'audio'|'visual' "
                f"(known: {', '.join(KNOWN_MODALITIES)}; folders in {feat_root}: {', '.join(found)})"
            )
        if modality not in MODALITIES:
            raise ConfigError(
                f"feature set {name!r}: modality must be one of {MODALITIES}, got {modality!r}"
            )
    return mapping


def _listing(folder: Path) -> dict[str, os.stat_result]:
    with os.scandir(folder) as it:
        return {e.name[:-4]: e.stat() for e in it if e.name.endswith(".csv") and e.is_file()}


def _parse_batch(paths: list[Path]) -> list[np.ndarray | tuple]:
    out: list[np.ndarray | tuple] = []
    for p in paths:
        try:
            out.append(read_feature_csv(p))
        except (
            DataError
        ) as e:  # sent back as plain data: exceptions with keyword fields do not pickle
            out.append((e.path, e.problem, e.row, e.column, e.expected, e.found))
        except OSError as e:  # vanished or unreadable between listing and parsing
            out.append((str(p), "cannot read the file", None, None, None, e.strerror))
    return out


def parse_feature_set(
    folder: Path,
    ids: np.ndarray,
    *,
    n_jobs: int = -1,
    backend: str = "loky",
    show_progress: bool | None = None,
    problems: list[DataError] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Parse every present file of one feature set; returns (values, offsets) in `ids` order."""
    listing = _listing(folder)
    stems = [file_stem(i) for i in ids]
    present = [k for k, s in enumerate(stems) if s in listing]
    paths = [folder / f"{stems[k]}.csv" for k in present]
    batches = [paths[i : i + _BATCH] for i in range(0, len(paths), _BATCH)]
    if len(paths) < _MIN_PARALLEL:  # starting worker processes costs more than it saves
        n_jobs = 1
    arrays: list[np.ndarray | None] = [None] * len(ids)
    widths: dict[int, tuple[int, Path]] = {}
    k = 0
    with progress(disable=None if show_progress is None else not show_progress) as bar:
        task = bar.add_task(f"parse {folder.name}", total=len(paths))
        runner = Parallel(n_jobs=n_jobs, backend=backend, return_as="generator")
        for batch, result in zip(
            batches, runner(delayed(_parse_batch)(b) for b in batches), strict=True
        ):
            for path, arr in zip(batch, result, strict=True):
                if isinstance(arr, tuple):
                    p, prob, row, col, exp, fnd = arr
                    _report(
                        problems, DataError(p, prob, row=row, column=col, expected=exp, found=fnd)
                    )
                else:
                    first = widths.setdefault(arr.shape[1], (0, path))
                    widths[arr.shape[1]] = (first[0] + 1, first[1])
                    arrays[present[k]] = arr
                k += 1
            bar.update(task, advance=len(batch))
    if len(widths) > 1:  # the most common width is right; every other file is reported
        dim = max(widths, key=lambda w: widths[w][0])
        for idx in present:
            a = arrays[idx]
            if a is not None and a.shape[1] != dim:
                _report(
                    problems,
                    DataError(
                        folder / f"{stems[idx]}.csv",
                        f"feature width differs from the other files of {folder.name}",
                        row=1,
                        expected=f"{dim + 2} columns (like {widths[dim][1].name})",
                        found=f"{a.shape[1] + 2}",
                    ),
                )
                arrays[idx] = None
    dim = (
        next(iter(widths))
        if len(widths) == 1
        else (max(widths, key=lambda w: widths[w][0]) if widths else 0)
    )
    lengths = np.array([0 if a is None else len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.empty((int(offsets[-1]), dim), dtype=np.float32)
    for i, a in enumerate(arrays):
        if a is not None:
            values[offsets[i] : offsets[i + 1]] = a
            arrays[i] = None  # free as we go: bounded peak memory
    return values, offsets


def standardize_(fs: FeatureSet, split: np.ndarray, *, block: int = 1 << 16) -> None:
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
    h = hashlib.sha256()
    h.update(json.dumps([LOADER_VERSION, folder.name, modality, standardize]).encode())
    h.update("\n".join(ids).encode())
    h.update("\n".join(split).encode())
    for stem, st in sorted(_listing(folder).items()):
        h.update(f"{stem}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _cache_load(entry: Path, key: str) -> FeatureSet | None:
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        if manifest.get("key") != key or manifest.get("version") != LOADER_VERSION:
            return None
        arr = {k: np.load(entry / f"{k}.npy", allow_pickle=False) for k in manifest["arrays"]}
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
    root = Path(root)
    layout = detect_layout(root)
    ids, split, labels, meta = read_tables(root, layout)
    feat_root = find_feature_root(root, layout)
    mapping = resolve_features(feat_root, features)
    feats: dict[str, FeatureSet] = {}
    cache = cache_dir_for(root, "eri")
    for name, modality in mapping.items():
        folder = feat_root / name
        key = _cache_key(folder, ids, split, modality, standardize) if use_cache else ""
        fs = _cache_load(cache / f"{name}--{key}", key) if use_cache else None
        if fs is None:
            values, offsets = parse_feature_set(
                folder, ids, n_jobs=n_jobs, show_progress=show_progress
            )
            fs = FeatureSet(name, modality, values.shape[1], values, offsets)
            if standardize:
                standardize_(fs, split)
            if use_cache:
                # A read-only data folder: loading still works (set ABAW_CACHE to cache elsewhere).
                with contextlib.suppress(OSError):
                    _cache_save(cache, key, fs)
        feats[name] = fs
    warnings = _missing_notes(ids, split, feats)
    return EriData(root, layout, ids, split, labels, feats, meta, [], warnings)


def inspect_data(root: Path, *, features: list[str] | None = None, use_cache: bool = True):
    """Everything `abaw inspect --track eri` shows: counts, feature sets, missing modalities, every problem."""
    from abaw.inspect import InspectReport, Section

    root = Path(root)
    rep = InspectReport("eri", root)
    problems: list[DataError] = []
    try:
        layout = detect_layout(root)
        rep.summary["layout"] = {
            "muse": "A (MuSe-2022: labels.csv + partition.csv)",
            "abaw5": "B (ABAW5: data_info.csv)",
        }[layout]
        ids, split, labels, meta = read_tables(root, layout, problems)
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
    unknown = sorted(
        d.name
        for d in feat_root.iterdir()
        if d.is_dir() and d.name not in mapping and not d.name.startswith(".")
    )
    if unknown:
        rep.warnings.append(
            f"feature folders not loaded (unknown modality or not chosen): {', '.join(unknown)}"
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
    rep.sections.append(sec)
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
    lab = labels[labelled]
    stats = Section(
        "Label statistics (labelled samples)",
        ["emotion", "mean", "std", "min", "max", "share of 1.0"],
    )
    for j, e in enumerate(EMOTIONS):
        col = lab[:, j]
        stats.rows.append(
            [
                e,
                *(
                    [
                        float(col.mean()),
                        float(col.std()),
                        float(col.min()),
                        float(col.max()),
                        float((col == 1).mean()),
                    ]
                    if col.size
                    else ["-"] * 5
                ),
            ]
        )
    rep.sections.append(stats)
    rep.problems += [str(p) for p in problems]
    return rep
