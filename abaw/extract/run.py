"""`abaw extract`: from the challenge's media to the feature files the loaders read.

`extract(track, data, name=..., backbone=..., weights=...)` asks the track which targets
exist and where their files go (`Track.extract_plan`), skips the ones already done (resume),
takes its shard, runs the pipeline (abaw/extract/pipeline.py) and has the track write each
output (`Track.write_extracted`) atomically, logging it; the last run to finish writes the
manifest. The CLI calls exactly this (docs/extract.md).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from abaw.console import progress
from abaw.errors import ConfigError
from abaw.extract import manifest as mf
from abaw.extract import pipeline, spectrum
from abaw.extract.backbones import Backbone, load_backbone
from abaw.extract.faces import DetectorConfig, check_detector, detector_sha256
from abaw.extract.spectrum import FastSpectrum
from abaw.extraction import ExtractPlan
from abaw.io import safe_name, umask_mode
from abaw.track import get_track

DEEPSPECTRUM_BACKBONE = "torchvision:densenet121"  # Keras DenseNet121's avg_pool, in torch
AUDIO_METHODS = ("deepspectrum",)


@dataclass
class ExtractResult:
    """What one call did: outputs written and skipped, counts, speed, and the manifest."""

    folder: Path
    manifest: Path | None  # None while other shards are still missing
    written: int
    skipped: int
    remaining: int  # targets of the whole set without an output after this run
    rows: int
    frames_read: int
    faces: int
    gaps: int
    seconds: float
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the user (the CLI prints it; it is also the non-terminal summary)."""
        rate = self.frames_read / self.seconds if self.seconds > 0 else 0.0
        unit = "windows" if self.settings.get("media") == "audio" else "frames"
        head = (
            f"extracted {self.written} file(s) into {self.folder} ({self.rows:,} rows from "
            f"{self.frames_read:,} {unit}, {self.gaps:,} without features) in "
            f"{self.seconds:.1f} s ({rate:,.1f} {unit}/s); {self.skipped} already done"
        )
        tail = (
            f"; manifest {self.manifest}"
            if self.manifest
            else f"; {self.remaining} target(s) left for other shards (the last completes the manifest)"
        )
        return head + tail


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"--device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    return dev


def _backbone(plan: ExtractPlan, arch: str | None, weights, size, mean, std) -> Backbone:
    arch = arch or (DEEPSPECTRUM_BACKBONE if plan.media == "audio" else None)
    if not arch:
        raise ConfigError("--backbone is required (e.g. torchvision:resnet50, timm:NAME, "
                          "inception_resnet_v1, file:PATH)")  # fmt: skip
    if weights is None and not arch.startswith("file:"):
        raise ConfigError(
            f"--weights FILE is required for {arch} (a local file: nothing is downloaded; "
            "docs/extract.md says where each backbone's weights are published)"
        )
    mean3 = tuple(float(x) for x in mean) if mean else None
    std3 = tuple(float(x) for x in std) if std else None
    return load_backbone(arch, weights, input_size=size, mean=mean3, std=std3)  # type: ignore[arg-type]


# DeepSpectrum's fixed preprocessing (abaw/extract/spectrum.py), recorded so a manifest says
# everything that shaped the features; each sample's rates and FFT size are in its item.
_DEEPSPECTRUM = {
    "n_mels": spectrum.N_MELS,
    "drawn_size": spectrum.IMAGE_SIZE,
    "n_fft_rule": "next power of two of 0.025 * sample_rate (each item's n_fft)",
    "stft": "periodic Hann, hop n_fft // 2, center=False; power; Slaney mel 0 .. sr/2",
    "db": "power_to_db(ref=max, top_db=None)",
    "colormap": "viridis",
}


def _settings(plan, bb, det, det_path, reference, sample_rate, precision) -> dict[str, Any]:
    s = plan.sampling
    video = plan.media == "video"
    return {
        "media": plan.media,
        "method": "deepspectrum" + ("-reference" if reference else "")
        if plan.media == "audio"
        else None,
        "backbone": bb.arch,
        "weights_file": bb.weights.name if bb.weights else None,
        "weights_sha256": bb.sha256,
        "feature": bb.feature,
        "width": bb.width,
        "input_size": bb.input_size,
        "mean": list(bb.mean),
        "std": list(bb.std),
        "fps": s.get("fps") if video else None,
        "window": s.get("window") if plan.media == "audio" else None,
        "hop": s.get("hop") if plan.media == "audio" else None,
        "sample_rate": sample_rate if plan.media == "audio" else None,  # None: each file's own
        **(_DEEPSPECTRUM if plan.media == "audio" else {}),
        "images": plan.sources.get("images") if plan.media == "frames" else None,
        "detector": det.name if video else None,
        "detector_file": det_path.name if video and det_path else None,
        "detector_sha256": detector_sha256(det) if video and det_path else None,  # mtcnn: 3 files
        "face_margin": det.crop_margin() if video else None,
        "faces": video,
        "reference": bool(reference) if plan.media == "audio" else None,
        "precision": precision,
        "defaults_from": plan.sources,
        "ignored_weight_keys": bb.ignored[:20],
    }


def _precision(device: torch.device, precision: str) -> str:
    if precision not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"--precision must be auto, float32 or bfloat16, got {precision!r}")
    if precision == "bfloat16" and device.type != "cuda":
        raise ConfigError("--precision bfloat16 (autocast) is for CUDA devices; use float32 on CPU")
    if precision == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return precision


class _Writer:
    """Writes finished targets on a background thread (file writes overlap the model)."""

    def __init__(self, track, records: mf.Records) -> None:
        self.track, self.records = track, records
        self.pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="abaw-extract-writer")
        self.futures: list[cf.Future] = []
        self.totals = {"written": 0, "rows": 0, "frames_read": 0, "faces": 0, "gaps": 0}

    def submit(self, fin: pipeline.Finished) -> None:
        self.futures.append(self.pool.submit(self._write, fin))
        self.drain(wait=False)

    def _write(self, fin: pipeline.Finished) -> None:
        t0 = time.perf_counter()
        length = write_atomic(self.track, fin)
        rows = len(fin.rows.index)
        gaps = length - rows if fin.target.length is not None else fin.stats["frames_read"] - rows
        counts = {**fin.stats, "rows": rows, "length": length, "gaps": int(gaps),
                  "seconds": round(time.perf_counter() - t0, 4)}  # fmt: skip
        self.records.add(fin.target, counts)
        for k in ("rows", "frames_read", "faces", "gaps"):
            self.totals[k] += int(counts[k])
        self.totals["written"] += 1

    def drain(self, *, wait: bool) -> None:
        keep = []
        for f in self.futures:
            if wait or f.done():
                f.result()  # raises the writer's error here, in the main thread
            else:
                keep.append(f)
        self.futures = keep

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def write_atomic(track, fin: pipeline.Finished) -> int:
    """Have the track write one output into a temporary file, then rename it into place.

    The track returns the rows in the file, or None for "no file" (an ERI sample without a
    face has no visual file, as in the organisers' data): then any old output is removed.
    Nothing half-written is ever left under the output's name.
    """
    out = fin.target.output
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        length = track.write_extracted(fin.target, fin.rows, tmp)
        if length is None:
            tmp.unlink()
            out.unlink(missing_ok=True)
            return 0
        umask_mode(tmp)
        os.replace(tmp, out)
        return int(length)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_options(track, options: dict[str, Any]) -> dict[str, Any]:
    given = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(set(given) - set(track.extract_options))
    if foreign:
        raise ConfigError(
            f"{', '.join('--' + k.replace('_', '-') for k in foreign)} do(es) not apply to the "
            f"{track.name} track (it takes: "
            f"{', '.join('--' + k for k in track.extract_options) or 'nothing more'})"
        )
    return given


def extract(
    track: str,
    data: str | os.PathLike[str],
    *,
    name: str,
    backbone: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
    workers: int | None = None,
    shard: str | None = None,
    force: bool = False,
    detector: str = "haar",
    detector_weights: str | os.PathLike[str] | None = None,
    face_margin: float | None = None,
    reference: bool = False,
    sample_rate: int | None = None,
    show_progress: bool | None = None,
    **options: Any,
) -> ExtractResult:
    """Extract one feature set `name` of `data` (Python API of `abaw extract`).

    `options` are the track's `extract_options` (Expr: images; ERI: videos, audio, fps,
    window, hop). Returns what was done; raises AbawError subclasses with one sentence.
    """
    t0 = time.perf_counter()
    tr = get_track(track)
    safe_name(name, what="--name")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    plan = tr.extract_plan(Path(data), name=name, **_check_options(tr, options))
    if reference and plan.media != "audio":
        raise ConfigError("--reference applies to --audio deepspectrum only")
    if plan.media != "video" and (detector != "haar" or detector_weights or face_margin):
        raise ConfigError(  # silently ignored, a user would believe the faces were re-detected
            "--detector, --detector-weights and --face-margin apply to ERI videos (faces are "
            f"detected there); this run reads {plan.media}: leave them out"
        )
    bb = _backbone(plan, backbone, weights, input_size, mean, std)
    dev = resolve_device(device)
    det = DetectorConfig(
        detector, str(detector_weights) if detector_weights else None, face_margin, str(dev)
    )  # a torch detector (mtcnn) runs where the backbone does when workers=0
    det_path = check_detector(det) if plan.media == "video" else None
    prec = _precision(dev, precision)
    settings = _settings(plan, bb, det, det_path, reference, sample_rate, prec)
    parsed = mf.parse_shard(shard)
    if force and parsed is not None:
        raise ConfigError("--force starts the whole set over; run it without --shard")
    mine = mf.shard_targets(plan.targets, parsed)
    header = mf.run_header(
        settings, shard=parsed, targets=len(plan.targets), device=str(dev), dtype=prec,
        extra={"track": tr.name, "name": name, "data": str(Path(data))},
    )  # fmt: skip
    records = mf.Records(plan.folder, settings, header)
    records.start(force=force)
    todo = [t for t in mine if not records.is_done(t)]
    totals = _run(
        tr, plan, bb, det, dev, prec, records, todo, settings, batch_size, workers, show_progress
    )
    seconds = time.perf_counter() - t0
    path = records.finish(plan.targets, [{"shard": header["shard"], "device": str(dev),
                                          "dtype": prec, "seconds": round(seconds, 2)}])  # fmt: skip
    remaining = sum(1 for t in plan.targets if not records.is_done(t))
    return ExtractResult(
        plan.folder, path, totals["written"], len(mine) - len(todo), remaining, totals["rows"],
        totals["frames_read"], totals["faces"], totals["gaps"], seconds, settings, plan.notes,
    )  # fmt: skip


def _run(tr, plan, bb, det, dev, prec, records, todo, settings, batch_size, workers, show) -> dict:
    """The pipeline over `todo` with the progress bar and the writer thread; returns totals."""
    job = pipeline.Job(
        plan.media, todo, bb.input_size, batch_size,
        fps=settings["fps"], window=settings["window"], hop=settings["hop"],
        sample_rate=settings["sample_rate"], reference=bool(settings["reference"]),
        detector=det if plan.media == "video" else None,
    )  # fmt: skip
    spectra = FastSpectrum(dev, bb.input_size) if plan.media == "audio" else None
    conv_cuda = dev.type == "cuda" and not bb.arch.startswith("file:")  # programs keep their layout
    model = pipeline.Model(bb, dev, prec == "bfloat16", spectra, channels_last=conv_cuda)
    n_workers = max(0, min(8, (os.cpu_count() or 2) - 1)) if workers is None else int(workers)
    writer = _Writer(tr, records)
    by_rows = plan.media == "frames"
    unit = {"frames": "frames", "video": "faces", "audio": "windows"}[plan.media]
    total = sum(t.length or 0 for t in todo) if by_rows else len(todo)
    t0 = time.perf_counter()
    done_rows = 0
    with progress(disable=None if show is None else not show) as bar:
        task = bar.add_task(f"extract {plan.folder.name}", total=total or None)

        def rows(n: int) -> None:
            nonlocal done_rows
            done_rows += n
            rate = done_rows / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, advance=n if by_rows else 0, info=f"{rate:,.1f} {unit}/s")

        def finished(fin: pipeline.Finished) -> None:
            writer.submit(fin)  # frames without an image count as done when their video is
            missing = (fin.target.length or 0) - len(fin.rows.index)
            bar.update(task, advance=max(missing, 0) if by_rows else 1)

        try:
            pipeline.run(job, model, workers=n_workers, on_done=finished, on_rows=rows)
            writer.drain(wait=True)
        finally:
            writer.close()
    return writer.totals
