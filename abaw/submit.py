"""`abaw submit` and `abaw validate`: from test predictions to a file the challenge server accepts.

`submit` writes the track's file(s) into a temporary folder, validates them with exactly the
code `abaw validate` runs, and only then renames them into place, zips them for upload and
copies the ensemble manifest beside the zip. `validate` checks any submission (ours, a
teammate's script, a zip) against every rule of ../shared/docs/formats.md and the user's own
test IDs / frame list, and returns every problem with its row number.

Encoding decision (formats.md: "UTF-8, `\\n` line ends"): a UTF-8 byte-order mark and Windows
(`\\r\\n`) line ends are rejected, each reported once with the first row and a fix; the rest of
the file is still checked. One final newline is optional; blank lines at the end are rejected.
The track-specific writers and checkers are in abaw/eri/submission.py and
abaw/expr/submission.py, reached through the Track object (`write_submission`,
`validate_submission`).
"""

from __future__ import annotations

import argparse
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
from abaw.predictions import Predictions

FORMATS = ("single", "per-video")
ID_STYLES = ("as-data", "bracketed", "bare")
SHOWN = 20  # problems printed before "and N more"
KEPT = 1000  # problems of one kind materialised before one aggregate entry
BOM = b"\xef\xbb\xbf"


@dataclass
class Problem:
    """One reason the server would reject a submission.

    row is the 1-based line number in `file` (the header is line 1), None when the problem
    concerns the whole file (missing rows, wrong zip layout). `count` > 1 stands for that many
    occurrences summarised in one entry.
    """

    row: int | None
    message: str
    file: str | None = None
    count: int = 1

    def __str__(self) -> str:
        where = self.file or ""
        if self.row is not None:
            where += f"{', ' if where else ''}row {self.row}"
        return f"{where}: {self.message}" if where else self.message


def header_layout_problem(
    head: list[str], want: list[str], file: str | None
) -> tuple[Problem | None, bool]:
    """The two header mistakes both tracks share: an index column first, columns reordered.

    Returns (problem or None, whether the first column is an index to drop from every row).
    Other header problems (missing, wrong) depend on the track's rows and stay with it.
    """
    if head[1:] == want:
        msg = (
            f"an index column comes first ({head[0]!r}); write without it "
            "(pandas: to_csv(index=False))"
        )
        return Problem(1, msg, file), True
    if sorted(head) == sorted(want):
        found = ",".join(head)
        return Problem(
            1, f"columns out of order: expected {','.join(want)!r}, found {found!r}", file
        ), False
    return None, False


def add_rows(problems: list[Problem], rows, message, file: str | None) -> None:
    """One Problem per row (the first KEPT), then one entry counting the rest.

    `message` is a string or a function of the row index into `rows`.
    """
    rows = list(rows)
    for i, r in enumerate(rows[:KEPT]):
        text = message(i) if callable(message) else message
        problems.append(Problem(int(r), text, file))
    if len(rows) > KEPT:
        text = message(KEPT) if callable(message) else message
        problems.append(
            Problem(None, f"{len(rows) - KEPT} more rows: {text}", file, len(rows) - KEPT)
        )


def total(problems: list[Problem]) -> int:
    """How many problems the list stands for (aggregate entries count several)."""
    return sum(p.count for p in problems)


def text_lines(raw: bytes, file: str) -> tuple[list[str], list[Problem]]:
    """Decode a submission's bytes into lines, reporting encoding and line-end problems.

    The BOM is stripped, `\\r\\n` is read as `\\n` and undecodable bytes are replaced, each
    after one Problem saying how to fix it, so the content can still be checked.
    """
    probs: list[Problem] = []
    if not raw.strip():
        probs.append(
            Problem(None, "empty file (expected a header and one row per test item)", file)
        )
        return [], probs
    if raw.startswith(BOM):
        probs.append(
            Problem(
                1,
                "starts with a UTF-8 byte-order mark (BOM); save as plain UTF-8 without BOM "
                "(Python: encoding='utf-8', not 'utf-8-sig'; or `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`)",
                file,
            )
        )
        raw = raw[len(BOM) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        probs.append(
            Problem(
                line,
                f"not UTF-8 (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8",
                file,
            )
        )
        text = raw.decode("utf-8", errors="replace")
    if "\r" in text:
        n = text.count("\r")
        first = text.count("\n", 0, text.index("\r")) + 1
        probs.append(
            Problem(
                first,
                f"Windows line ends (\\r\\n) on {n} line(s); the server expects \\n: convert "
                "with `dos2unix FILE` or `sed -i 's/\\r$//' FILE`",
                file,
            )
        )
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # one final newline is normal
    blank = 0
    while lines and not lines[-1].strip():
        lines.pop()
        blank += 1
    if blank:
        probs.append(
            Problem(
                len(lines) + 1,
                f"{blank} blank line(s) at the end of the file; delete them",
                file,
            )
        )
    return lines, probs


def read_submission(path: str | os.PathLike[str]) -> tuple[dict[str, bytes], list[Problem], str]:
    """The files of a submission as {name: bytes}: one file, a folder's files, or a zip's entries.

    Returns (files, problems, kind) with kind "file", "folder" or "zip". Nested folders and
    names with path separators or `..` are problems (and their entries are skipped).
    """
    p = Path(path)
    probs: list[Problem] = []
    files: dict[str, bytes] = {}
    if not p.exists():
        raise AbawError(f"{p}: no such file or folder")
    if p.is_dir():
        for q in sorted(p.iterdir()):
            if q.name.startswith("."):
                continue
            if q.is_dir():
                probs.append(
                    Problem(
                        None, f"nested folder {q.name}/; put the files at the top level", str(p)
                    )
                )
                continue
            files[q.name] = q.read_bytes()
        if not files:
            probs.append(Problem(None, "empty folder", str(p)))
        return files, probs, "folder"
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                for info in z.infolist():
                    n = info.filename
                    if info.is_dir():
                        probs.append(
                            Problem(
                                None,
                                f"the zip holds a folder {n!r}; zip the files themselves "
                                "(top level, no folder)",
                                str(p),
                            )
                        )
                        continue
                    if "/" in n or "\\" in n or n in ("..", "."):
                        probs.append(
                            Problem(
                                None,
                                f"zip entry {n!r} is inside a folder or has a path separator; "
                                "the files must be at the top level of the zip",
                                str(p),
                            )
                        )
                        continue
                    files[n] = z.read(info)
        except (zipfile.BadZipFile, OSError) as e:
            raise AbawError(f"{p}: not a readable zip ({e})") from None
        if not files and not probs:
            probs.append(Problem(None, "empty zip", str(p)))
        return files, probs, "zip"
    return {p.name: p.read_bytes()}, probs, "file"


def validate(
    track: str,
    path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    frames: str | os.PathLike[str] | None = None,
) -> list[Problem]:
    """Every problem of the submission at `path` (empty list = accepted).

    Args:
        track: "eri" or "expr".
        path: a CSV / TXT file, a folder of per-video files, or a zip of either.
        data: the data set root (its test IDs / test frame list are the expected rows).
        frames: Expr: the organisers' test frame list, if not found in `data`.
    """
    from abaw.track import get_track

    problems = get_track(track).validate_submission(Path(path), Path(data), frames=frames)
    return sorted_problems(problems)


def sorted_problems(problems: list[Problem]) -> list[Problem]:
    """Whole-file problems first, then by file and row; summaries of many rows last."""

    def key(p: Problem):
        return (p.count > 1, p.row is not None, p.file or "", p.row or 0)

    return sorted(problems, key=key)


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
    fmt: str = "single",
    id_style: str = "as-data",
    force: bool = False,
    frames: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> SubmitResult:
    """Write, validate, then publish a submission; refuse to replace one without `force`.

    Args:
        predictions_or_ensemble: test `Predictions`, a `.npz` file of them, or the name of an
            ensemble under `<runs>/ensembles/`.
        fmt: Expr: "single" (ABAW5/6 file in frame-list order) or "per-video" (ABAW3/4).
        id_style: ERI: "as-data" (IDs spelled as in the data), "bracketed" or "bare".
    """
    from abaw.io import atomic_open, atomic_path, safe_name
    from abaw.track import get_track

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if id_style not in ID_STYLES:
        raise ConfigError(f"--id-style must be one of {ID_STYLES}, got {id_style!r}")
    manifest: dict[str, Any]
    src = predictions_or_ensemble
    if isinstance(src, Predictions):
        pred, manifest = src, {"source": "predictions", "meta": src.meta}
        name = name or "predictions"
    elif str(src).endswith(".npz") or Path(src).is_file():
        pred = Predictions.load(src)
        manifest = {"source": str(Path(src).resolve()), "meta": pred.meta}
        stem = Path(src).stem
        name = name or (Path(src).resolve().parent.name if stem.startswith("predictions") else stem)
    else:
        from abaw.ensemble import load_ensemble

        manifest, _, pred = load_ensemble(str(src), runs)
        name = name or str(src)
    try:
        safe_name(name, what="submission name")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if pred.track != track:
        raise SubmissionError(f"the predictions are for track {pred.track!r}, not {track!r}")
    if pred.split != "test":
        raise SubmissionError(f"the predictions are for split {pred.split!r}; submit needs test")
    if len(pred) == 0:
        raise SubmissionError(
            "the test predictions are empty (was the test list found when training? "
            "see `abaw inspect`)"
        )
    out = Path(out)
    folder, zpath, mpath = out / name, out / f"{name}.zip", out / f"{name}.manifest.json"
    existing = [p for p in (folder, zpath, mpath) if p.exists()]
    if existing and not force:
        raise AbawError(
            f"{existing[0]} exists; choose another --name or pass --force to replace it"
        )
    tr = get_track(track)
    out.mkdir(parents=True, exist_ok=True)
    from abaw.io import atomic_dir

    with atomic_dir(folder) as tmp:
        files, rows, notes = tr.write_submission(
            pred, Path(data), tmp, fmt=fmt, id_style=id_style, frames=frames
        )
        target = tmp if fmt == "per-video" and track == "expr" else files[0]
        problems = tr.validate_submission(target, Path(data), frames=frames)
        if problems:
            shown = "; ".join(str(p) for p in problems[:5])
            raise SubmissionError(
                f"the written submission fails validation ({total(problems)} problems: {shown})"
            )
    final = [folder / f.name for f in files]
    with atomic_path(zpath) as zt, zipfile.ZipFile(zt, "w", zipfile.ZIP_DEFLATED) as z:
        for f in final:
            z.write(f, arcname=f.name)
    manifest = dict(manifest)
    manifest["submission"] = {
        "track": track,
        "format": fmt if track == "expr" else "csv",
        "id_style": id_style if track == "eri" else None,
        "rows": rows,
        "files": {f.name: _sha256(f) for f in final},
        "zip": zpath.name,
        "data": str(Path(data).resolve()),
        "abaw_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "notes": notes,
    }
    with atomic_open(mpath) as fh:
        json.dump(manifest, fh, indent=2)
    return SubmitResult(folder, final, zpath, mpath, rows, notes)


def print_problems(problems: list[Problem], path: str, limit: int = SHOWN) -> None:
    """The first `limit` problems, then how many more."""
    from abaw.console import err_console

    n = total(problems)
    err_console.print(
        f"{path}: {n} problem(s); the server would reject it", markup=False, soft_wrap=True
    )
    shown = 0
    for p in problems:
        if shown >= limit:
            break
        err_console.print(f"  {p}", markup=False, soft_wrap=True)
        shown += p.count
    if n > shown:
        err_console.print(f"  ... and {n - shown} more problem(s)", markup=False, soft_wrap=True)


def main(args: argparse.Namespace) -> int:
    """`abaw submit`."""
    from abaw.console import console

    src = args.ensemble if args.ensemble else args.predictions
    if args.predictions and not Path(args.predictions).is_file():
        raise AbawError(f"{args.predictions}: predictions file not found")
    res = submit(
        args.track,
        src,
        args.data,
        runs=args.runs,
        out=args.out,
        fmt=args.format,
        id_style=args.id_style,
        force=args.force,
        frames=args.frames,
        name=args.name,
    )
    for note in res.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    what = (
        f"{len(res.files)} per-video files in {res.folder}/"
        if len(res.files) > 1
        else str(res.files[0])
    )
    console.print(f"validated: {res.rows} rows, 0 problems", markup=False, soft_wrap=True)
    console.print(f"submission: {what}", markup=False, soft_wrap=True)
    console.print(f"upload:     {res.zip}", markup=False, soft_wrap=True)
    console.print(f"manifest:   {res.manifest}", markup=False, soft_wrap=True)
    return 0


def validate_main(args: argparse.Namespace) -> int:
    """`abaw validate`: exit 0 with one OK line, or 1 with every problem (first 20, then a count)."""
    from abaw.console import console

    problems = validate(args.track, args.path, args.data, frames=args.frames)
    if problems:
        print_problems(problems, args.path)
        return 1
    console.print(f"OK: {args.path} passes every {args.track} check", markup=False, soft_wrap=True)
    return 0
