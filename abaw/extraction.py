"""What `abaw extract` writes and reads back, shared by the stage and the wings.

The stage (abaw/extract/) turns media into feature files; each track (its wing) says which
files exist and how one is written (`Track.extract_plan`, `Track.write_extracted`), using the
small types below. The record of an extracted set lives in the set's own folder, so it travels
with the files when the folder is copied:

- `extract.json`: the manifest, written when every target of the set is done;
- `.extract-log-<shard>.jsonl`: one line per finished output, appended by the process that
  wrote it (a header line first); the manifest is built from these logs.

`read_extraction` reads either and `coverage_section` turns every extracted set under a
features folder into one table for `abaw inspect`. Plain JSON throughout (no pickle).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abaw.findings import Section

MANIFEST_NAME = "extract.json"
LOG_PREFIX = ".extract-log-"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExtractTarget:
    """One output of `abaw extract`: the media of one video or sample -> one feature file.

    `source` is a folder of numbered frame images (`00001.jpg`, ...) or a media file (video
    with audio, or audio only). `length` fixes the rows of the output (frames 1..length, as
    the annotation or test list needs); None keeps what is decoded.
    """

    key: str  # the video name (Expr) or sample ID (ERI) the file belongs to
    source: Path
    output: Path
    length: int | None = None


@dataclass
class ExtractPlan:
    """What a track asks the stage to extract: targets, where they go, how to sample media."""

    targets: list[ExtractTarget]
    folder: Path  # the feature set's folder (the manifest goes here)
    media: str  # "frames" (image folders) | "video" (faces from video frames) | "audio"
    sampling: dict[str, float | None] = field(default_factory=dict)  # fps / window / hop
    sources: dict[str, str] = field(default_factory=dict)  # where each default comes from
    notes: list[str] = field(default_factory=list)


@dataclass
class ExtractedRows:
    """The features of one target as computed, before the track writes them."""

    index: np.ndarray  # int64 per row: frame number (frames), frame or window index (video, audio)
    times: np.ndarray  # float64 seconds from the start of the media
    values: np.ndarray  # float32 (rows, width)
    index_name: str = "frame"  # what `index` counts: "frame" | "segment"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a log, skipping a last line cut short by a crash."""
    out = []
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as fh:
        for line in fh:
            with contextlib.suppress(json.JSONDecodeError):
                rec = json.loads(line)
                if isinstance(rec, dict):
                    out.append(rec)
    return out


@dataclass
class Extraction:
    """An extracted set as recorded: the manifest if complete, else what the logs hold."""

    folder: Path
    manifest: dict[str, Any] | None
    headers: list[dict[str, Any]]  # one per log (a shard or an unsharded run)
    items: dict[str, dict[str, Any]]  # key -> the record of its output

    @property
    def info(self) -> dict[str, Any]:
        """The settings and run facts: the manifest's, else the newest log header's."""
        if self.manifest is not None:
            return self.manifest
        return self.headers[-1] if self.headers else {}

    @property
    def complete(self) -> bool:
        return bool(self.manifest and self.manifest.get("complete"))


def read_extraction(folder: str | Path) -> Extraction | None:
    """The record of the extracted set in `folder`, or None when nothing was extracted there."""
    folder = Path(folder)
    manifest = None
    path = folder / MANIFEST_NAME
    if path.is_file():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or "settings" not in manifest:
            manifest = None
    headers, items = [], {}
    if manifest is not None:
        items.update(manifest.get("items", {}))
    for log in sorted(folder.glob(f"{LOG_PREFIX}*.jsonl")):
        recs = read_jsonl(log)
        if recs and "header" in recs[0]:
            headers.append(recs[0]["header"])
            items.update({r["key"]: r for r in recs[1:] if "key" in r})
    if manifest is None and not headers:
        return None
    return Extraction(folder, manifest, headers, items)


def _describe(info: dict[str, Any]) -> str:
    s = info.get("settings", {})
    what = s.get("method") or s.get("backbone", "?")
    if s.get("media") == "video":
        what += f" @ {s.get('fps')} fps"
    return what


def coverage_sections(feature_root: str | Path) -> list[Section]:
    """`abaw inspect`'s table of the sets extracted under `feature_root` ([] when none)."""
    section = coverage_section(feature_root)
    return [section] if section is not None else []


def coverage_section(feature_root: str | Path) -> Section | None:
    """One row per extracted set under `feature_root` (None when none was extracted there)."""
    root = Path(feature_root)
    if not root.is_dir():
        return None
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ex = read_extraction(folder)
        if ex is None:
            continue
        info = ex.info
        targets = int(info.get("targets", len(ex.items)))
        recs = list(ex.items.values())
        read = sum(int(r.get("frames_read", 0)) for r in recs)
        faces = sum(int(r.get("faces", 0)) for r in recs)
        state = "complete" if ex.complete else f"in progress ({len(ex.headers)} log(s))"
        rows.append(
            [
                folder.name,
                _describe(info),
                f"{len(recs)} / {targets}",
                sum(int(r.get("rows", 0)) for r in recs),
                read,
                f"{100.0 * faces / read:.1f}"
                if read and info.get("settings", {}).get("faces")
                else "-",
                sum(int(r.get("gaps", 0)) for r in recs),
                state,
            ]
        )
    if not rows:
        return None
    return Section(
        "Extracted feature sets (abaw extract): outputs done of all, rows written, frames or "
        "windows read, % with a face, rows missing (gaps)",
        ["set", "method", "done", "rows", "read", "face %", "gaps", "state"],
        rows,
    )
