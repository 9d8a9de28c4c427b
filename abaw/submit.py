"""`abaw submit` and `abaw validate`: from test predictions to a file the challenge server accepts.

`submit` writes the track's file(s) into a temporary folder, validates them with exactly the
code `abaw validate` runs, and only then renames them into place, zips them for upload and
copies the ensemble manifest beside the zip. `validate` checks any submission (ours, a
teammate's script, a zip) against every rule of docs/submitting.md and the user's own
test IDs / frame list, and returns every problem with its row number.

The track-specific writers and checkers are in the wings (abaw/eri/submission.py,
abaw/expr/submission.py), reached through the Track object (`write_submission`,
`validate_submission`); `Problem` and the shared readers are in abaw/problems.py.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abaw import __version__
from abaw.errors import AbawError, ConfigError, SubmissionError
from abaw.predictions import Predictions, check_finite
from abaw.problems import (  # noqa: F401  (re-exported: their home before abaw.problems)
    KEPT,
    SHOWN,
    Problem,
    add_rows,
    read_submission,
    sorted_problems,
    text_lines,
    total,
)
from abaw.track import get_track


def validate(
    track: str,
    path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    **options: Any,
) -> list[Problem]:
    """Every problem of the submission at `path` (empty list = accepted).

    Args:
        track: a registered track name (`abaw.track.track_names()`).
        path: a CSV / TXT file, a folder of per-video files, or a zip of either.
        data: the data set root (its test IDs / test frame list are the expected rows).
        options: the track's `submission_options` that matter for checking (e.g. `frames`,
            the organisers' test frame list, if not found in `data`); None values are left out.
    """
    tr = get_track(track)
    kw = _options(tr, options, "validate")
    return sorted_problems(tr.validate_submission(Path(path), Path(data), **kw))


def _options(tr: Any, options: dict[str, Any], what: str) -> dict[str, Any]:
    """The given options the track takes; an option of another track is a ConfigError."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in given if k not in tr.submission_options]
    if unknown:
        raise ConfigError(
            f"{what}: {', '.join(unknown)} is not an option of the {tr.name} track "
            f"(its options: {', '.join(tr.submission_options) or 'none'})"
        )
    return given


@dataclass
class SubmitResult:
    """Where `submit` put everything."""

    folder: Path  # <out>/<name>/ with the submission file(s)
    files: list[Path]  # the submission file(s) inside it
    zip: Path  # <out>/<name>.zip, the same files at the zip's top level
    manifest: Path  # <out>/<name>.manifest.json
    rows: int  # rows written (ERI samples / Expr frames)
    notes: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def submit(
    track: str,
    predictions_or_ensemble: Predictions | str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    runs: str | os.PathLike[str] = "runs",
    out: str | os.PathLike[str] = "submissions",
    force: bool = False,
    name: str | None = None,
    **options: Any,
) -> SubmitResult:
    """Write, validate, then publish a submission; refuse to replace one without `force`.

    Args:
        predictions_or_ensemble: test `Predictions`, a `.npz` file of them, or the name of an
            ensemble under `<runs>/ensembles/`.
        options: the track's `submission_options`, e.g. ERI `id_style` ("as-data", "bracketed"
            or "bare"); Expr `fmt` ("single": ABAW5/6 file in frame-list order, "per-video":
            ABAW3/4) and `frames` (the test frame list). None values are left out.
    """
    from abaw.io import atomic_dir, atomic_open, atomic_path, ensure_dir, safe_name

    tr = get_track(track)
    kw = _options(tr, options, "submit")
    pred, manifest, name = _source(predictions_or_ensemble, runs, name)
    try:
        safe_name(name, what="submission name")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _check_predictions(pred, track)
    out = Path(out)
    folder, zpath, mpath = out / name, out / f"{name}.zip", out / f"{name}.manifest.json"
    existing = [p for p in (folder, zpath, mpath) if p.exists()]
    if existing and not force:
        raise AbawError(
            f"{existing[0]} exists; choose another --name or pass --force to replace it"
        )
    ensure_dir(out, "submissions folder (--out)")
    with atomic_dir(folder) as tmp:
        written = tr.write_submission(pred, Path(data), tmp, **kw)
        problems = tr.validate_submission(written.check, Path(data), **kw)
        if problems:
            shown = "; ".join(str(p) for p in problems[:5])
            raise SubmissionError(
                f"the written submission fails validation ({total(problems)} problems: {shown})"
            )
    final = [folder / f.name for f in written.files]
    with atomic_path(zpath) as zt, zipfile.ZipFile(zt, "w", zipfile.ZIP_DEFLATED) as z:
        for f in final:
            z.write(f, arcname=f.name)
    manifest = dict(manifest)
    manifest["submission"] = {
        "track": track,
        **written.info,
        "rows": written.rows,
        "files": {f.name: _sha256(f) for f in final},
        "zip": zpath.name,
        "data": str(Path(data).resolve()),
        "abaw_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "notes": written.notes,
    }
    with atomic_open(mpath) as fh:
        json.dump(manifest, fh, indent=2)
    return SubmitResult(folder, final, zpath, mpath, written.rows, written.notes)


def _source(
    src: Predictions | str | os.PathLike[str], runs: str | os.PathLike[str], name: str | None
) -> tuple[Predictions, dict[str, Any], str]:
    """(test predictions, the manifest to copy, the submission name) of what was given."""
    if isinstance(src, Predictions):
        check_finite(src, "the test predictions given")
        return src, {"source": "predictions", "meta": src.meta}, name or "predictions"
    if str(src).endswith(".npz") or Path(src).is_file():
        pred = Predictions.load(src)
        check_finite(pred, src)
        stem = Path(src).stem
        default = Path(src).resolve().parent.name if stem.startswith("predictions") else stem
        return pred, {"source": str(Path(src).resolve()), "meta": pred.meta}, name or default
    from abaw.ensemble import load_ensemble
    from abaw.ensemble.manifest import ensemble_dir

    manifest, _, pred = load_ensemble(str(src), runs)
    check_finite(pred, ensemble_dir(runs, str(src)) / "predictions-test.npz")
    return pred, manifest, name or str(src)


def _check_predictions(pred: Predictions, track: str) -> None:
    if pred.track != track:
        raise SubmissionError(f"the predictions are for track {pred.track!r}, not {track!r}")
    if pred.split != "test":
        raise SubmissionError(f"the predictions are for split {pred.split!r}; submit needs test")
    if len(pred) == 0:
        raise SubmissionError(
            "the test predictions are empty (was the test list found when training? "
            "see `abaw inspect`)"
        )
