"""What `abaw extract --track eri` extracts, and how an output is written (the ERI side).

Targets: every sample of the tables (train, devel and test), read from `<videos>/<id>.<ext>`
(found anywhere under `--videos`, by the ID without brackets). Output: one CSV per sample in
the data root's own features folder (`feats/` in the MuSe-2022 layout, the ABAW5 features
folder; created as `feats/` or `features/` when there is none yet), as the organisers'
features are: a header, then per time step the timestamp in seconds, the frame or window
index, and the values. Frames without a face have no row; a sample without any row gets no
file, which is how the loader sees a missing modality.

Defaults and their sources (docs/extract.md): DeepSpectrum windows of 1 s every 0.5 s and the
visual rate of 4 frames per second. No published source states the organisers' settings for
Hume-Reaction (the MuSe 2022 baseline paper, arXiv 2207.05691, could not be read here); the
window and hop match the organisers' DeepSpectrum files (about 2 rows per second of audio),
and the rate is what their visual files' lengths suggest (twice the audio rows). Override
with --window, --hop and --fps.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from abaw.eri.csvio import file_stem, find_feature_root
from abaw.eri.tables import detect_layout, find_eri_root, read_tables
from abaw.errors import ConfigError, DataError
from abaw.extraction import ExtractedRows, ExtractPlan, ExtractTarget

DEFAULT_FPS = 4.0
DEFAULT_WINDOW = 1.0
DEFAULT_HOP = 0.5
VIDEO_EXT = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
AUDIO_EXT = (".wav", ".flac", ".m4a", ".mp3", ".aac", ".ogg", ".opus")
_SOURCES = {
    "fps": "abaw default (no published source; see docs/extract.md)",
    "window": "abaw default, DeepSpectrum -t 1 0.5 (no published source; see docs/extract.md)",
    "hop": "abaw default, DeepSpectrum -t 1 0.5 (no published source; see docs/extract.md)",
}


def _media_index(folder: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    """Stem -> file for every media file under `folder`; preferred extensions first."""
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if p.suffix.lower() in exts and not f.startswith("."):
                found.setdefault(p.stem, []).append(p)
    out = {}
    for stem, paths in found.items():
        paths.sort(key=lambda p: exts.index(p.suffix.lower()))
        best = [p for p in paths if p.suffix.lower() == paths[0].suffix.lower()]
        if len(best) > 1:
            raise DataError(
                best[1],
                "two media files for one sample",
                expected=f"one {best[0].suffix} file named {stem}",
                found=", ".join(str(p) for p in best),
            )
        out[stem] = paths[0]
    return out


def _feature_folder(root: Path, layout: str) -> Path:
    try:
        return find_feature_root(root, layout)
    except DataError:
        return root / ("feats" if layout == "muse" else "features")


def extract_plan(
    root: Path,
    *,
    name: str,
    videos: str | Path | None = None,
    audio: str | None = None,
    fps: float | None = None,
    window: float | None = None,
    hop: float | None = None,
) -> ExtractPlan:
    """Every sample of the tables with its media file, the output folder and the sampling."""
    if not videos:
        raise ConfigError(
            "--videos DIR is required for the eri track (the folder of <id>.mp4 files)"
        )
    if audio not in (None, "deepspectrum"):
        raise ConfigError(f"--audio must be deepspectrum, got {audio!r}")
    if audio is None and (window is not None or hop is not None):
        raise ConfigError("--window / --hop apply to --audio deepspectrum only")
    if audio is not None and fps is not None:
        raise ConfigError("--fps applies to visual extraction only (not with --audio)")
    for flag, v in (("--fps", fps), ("--window", window), ("--hop", hop)):
        if v is not None and not v > 0:
            raise ConfigError(f"{flag} must be positive, got {v}")
    found, note = find_eri_root(Path(root))
    layout = detect_layout(found)
    ids, _, _, _ = read_tables(found, layout)
    vdir = Path(videos)
    if not vdir.is_dir():
        raise DataError(
            vdir,
            "video folder not found",
            expected="a folder of <id>.mp4 files (--videos DIR)",
            found="a file" if vdir.exists() else "nothing",
        )
    exts = AUDIO_EXT + VIDEO_EXT if audio else VIDEO_EXT
    index = _media_index(vdir, exts)
    stems = sorted({file_stem(str(i)) for i in ids})
    missing = [s for s in stems if s not in index]
    if missing:
        raise DataError(
            vdir,
            "media missing for samples of the tables",
            expected=f"one file per sample ({', '.join(exts[:3])}, ...) named by its ID",
            found=f"{len(missing)} sample(s) without one: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else ""),
        )
    out = _feature_folder(found, layout) / name
    targets = [ExtractTarget(s, index[s], out / f"{s}.csv") for s in stems]
    if audio:
        sampling = {"window": window or DEFAULT_WINDOW, "hop": hop or DEFAULT_HOP}
        media = "audio"
    else:
        sampling, media = {"fps": fps or DEFAULT_FPS}, "video"
    given = {"fps": fps, "window": window, "hop": hop}
    sources = {k: ("given" if given[k] is not None else _SOURCES[k]) for k in sampling}
    return ExtractPlan(targets, out, media, sampling, sources, [note] if note else [])


def write_extracted(target: ExtractTarget, rows: ExtractedRows, path: Path) -> int | None:
    """The sample's CSV (timestamp, index, values); None (no file) when it has no rows."""
    n = len(rows.index)
    if n == 0:
        return None
    width = rows.values.shape[1]
    header = ",".join(["timestamp", rows.index_name, *(f"f{j}" for j in range(width))])
    table = np.column_stack([rows.times, rows.index, rows.values.astype(np.float64)])
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(header + "\n")
        np.savetxt(fh, table, fmt=["%.3f", "%d"] + ["%.8g"] * width, delimiter=",")
    return n
