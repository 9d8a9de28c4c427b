"""Resume, shards and the manifest of an extracted feature set.

Each run (a shard `I/N`, or the whole set) appends one line per finished output to its own
log in the set's folder (`.extract-log-<I>of<N>.jsonl`, `.extract-log-all.jsonl`), after the
output was renamed into place, with the output's size and mtime. A rerun skips a target whose
output still has the logged size and mtime; an output without a log line (a crash between the
rename and the line) is made again. Every log starts with the run's settings; a run whose
settings differ from any earlier log or manifest of the set (another weights file, image
tree, fps, window, input size, detector, precision) refuses, naming what differs, so
features from two models or two sets of media are never mixed in one set. When every target
of the set has its output, the run writes `extract.json` (all records, settings, versions,
per-target counts, the audio rates met) and removes the logs: whichever shard finishes last,
or a rerun without `--shard`, completes the manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

from abaw.errors import ConfigError
from abaw.extraction import (
    FORMAT_VERSION,
    LOG_PREFIX,
    MANIFEST_NAME,
    ExtractTarget,
    read_extraction,
)
from abaw.io import atomic_open

# Settings that make two runs' features incomparable (compared before a run mixes in).
COMPARED = (
    "media", "method", "backbone", "weights_sha256", "input_size", "mean", "std", "width",
    "images", "fps", "window", "hop", "sample_rate", "n_mels", "drawn_size", "detector",
    "detector_sha256", "face_margin", "reference", "precision",
)  # fmt: skip


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/4' -> (2, 4); None -> None. 1 <= I <= N."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= i <= n:
        raise ConfigError(f"--shard {text}: expected 1 <= I <= N")
    return i, n


def shard_targets(
    targets: list[ExtractTarget], shard: tuple[int, int] | None
) -> list[ExtractTarget]:
    """Shard I of N: every N-th target of the key-sorted list, starting at the I-th.

    Deterministic (the same data give the same split on every machine), disjoint, and
    together complete; interleaving balances long and short videos across shards.
    """
    ordered = sorted(targets, key=lambda t: t.key)
    if shard is None:
        return ordered
    i, n = shard
    return ordered[i - 1 :: n]


def versions() -> dict[str, str]:
    """Versions of the libraries that shape the features."""
    out = {"python": platform.python_version()}
    for mod in ("torch", "torchvision", "timm", "av", "cv2", "PIL", "numpy", "matplotlib",
                "safetensors"):  # fmt: skip
        with contextlib.suppress(Exception):
            out[mod] = str(__import__(mod).__version__)
    return out


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for k in COMPARED:
        if a.get(k) != b.get(k):
            va, vb = a.get(k), b.get(k)
            if k.endswith("sha256"):
                name = "weights" if k == "weights_sha256" else "detector weights"
                fa = a.get("weights_file" if k == "weights_sha256" else "detector_file")
                fb = b.get("weights_file" if k == "weights_sha256" else "detector_file")
                out.append(f"{name} {str(va)[:12]} ({fa}) now {str(vb)[:12]} ({fb})")
            else:
                out.append(f"{k} {va} now {vb}")
    return out


class Records:
    """The logs and manifest of one feature set folder, for one run."""

    def __init__(self, folder: Path, settings: dict[str, Any], header: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.settings = settings
        self.header = header
        self.tag = header.get("shard_tag", "all")
        self.log = self.folder / f"{LOG_PREFIX}{self.tag}.jsonl"
        self._items: dict[str, dict[str, Any]] = {}

    def start(self, *, force: bool) -> None:
        """Check earlier runs' settings (or forget them with `force`), then open this run's log."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if force:
            for p in [self.folder / MANIFEST_NAME, *self.folder.glob(f"{LOG_PREFIX}*.jsonl")]:
                p.unlink(missing_ok=True)
        ex = read_extraction(self.folder)
        if ex is not None:
            for earlier in ([ex.manifest] if ex.manifest else []) + ex.headers:
                diff = _differences(earlier.get("settings", {}), self.settings)
                if diff:
                    raise ConfigError(
                        f"{self.folder}: this feature set was extracted with other settings "
                        f"({'; '.join(diff)}); one set must not mix features of two "
                        "configurations. Use another --name, or --force to extract the set "
                        "again from the start (without --shard)"
                    )
            self._items = dict(ex.items)
        if not self.log.is_file():
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"header": self.header}) + "\n")

    def is_done(self, target: ExtractTarget) -> bool:
        """The target's output exists as logged (size and mtime), so a rerun skips it."""
        rec = self._items.get(target.key)
        if rec is None:
            return False
        if rec.get("output") is None:  # done without a file (no rows): still none there
            return not target.output.exists()
        try:
            st = os.stat(target.output)
        except OSError:
            return False
        return st.st_size == rec.get("bytes") and st.st_mtime_ns == rec.get("mtime_ns")

    def add(self, target: ExtractTarget, counts: dict[str, Any]) -> None:
        """Log a finished output (called after its atomic rename)."""
        st = os.stat(target.output) if target.output.exists() else None
        rec = {
            "key": target.key,
            "output": target.output.name if st else None,
            "bytes": st.st_size if st else None,
            "mtime_ns": st.st_mtime_ns if st else None,
            **counts,
        }
        self._items[target.key] = rec
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()

    def finish(self, all_targets: list[ExtractTarget], runs: list[dict[str, Any]]) -> Path | None:
        """Write extract.json when every target of the set is done; the path, else None."""
        ex = read_extraction(self.folder)
        if ex is not None:
            self._items.update(ex.items)
        for t in all_targets:
            if not self.is_done(t):
                return None
        earlier = (ex.manifest or {}).get("runs", []) if ex is not None else []
        headers = (
            [{k: v for k, v in h.items() if k != "settings"} for h in ex.headers] if ex else []
        )
        manifest = {
            "abaw_extract": FORMAT_VERSION,
            "complete": True,
            "targets": len(all_targets),
            "settings": self.settings,
            **{k: v for k, v in self.header.items() if k not in ("settings", "shard_tag", "shard")},
            "runs": earlier + headers + runs,
            "totals": _totals([self._items[t.key] for t in all_targets]),
            **_rates([self._items[t.key] for t in all_targets]),
            "items": {t.key: self._items[t.key] for t in sorted(all_targets, key=lambda t: t.key)},
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        path = self.folder / MANIFEST_NAME
        with atomic_open(path) as fh:
            json.dump(manifest, fh, indent=1)
            fh.write("\n")
        for log in self.folder.glob(f"{LOG_PREFIX}*.jsonl"):
            log.unlink(missing_ok=True)
        return path


def _totals(records: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("frames_read", "faces", "rows", "length", "gaps")
    return {k: sum(int(r.get(k, 0)) for r in records) for k in keys}


def _rates(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The audio rates and FFT sizes met (DeepSpectrum's FFT follows each file's rate)."""
    keys = ("source_rate", "sample_rate", "n_fft")
    found = {k: sorted({int(r[k]) for r in records if r.get(k) is not None}) for k in keys}
    return {"audio_rates": found} if any(found.values()) else {}


def run_header(settings: dict[str, Any], *, shard: tuple[int, int] | None, targets: int,
               device: str, dtype: str, extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The first line of a run's log: settings plus the facts of this run."""
    return {
        "settings": settings,
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "shard_tag": f"{shard[0]}of{shard[1]}" if shard else "all",
        "targets": targets,
        "device": device,
        "dtype": dtype,
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        **extra,
    }
