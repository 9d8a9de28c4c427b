"""The ensemble folder `<runs>/ensembles/NAME/` (Contract B): its manifest, writing and reading.

Written atomically (a temporary sibling folder renamed into place; an existing one replaced
only with force): predictions-devel.npz, predictions-test.npz and manifest.json. `abaw submit`
reads it with `load_ensemble`; `abaw report` with `load_ensemble_devel` (no test file read).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from abaw import __version__
from abaw.ensemble.predictions import Member
from abaw.ensemble.recipes import Pipeline
from abaw.ensemble.stream import stream_test
from abaw.errors import AbawError, ConfigError, DataError
from abaw.io import atomic_dir, ensure_dir, safe_name
from abaw.metrics import Score
from abaw.predictions import Predictions
from abaw.track import Track

REQUIRED = ("track", "members", "scores")  # what every reader of a manifest relies on


def ensemble_dir(runs: str | os.PathLike[str], name: str) -> Path:
    """`<runs>/ensembles/<name>`; a name that is not a plain folder name is a ConfigError."""
    try:
        safe_name(name, what="ensemble name")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Path(runs) / "ensembles" / name


def keys_sha256(keys: dict[str, np.ndarray], chunk: int = 1 << 16) -> str:
    """sha256 over each key column: its name, NUL, its values as text joined by newlines, NUL.

    Hashed in chunks of rows, so no million-string list is ever built.
    """
    h = hashlib.sha256()
    for k, v in keys.items():
        h.update(k.encode() + b"\0")
        for a in range(0, len(v), chunk):
            part = "\n".join(map(str, v[a : a + chunk].tolist()))
            h.update((part + ("\n" if a + chunk < len(v) else "")).encode())
        h.update(b"\0")
    return h.hexdigest()


def build_manifest(
    track: Track,
    *,
    name: str,
    method: str,
    pipeline: Pipeline,
    members: Sequence[Member],
    score: Score,
    honest: Sequence[Sequence[float]],
    halves: Sequence[np.ndarray],
    seed: int,
) -> dict[str, Any]:
    """The manifest of a fitted ensemble (the test rows and their hash are added when written)."""
    recipe, columns = pipeline.recipe, members[0].devel.columns
    honest_ens, honest_single = honest
    single = np.array([m.devel_score for m in members])
    best = int(np.argmax(single))
    manifest: dict[str, Any] = {
        "name": name,
        "track": track.name,
        "metric": track.metric,
        "method": method,
        "method_used": recipe.method_used_,
        "abaw_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "members": _member_entries(recipe, members, columns),
        "postprocess": pipeline.post.to_manifest(),
        "scores": {
            "ensemble_devel": score.value,
            "best_single_devel": float(single[best]),
            "best_single_member": members[best].name,
            "honest_ensemble": float(np.mean(honest_ens)),
            "honest_best_single": float(np.mean(honest_single)),
            "honest_halves": {
                "split_by": track.split_by,
                "rows": [int(len(h)) for h in halves],
                "ensemble": [float(s) for s in honest_ens],
                "best_single": [float(s) for s in honest_single],
                "seed": seed,
            },
        },
        "per_column": score.per_column,
        "devel_rows": len(members[0].devel),
        "notes": pipeline.notes,
    }
    if recipe.method_used_ == "stack":
        manifest["intercept"] = dict(zip(columns, map(float, recipe.intercept_), strict=True))
    return manifest


def _member_entries(recipe: Any, members: Sequence[Member], columns: Sequence[str]) -> list[dict]:
    """One entry per member: where from, devel score, weight share (and count / column weights)."""
    share = recipe.weights_.sum(axis=1)
    share = share / share.sum() if share.sum() > 0 else share
    entries = []
    for i, mem in enumerate(members):
        entry = {
            "source": mem.source,
            "study": mem.study,
            "trial": mem.trial,
            "path": mem.path,
            "params": mem.params,
            "devel_score": mem.devel_score,
            "weight": float(share[i]),
        }
        if mem.value is not None:
            entry["trial_value"] = mem.value
        if recipe.counts_ is not None and recipe.method_used_ == "greedy":
            entry["count"] = int(recipe.counts_[i])
        if recipe.method_used_ == "stack":
            entry["column_weights"] = dict(
                zip(columns, map(float, recipe.weights_[i]), strict=True)
            )
        entries.append(entry)
    return entries


def write_ensemble(
    out_dir: Path,
    *,
    manifest: dict[str, Any],
    devel: Predictions,
    members: Sequence[Member],
    pipeline: Pipeline,
    force: bool,
) -> Predictions:
    """Stream the test side, then write the folder in one rename; returns the test predictions.

    Adds `test_rows` and `test_keys_sha256` to `manifest`.
    """
    test = stream_test(manifest["track"], members, pipeline)
    test.meta = dict(devel.meta)
    manifest["test_rows"] = len(test)
    manifest["test_keys_sha256"] = keys_sha256(test.keys)
    ensure_dir(out_dir.parent, "ensembles folder")
    if out_dir.exists() and not force:
        raise AbawError(f"{out_dir} exists; pass --force to replace it")
    with atomic_dir(out_dir) as tmp:
        devel.save(tmp / "predictions-devel.npz")
        test.save(tmp / "predictions-test.npz")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return test


def read_manifest(name: str, runs: str | os.PathLike[str] = "runs") -> tuple[dict[str, Any], Path]:
    """(manifest, folder) of `<runs>/ensembles/<name>/`; one sentence when absent or unreadable."""
    folder = ensemble_dir(runs, name)
    path = folder / "manifest.json"
    if not path.is_file():
        root = folder.parent
        found = (
            sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if root.is_dir()
            else []
        )
        raise AbawError(
            f"no ensemble {name!r}: {path} does not exist; ensembles in {root}: "
            f"{', '.join(found) or 'none'} (make one with `abaw ensemble`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(path, "not a readable JSON manifest", found=str(e)) from None
    if not isinstance(manifest, dict):  # `key in manifest` below would test a list or string
        raise DataError(
            path,
            "not an ensemble manifest",
            expected="a JSON object (as `abaw ensemble` writes)",
            found=json.dumps(manifest)[:40],
            hint="Run `abaw ensemble` again (--force) to write it",
        )
    for key in REQUIRED:
        if key not in manifest:
            raise DataError(path, f"manifest has no {key!r} entry")
    return manifest, folder


def load_ensemble(
    name: str, runs: str | os.PathLike[str] = "runs"
) -> tuple[dict[str, Any], Predictions, Predictions]:
    """(manifest, devel predictions, test predictions) of `<runs>/ensembles/<name>/`."""
    manifest, folder = read_manifest(name, runs)
    return (
        manifest,
        Predictions.load(folder / "predictions-devel.npz"),
        Predictions.load(folder / "predictions-test.npz"),
    )


def load_ensemble_devel(
    name: str, runs: str | os.PathLike[str] = "runs"
) -> tuple[dict[str, Any], Predictions]:
    """(manifest, devel predictions): what a report needs, without reading the test file."""
    manifest, folder = read_manifest(name, runs)
    return manifest, Predictions.load(folder / "predictions-devel.npz")
