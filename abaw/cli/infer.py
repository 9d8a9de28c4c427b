"""`--track` where it is already known: from the study, ensemble, predictions or submission.

A study records its track (`abaw_track`), an ensemble's manifest and a predictions file
carry theirs, and `abaw submit` writes a manifest beside each submission. So `ensemble`,
`submit` and `validate` ask for `--track` only when nothing they were given records one,
or when a given `--track` disagrees with the record (one sentence either way).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from abaw.errors import ConfigError, DataError
from abaw.track import track_names


def resolve_track(given: str | None, recorded: dict[str, str | None], command: str) -> str:
    """The track: the one the inputs record (`recorded`: what -> its track or None), checked
    against `--track` when given; `--track` alone when nothing records one."""
    known = {what: t for what, t in recorded.items() if t}
    tracks = sorted(set(known.values()))
    if len(tracks) > 1:
        said = "; ".join(f"{what} is {t}" for what, t in known.items())
        raise ConfigError(f"abaw {command}: the inputs are of different tracks ({said})")
    if given:
        if tracks and given != tracks[0]:
            what = next(iter(known))
            raise ConfigError(
                f"abaw {command}: --track {given}, but {what} is {tracks[0]}; "
                f"drop --track (it is known) or give the right input"
            )
        return given
    if not tracks:
        what = ", ".join(recorded) or "the inputs"
        raise ConfigError(
            f"abaw {command}: --track is needed here: no track is recorded by {what}; "
            f"pass --track {' or --track '.join(track_names())}"
        )
    return tracks[0]


def npz_track(path: str | os.PathLike[str]) -> str | None:
    """The track in a predictions file's header (None: absent or not a predictions file)."""
    import numpy as np

    try:
        with np.load(Path(path), allow_pickle=False) as z:
            return str(json.loads(str(z["header"]))["track"])
    except Exception:  # noqa: BLE001  the reader proper names what is wrong, later
        return None


def member_file(path: str | os.PathLike[str]) -> Path:
    """A `--predictions` member: a folder's predictions-devel.npz, or the file itself."""
    p = Path(path)
    return p / "predictions-devel.npz" if p.is_dir() else p


def study_tracks(
    names: Iterable[str], storages: Sequence[str | None], runs: str | os.PathLike[str]
) -> dict[str, str | None]:
    """`study NAME` -> the track it records, looked up in the storages in order."""
    from abaw.trials import study_info
    from abaw.tune import load_study

    out: dict[str, str | None] = {}
    for name in names:
        track, found = None, False
        for storage in storages:
            try:
                study = load_study(name, storage=storage, runs=runs)
            except DataError:  # a damaged journal: said now, not "--track is needed"
                raise
            except Exception:  # noqa: BLE001  not in this storage; the ensembler says so later
                continue
            track, found = study_info(study).get("track"), True
            break
        out[f"study {name}" + ("" if found else " (not found)")] = track
    return out


def _text(value: object) -> str | None:
    """A recorded track: a non-empty string, else None (a hand-edited manifest)."""
    return value if isinstance(value, str) and value else None


def ensemble_track(name: str, runs: str | os.PathLike[str]) -> dict[str, str | None]:
    """`ensemble NAME` -> the track its manifest records.

    Read by the ensemble reader itself, so a missing, unreadable or malformed manifest is
    its one sentence now, not "--track is needed" first.
    """
    from abaw.ensemble.manifest import read_manifest

    manifest, _ = read_manifest(name, runs)
    return {f"ensemble {name}": _text(manifest.get("track"))}


def submission_track(path: str | os.PathLike[str]) -> dict[str, str | None]:
    """A submission (file, folder or zip) -> the track its `NAME.manifest.json` records.

    `abaw submit` writes `<out>/NAME/`, `<out>/NAME.zip` and `<out>/NAME.manifest.json`.
    """
    p = Path(path)
    if p.is_dir():
        candidates = [Path(f"{p}.manifest.json")]
    elif p.suffix == ".zip":
        candidates = [p.with_suffix(".manifest.json")]
    else:  # a file inside the submission's folder
        candidates = [Path(f"{p.parent}.manifest.json")]
    for m in candidates:
        try:
            doc = json.loads(m.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):  # JSON, but not a manifest: it records no track
            return {f"{p} (its {m.name} is not a JSON object)": None}
        sub = doc.get("submission")
        track = _text(sub.get("track") if isinstance(sub, dict) else None) or _text(
            doc.get("track")
        )
        if track:
            return {f"{p} (its manifest {m.name})": track}
        return {f"{p} (its {m.name} records no track)": None}
    return {f"{p} (no NAME.manifest.json beside it)": None}


def journals_below(root: Path, depth: int = 3, limit: int = 2000) -> list[Path]:
    """Journal files (`optuna-journal.log`) at most `depth` folders below `root`, newest
    first, relative to `root`: where `abaw studies` finds studies when `runs/` has none.
    Hidden folders are skipped; at most `limit` folders are looked at (a home folder is big).
    """
    from abaw.tune import JOURNAL_FILE

    found, todo, seen = [], [(root, 0)], 0
    while todo and seen < limit:
        folder, level = todo.pop()
        seen += 1
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.name == JOURNAL_FILE and e.is_file():
                found.append(Path(e.path))
            elif level < depth and not e.name.startswith(".") and e.is_dir(follow_symlinks=False):
                todo.append((Path(e.path), level + 1))
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [p.relative_to(root) for p in found]
