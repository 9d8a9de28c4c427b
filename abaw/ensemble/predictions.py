"""Ensemble members: where they come from, checked and aligned to the first member's rows.

Members come from the kept trials of Optuna studies (abaw/trials.py) or from prediction files
in the one format (abaw/predictions.py). Each is checked (track, split, key columns, finite
values) and aligned by key to the first member (ERI: sample ID; Expr: video and frame)
whatever its row order, with one sentence naming the member when they disagree.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abaw.errors import AbawError, ConfigError, DataError
from abaw.io import read_npy_header
from abaw.predictions import Predictions, check_finite, describe_row, match_rows
from abaw.track import get_track


@dataclass
class Member:
    """One ensemble member: where it came from, its devel predictions, and how to read its test ones."""

    name: str
    source: str  # "study" | "file"
    devel: Predictions
    load_test: Callable[[], Predictions]
    study: str | None = None
    trial: int | None = None
    path: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    devel_score: float = float("nan")
    value: float | None = None  # the study's recorded objective value (study members)


def prediction_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(devel, test) files of a teammate's member.

    PATH is either a folder holding predictions-devel.npz and predictions-test.npz (an
    `abaw train` run folder has exactly these), or a devel file whose name contains "devel":
    its test file is the same name with the last "devel" replaced by "test", in the same folder.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(
            p, "member predictions not found", expected="a folder or a *devel*.npz file"
        )
    if p.is_dir():
        dev, test = p / "predictions-devel.npz", p / "predictions-test.npz"
    else:
        if "devel" not in p.name:
            raise AbawError(
                f"{p}: a member file must be a devel file with 'devel' in its name (its test file "
                "is the same name with 'test'), or a folder holding predictions-devel.npz and "
                "predictions-test.npz"
            )
        head, _, tail = p.name.rpartition("devel")
        dev, test = p, p.with_name(head + "test" + tail)
    for f in (dev, test):
        if not f.is_file():
            raise DataError(f, "member predictions file not found", expected=f"{f.name}")
    return dev, test


def check_member(pred: Predictions, track: str, split: str, what: str) -> None:
    """Refuse predictions of another track or split, with other key columns, or not finite."""
    if pred.track != track:
        raise AbawError(f"{what}: predictions are for track {pred.track!r}, not {track!r}")
    if pred.split != split:
        raise AbawError(f"{what}: the {split} file holds {pred.split!r} predictions")
    expected = tuple(get_track(track).keys)
    if tuple(pred.keys) != expected:
        raise AbawError(f"{what}: key columns {list(pred.keys)}, expected {list(expected)}")
    check_finite(pred, what)


def align_to(pred: Predictions, ref_keys: dict[str, np.ndarray], what: str) -> Predictions:
    """`pred` re-ordered to the rows of `ref_keys`; one clear sentence if the row sets differ."""
    if tuple(pred.keys) != tuple(ref_keys):
        raise AbawError(
            f"{what}: key columns {list(pred.keys)} differ from the first member's {list(ref_keys)}"
        )
    if all(np.array_equal(pred.keys[k], ref_keys[k]) for k in ref_keys):
        return pred
    m = match_rows(pred.keys, ref_keys)
    if m.ref_duplicate is not None:
        raise AbawError(
            f"the first member lists row {describe_row(ref_keys, m.ref_duplicate)} twice"
        )
    if len(m.extra):
        raise AbawError(
            f"{what}: row {describe_row(pred.keys, int(m.extra[0]))} is not among the first "
            f"member's rows ({len(m.extra)} such rows); members must predict the same rows"
        )
    if m.duplicate is not None:
        # Name the first row (in file order) whose key an earlier row already had; `take`
        # holds the first row of each key.
        dup = np.setdiff1d(np.arange(len(pred)), m.take[m.take >= 0])[0]
        raise AbawError(f"{what}: row {describe_row(pred.keys, int(dup))} appears twice")
    if len(pred) != len(m.take):
        missing = np.flatnonzero(m.take < 0)
        raise AbawError(
            f"{what}: {len(m.take) - len(pred)} of the first member's rows are missing "
            f"(first: {describe_row(ref_keys, int(missing[0]))}); members must predict the same rows"
        )
    take = m.take
    return Predictions(
        pred.track,
        pred.split,
        {k: v[take] for k, v in pred.keys.items()},
        pred.values[take],
        pred.columns,
        None if pred.labels is None else pred.labels[take],
        pred.meta,
    )


def check_test_rows(
    name: str,
    p: Predictions,
    ref_keys: dict[str, np.ndarray] | None,
    ref_columns: tuple[str, ...] = (),
) -> Predictions:
    """A member's test predictions checked against the first member's keys and columns
    (None: this is the first): not empty, the same columns, the same rows. Returns them
    aligned to `ref_keys`."""
    if ref_keys is None:
        if len(p) == 0:
            raise AbawError(f"{name}: the test predictions are empty (no test rows)")
        return p
    if p.columns != ref_columns:
        raise AbawError(
            f"{name}: test columns {list(p.columns)} differ from the first member's "
            f"{list(ref_columns)}"
        )
    return align_to(p, ref_keys, f"{name} (test)")


def check_test_files(members: Sequence[Member]) -> None:
    """Read every member's test file once, whatever weight the recipe will give it.

    Why at collection: a teammate's file that misses test IDs must be refused even when
    greedy selection would give it weight 0 (it is still listed as a member), and before
    minutes of fitting rather than after. Memory: one member's test arrays at a time, plus
    the first member's keys.
    """
    ref_keys: dict[str, np.ndarray] | None = None
    cols: tuple[str, ...] = ()
    for mem in members:
        p = check_test_rows(mem.name, mem.load_test(), ref_keys, cols)
        if ref_keys is None:
            ref_keys, cols = p.keys, p.columns
        del p


def attach(first: Member, mem: Member) -> None:
    """Align `mem`'s devel rows to `first`'s and share one copy of the keys and labels.

    Refuses (one sentence) when the columns, the rows or the labels disagree.
    """
    ref = first.devel
    if mem.devel.columns != ref.columns:
        raise AbawError(
            f"{mem.name}: columns {list(mem.devel.columns)} differ from "
            f"{first.name}'s {list(ref.columns)}"
        )
    if mem.devel.keys is ref.keys:
        return
    dev = align_to(mem.devel, ref.keys, f"{mem.name} (devel)")
    if ref.labels is None:
        ref.labels = dev.labels
    elif dev.labels is not None and not np.array_equal(
        np.nan_to_num(dev.labels), np.nan_to_num(ref.labels)
    ):
        raise AbawError(f"{mem.name}: devel labels differ from {first.name}'s (another data set?)")
    dev.keys, dev.labels = ref.keys, ref.labels
    mem.devel = dev


def load_lean(path: str | os.PathLike[str], *, min_bytes: int = 1 << 20) -> Predictions:
    """`Predictions.load`, but large arrays of an uncompressed `.npz` are memory-mapped (read-only).

    np.savez stores arrays uncompressed, so each large array is a plain .npy inside the zip
    and can be mapped where it lies: nothing is copied into anonymous memory, and an array
    dropped after use (a member's keys once compared) leaves memory at once. Anything
    unusual (compressed, damaged, small) falls back to `Predictions.load`.
    """
    path = Path(path)
    try:
        mapped: dict[str, np.ndarray] = {}
        with zipfile.ZipFile(path) as z, open(path, "rb") as fh:
            for info in z.infolist():
                if info.compress_type != zipfile.ZIP_STORED or info.file_size < min_bytes:
                    continue
                fh.seek(info.header_offset)
                local = fh.read(30)
                n, m = struct.unpack("<HH", local[26:30])
                fh.seek(info.header_offset + 30 + n + m)
                shape, dtype, fortran = read_npy_header(fh)
                if dtype.hasobject or not shape:
                    continue
                mapped[info.filename.removesuffix(".npy")] = np.memmap(
                    path, dtype, "r", offset=fh.tell(), shape=shape, order="F" if fortran else "C"
                )
        if not mapped:
            return Predictions.load(path)
        with np.load(path, allow_pickle=False) as zf:

            def get(k: str) -> np.ndarray:
                return mapped[k] if k in mapped else zf[k]

            header = json.loads(str(zf["header"]))
            return Predictions(
                header["track"],
                header["split"],
                {k: get(f"key_{k}") for k in header["keys"]},
                get("values"),
                tuple(zf["columns"].tolist()),
                get("labels") if "labels" in zf.files else None,
                header.get("meta", {}),
            )
    except (OSError, ValueError, EOFError, KeyError, struct.error, zipfile.BadZipFile):
        return Predictions.load(path)


def find_study(name: str, storages: Sequence[str | None], runs: Path) -> Any:
    """The study `name` from the first of `storages` that holds it (None: the local journal)."""
    import optuna

    from abaw.tune import open_storage

    seen: list[str] = []
    for url in storages:
        st = open_storage(url, runs=runs, create=False)
        names = optuna.study.get_all_study_names(storage=st)
        if name in names:
            return optuna.load_study(study_name=name, storage=st)
        seen += names
    where = ", ".join(str(u) if u else f"{runs}/optuna-journal.log" for u in storages)
    raise AbawError(
        f"no study named {name!r} in {where}; studies there: {', '.join(sorted(seen)) or 'none'}"
    )


def collect_members(
    track: str,
    studies: Sequence[str] = (),
    *,
    top_k: int = 5,
    storages: Sequence[str | None] = (None,),
    runs: str | os.PathLike[str] = "runs",
    artifacts: str | os.PathLike[str] | None = None,
    files: Sequence[str | os.PathLike[str]] = (),
) -> list[Member]:
    """Members from studies' kept trials (best first) and from prediction files."""
    runs = Path(runs)
    _refuse_repeats(studies, files)
    members: list[Member] = []
    for name in studies:
        for mem in _study_members(track, name, top_k, list(storages) or [None], runs, artifacts):
            _append(members, mem)
    for f in files:
        _append(members, _file_member(track, f))
    if not members:
        raise AbawError("no members: name --studies and/or --predictions")
    check_test_files(members)
    return members


def _refuse_repeats(studies: Sequence[str], files: Sequence[str | os.PathLike[str]]) -> None:
    """A study or file named twice would count every one of its members twice, silently.

    Files are compared by the devel file they stand for (a folder means its
    predictions-devel.npz), resolved: `DIR` and `DIR/predictions-devel.npz` are one member.
    """
    seen: dict[str, str] = {}
    named = [(s, f"--studies names {s!r}") for s in studies]
    for f in files:
        dev = Path(f) / "predictions-devel.npz" if Path(f).is_dir() else Path(f)
        named.append((str(dev.resolve()), f"--predictions names {str(f)!r}"))
    for key, shown in named:
        if key in seen:
            again = "" if seen[key] == shown else f" (also as {seen[key].split(' names ')[1]})"
            raise ConfigError(
                f"{shown} twice{again}: every member of it would count twice; name each "
                "study and prediction file once"
            )
        seen[key] = shown


def _study_members(
    track: str,
    name: str,
    top_k: int,
    storages: list[str | None],
    runs: Path,
    artifacts: str | os.PathLike[str] | None,
) -> Iterator[Member]:
    """The top-`top_k` kept trials of study `name`, one at a time (each joins before the next
    is read); test files are read only when asked for."""
    from abaw.trials import (
        STUDY_TRACK,
        download_trial_file,
        kept_trials,
        predictions_attr,
        trial_predictions,
    )

    study = find_study(name, storages, runs)
    st_track = study.user_attrs.get(STUDY_TRACK)
    if st_track and st_track != track:
        raise AbawError(f"study {name!r} is for track {st_track!r}, not {track!r}")
    trials = kept_trials(study, top_k)
    if not trials:
        raise AbawError(f"study {name!r} has no completed trial with kept predictions")
    for t in trials:
        what = f"study {name!r}, trial {t.number}"
        if not t.user_attrs.get(predictions_attr("test")):
            raise AbawError(f"{what}: no test predictions are recorded (kept without them?)")
        dev = trial_predictions(study, t, "devel", artifacts=artifacts)
        check_member(dev, track, "devel", what)

        def load(study=study, t=t, what=what) -> Predictions:
            tmp = tempfile.mkdtemp(prefix="abaw-member-")
            try:
                path = download_trial_file(
                    study,
                    t,
                    predictions_attr("test"),
                    Path(tmp) / "predictions-test.npz",
                    artifacts=artifacts,
                )
                p = load_lean(path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # a mapped file stays readable
            check_member(p, track, "test", what)
            p.meta.setdefault("study", study.study_name)
            p.meta.setdefault("trial", t.number)
            return p

        yield Member(
            f"{name}#{t.number}",
            "study",
            dev,
            load,
            study=name,
            trial=t.number,
            params=dict(t.params),
            value=float(t.value),
        )


def _file_member(track: str, f: str | os.PathLike[str]) -> Member:
    """A member from a teammate's prediction files (see `prediction_files`)."""
    dev_path, test_path = prediction_files(f)
    dev = Predictions.load(dev_path)
    check_member(dev, track, "devel", str(dev_path))

    def load() -> Predictions:
        p = load_lean(test_path)
        check_member(p, track, "test", str(test_path))
        return p

    params = dict(dev.meta.get("params", {}))
    return Member(str(f), "file", dev, load, path=str(Path(f).resolve()), params=params)


def _append(members: list[Member], mem: Member) -> None:
    """Add a member, aligned to the first at once (so only one copy of the devel keys is held)."""
    if members:
        attach(members[0], mem)
    members.append(mem)
