"""Reading the ERI CSV files strictly: every problem becomes one DataError naming file, line, column.

Feature CSVs are parsed with numpy's C `loadtxt` (about 30x faster than pandas
on these short, wide files); only when that fails, or finds a non-finite
value, does a slow line-by-line pass find the exact line and column to report.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from abaw.console import progress
from abaw.eri import MODALITIES
from abaw.errors import ConfigError, DataError
from abaw.io import (
    UTF8_HINT,
    decode_error,
    folder_problem,
    list_dir,
    os_error,
    path_error,
    reading,
)

N_META = 2  # leading metadata columns of every feature CSV (e.g. id and timestamp)
KNOWN_MODALITIES: dict[str, str] = {
    "DeepSpectrum": "audio",
    "eGeMAPS": "audio",
    "VGGFace2": "visual",
    "FAUs": "visual",
    "PosterV2-ViT": "visual",
    "ResNet18": "visual",
}
_BATCH = 64  # files per parallel parsing task
_MIN_PARALLEL = 2000  # fewer files than this are parsed in-process


def _report(problems: list[DataError] | None, err: DataError) -> None:
    if problems is None:
        raise err
    problems.append(err)


_F32_MAX = float(np.finfo(np.float32).max)


def read_feature_csv(path: Path) -> np.ndarray:
    """Values of one feature CSV as a (steps, width) float32 array; DataError when malformed.

    Read as UTF-8 with replacement: only the values are used, and a stray byte in a
    metadata column (a spreadsheet's encoding) is harmless; one in a value is reported as
    a non-numeric value with its line and column.
    """
    with reading(path, "a feature CSV"), open(path, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    header, _, body = text.partition("\n")
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
    body = body.rstrip("\r\n")
    nrows = body.count("\n") + 1 if body else 0
    if body.count(",") != (ncols - 1) * nrows:  # a long or short row, or a blank line
        raise diagnose_feature_csv(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": checked below
            values = np.loadtxt(
                io.StringIO(body),
                delimiter=",",
                usecols=range(N_META, ncols),
                dtype=np.float32,
                ndmin=2,
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
    with reading(path, "a feature CSV"), open(path, encoding="utf-8", errors="replace") as fh:
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
            if abs(v) > _F32_MAX:
                return DataError(
                    path,
                    "value too large for float32",
                    row=lineno,
                    column=col,
                    expected=f"a number within +-{_F32_MAX:.4g}",
                    found=cell.strip(),
                )
    return DataError(
        path,
        "unreadable feature file",
        expected="comma-separated numbers",
        found="a format numpy cannot parse",
    )


def read_table(
    path: Path,
    expected_header: list[str],
    *,
    prefix_only: bool = False,
    notes: list[str] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a small CSV table (labels, partition, data_info); checks header and field counts.

    The table must be UTF-8, except that with `prefix_only` the columns after the expected
    ones (metadata such as Country, never needed) may hold other bytes: they are read with
    replacement characters and a note (appended to `notes`) says so.

    Args:
        expected_header: the exact column names (or the leading ones if prefix_only).
    """
    bad = path_error(path, "a CSV file")
    if bad is not None:
        raise bad
    if not path.is_file():
        raise DataError(path, "file not found", expected="a CSV file", found="nothing")
    with reading(path, "a CSV file"):
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None:
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig", errors="replace"))))
        n_req = len(expected_header)
        bad_req = any("\ufffd" in c for r in rows for c in r[:n_req])
        if not prefix_only or bad_req or not rows or "\ufffd" in ",".join(rows[0]):
            raise decode_error(path)
        where = sorted(
            {
                rows[0][j]
                for r in rows[1:]
                for j, c in enumerate(r)
                if "\ufffd" in c and j < len(rows[0])
            }
        )
        if notes is not None:
            notes.append(
                f"{path}: not UTF-8 in column(s) {', '.join(where)}, which the loader does not "
                f"need; read with replacement characters ({decode_error(path).found}). {UTF8_HINT}."
            )
    else:
        rows = list(csv.reader(io.StringIO(text)))
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


# ---------------------------------------------------------------- feature folders


def find_feature_root(root: Path, layout: str) -> Path:
    """`feats/` or `features/` if present, else the one subfolder holding <Feature>/<id>.csv folders."""
    for name in ("feats", "features"):
        bad = folder_problem(root / name, "the features folder")
        if bad is not None:
            raise bad
        if (root / name).is_dir():
            return root / name
    candidates = [
        d
        for d in list_dir(root, "the ERI data set folder")
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
    found = [
        d.name
        for d in list_dir(feat_root, "the features folder")
        if d.is_dir() and not d.name.startswith(".")
    ]
    if features is None:
        features = [f for f in found if f in KNOWN_MODALITIES]
    mapping = feature_mapping(features)
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
                hint=features_fix(found),
            )
        if not modality:
            raise ConfigError(
                f"feature set {name!r} has no known modality; name it: "
                f"abaw inspect --features '{name}=visual' (or audio), and in a sweep "
                f'data.features = {{ {_toml_key(name)} = "visual" }} '
                f"(known: {', '.join(KNOWN_MODALITIES)}; folders in {feat_root}: {', '.join(found)})"
            )
        if modality not in MODALITIES:
            raise ConfigError(
                f"feature set {name!r}: modality must be one of {MODALITIES}, got {modality!r}"
            )
    return mapping


def _toml_key(name: str) -> str:
    return name if name and all(c.isalnum() or c in "-_" for c in name) else f'"{name}"'


def features_fix(found: list[str]) -> str:
    """How to point a sweep at the feature sets a data set has (for error messages)."""
    known = {f: KNOWN_MODALITIES[f] for f in found if f in KNOWN_MODALITIES}
    pick = known or {f: "audio|visual" for f in found[:2]}
    if not pick:
        return "Extract features into <features folder>/<FeatureName>/<id>.csv first"
    table = ", ".join(f'{_toml_key(k)}="{v}"' for k, v in pick.items())
    return (
        f"Fix: add --set 'data.features={{{table}}}' (or data.features = [...] of known names), "
        "or copy the sweep file and edit its [data] features"
    )


def feature_mapping(features: list[str] | dict[str, str]) -> dict[str, str]:
    """Name -> modality; a list takes each modality from KNOWN_MODALITIES ("" if unknown)."""
    if isinstance(features, dict):  # a name without a modality takes its known one
        return {f: m or KNOWN_MODALITIES.get(f, "") for f, m in features.items()}
    return {f: KNOWN_MODALITIES.get(f, "") for f in features}


def _listing(folder: Path) -> dict[str, os.stat_result]:
    """Stem -> stat of every regular `*.csv` file (links followed) of a feature folder."""
    bad = folder_problem(folder, "a folder of feature CSVs")  # listed but not entered, too
    if bad is not None:
        raise bad
    with reading(folder, "a folder of feature CSVs"), os.scandir(folder) as it:
        return {e.name[:-4]: e.stat() for e in it if e.name.endswith(".csv") and _is_file(e)}


def _is_file(e: os.DirEntry) -> bool:
    try:
        return e.is_file()
    except OSError:  # a symbolic link loop raises instead of answering
        return False


def _bad_entries(folder: Path) -> dict[str, DataError]:
    """Stem -> DataError for `*.csv` entries that are not readable files (a directory, a
    dangling link, a link loop): named, instead of the sample looking like it has no file."""
    out = {}
    with reading(folder, "a folder of feature CSVs"), os.scandir(folder) as it:
        for e in it:
            if e.name.endswith(".csv") and not _is_file(e):
                err = path_error(folder / e.name, "a feature CSV file")
                if err is not None:
                    out[e.name[:-4]] = err
    return out


def _parse_batch(paths: list[Path]) -> list[np.ndarray | tuple]:
    out: list[np.ndarray | tuple] = []
    for p in paths:
        try:
            out.append(read_feature_csv(p))
        except DataError as e:  # sent back as plain data: cheap to pickle
            out.append((e.path, e.problem, e.row, e.column, e.expected, e.found, e.hint))
        except OSError as e:  # unreadable, or vanished between listing and parsing
            e = os_error(p, e, "a feature CSV file")
            out.append((e.path, e.problem, e.row, e.column, e.expected, e.found, e.hint))
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
    bad = _bad_entries(folder)
    for s in dict.fromkeys(stems):
        if s in bad:
            _report(problems, bad[s])
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
                    p, prob, row, col, exp, fnd, hint = arr
                    _report(
                        problems,
                        DataError(p, prob, row=row, column=col, expected=exp, found=fnd, hint=hint),
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
