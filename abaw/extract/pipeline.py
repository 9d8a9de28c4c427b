"""The batched, prefetching extraction pipeline: media in worker processes, the model on the device.

Worker processes (a torch DataLoader over an IterableDataset) decode frames, detect and crop
faces, resize, cut audio windows or render reference spectrograms, and hand the main process
ready batches; each worker owns whole targets (a video's frames stay in order in one worker),
so a target's rows arrive in order and a `done` record follows its last row. The main process
runs the backbone on each batch (bf16 autocast and channels-last on CUDA) while the workers
prepare the next ones, and a writer thread writes finished targets, so decoding, resizing and
writing hide behind the model. Errors in a worker come back as data and are raised in the main
process as the same DataError (one sentence naming the file).

Workers set no thread counts of their own: torch's worker loop already runs each on one
intra-op thread, and OpenCV runs a forked child's loops on the calling thread (measured:
no thread starts in a worker). Calling `cv2.setNumThreads` in a forked worker is not only
redundant but fatal once the parent has used OpenCV's pool (a face detected in-process, as
an ERI run with workers=0 does): it tears down the parent's copied pool, whose threads do not
exist in the child, and hangs in pthread_cond_destroy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from abaw.errors import DataError
from abaw.extract import media, spectrum
from abaw.extract.backbones import Backbone
from abaw.extract.faces import DetectorConfig, build_detector, crop_face
from abaw.extraction import ExtractedRows, ExtractTarget


@dataclass
class Job:
    """What the workers need (picklable): targets and how to read them."""

    media: str  # "frames" | "video" | "audio"
    targets: list[ExtractTarget]
    input_size: int
    batch_size: int
    fps: float | None = None
    window: float | None = None
    hop: float | None = None
    sample_rate: int | None = None
    detector: DetectorConfig | None = None
    reference: bool = False


@dataclass
class Finished:
    """One target's rows and its counts, as the main process hands them to the writer."""

    target: ExtractTarget
    rows: ExtractedRows
    stats: dict[str, int]


# ---------------------------------------------------------------- worker side


def _read_frames(job: Job, t: ExtractTarget, stats: dict[str, int]) -> Iterator[tuple]:
    if not t.source.is_dir():
        raise DataError(
            t.source,
            "frame folder not found",
            expected=f"the cropped-aligned frames of video {t.key} (00001.jpg, ...)",
            found="a file" if t.source.exists() else "no such folder",
            hint="Point --images at the folder holding one subfolder per video",
        )
    files = media.frame_files(t.source)
    if not files:
        raise DataError(
            t.source, "no frame images", expected="00001.jpg, 00002.jpg, ...", found="none"
        )
    last = t.length if t.length is not None else max(files)
    for k in sorted(f for f in files if f <= last):
        img = media.resize_square(media.read_image(files[k]), job.input_size)
        stats["frames_read"] += 1
        stats["faces"] += 1
        yield k, 0.0, img.transpose(2, 0, 1)


def _read_video(job: Job, t: ExtractTarget, stats: dict[str, int], detect) -> Iterator[tuple]:
    margin = job.detector.crop_margin() if job.detector else 1.0
    for i, when, rgb in media.video_frames(t.source, job.fps):
        stats["frames_read"] += 1
        face = detect(rgb)
        if face is None:
            continue
        stats["faces"] += 1
        yield i, when, crop_face(rgb, face, job.input_size, margin).transpose(2, 0, 1)


def _read_audio(job: Job, t: ExtractTarget, stats: dict[str, int]) -> Iterator[tuple]:
    info: dict[str, int] = {}
    windows = media.audio_windows(t.source, job.window, job.hop, job.sample_rate, info)
    for n, when, chunk, sr in windows:
        if "n_fft" not in stats:  # for the manifest: DeepSpectrum's FFT follows the file's rate
            stats.update(source_rate=info["source_rate"], sample_rate=sr)
            stats["n_fft"] = spectrum.nfft_for(sr)
        stats["frames_read"] += 1
        if len(chunk) < spectrum.nfft_for(sr):
            continue  # the original cannot plot a chunk shorter than its FFT either
        if job.reference:
            img = spectrum.resize_reference(spectrum.render_reference(chunk, sr), job.input_size)
            yield n, when, img.transpose(2, 0, 1), sr
        else:
            yield n, when, chunk.astype(np.float32), sr


class _Batches:
    """Rows of one worker, grouped into batches of at most `size` payloads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reset()

    def reset(self) -> None:
        self.target: list[int] = []
        self.index: list[int] = []
        self.time: list[float] = []
        self.payload: list[np.ndarray] = []
        self.rate: list[int] = []
        self.done: list[tuple[int, dict[str, int]]] = []

    def add(self, ti: int, row: tuple) -> None:
        self.target.append(ti)
        self.index.append(int(row[0]))
        self.time.append(float(row[1]))
        self.payload.append(row[2])
        self.rate.append(int(row[3]) if len(row) > 3 else 0)

    def emit(self, error: DataError | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": torch.tensor(self.target, dtype=torch.long),
            "index": torch.tensor(self.index, dtype=torch.long),
            "time": torch.tensor(self.time, dtype=torch.float64),
            "rate": torch.tensor(self.rate, dtype=torch.long),
            "done": list(self.done),
            "error": error.__reduce__()[1] if error is not None else None,
        }
        if self.payload and self.payload[0].dtype == np.uint8:
            out["images"] = torch.from_numpy(np.stack(self.payload))
        elif self.payload:
            out["signals"] = [torch.from_numpy(p) for p in self.payload]
        self.reset()
        return out


class _Stream(IterableDataset):
    def __init__(self, job: Job) -> None:
        self.job = job

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        detect = build_detector(self.job.detector) if self.job.media == "video" else None
        buf = _Batches(self.job.batch_size)
        for ti in range(wid, len(self.job.targets), nw):
            t = self.job.targets[ti]
            stats = {"frames_read": 0, "faces": 0}
            try:
                if self.job.media == "frames":
                    rows = _read_frames(self.job, t, stats)
                elif self.job.media == "video":
                    rows = _read_video(self.job, t, stats, detect)
                else:
                    rows = _read_audio(self.job, t, stats)
                for row in rows:
                    buf.add(ti, row)
                    if len(buf.payload) >= buf.size:
                        yield buf.emit()
            except DataError as e:
                yield buf.emit(e)
                return
            buf.done.append((ti, stats))
        if buf.payload or buf.done:
            yield buf.emit()


# ---------------------------------------------------------------- main side


@dataclass
class Model:
    """The backbone on its device, with the input transform of its preprocessing."""

    backbone: Backbone
    device: torch.device
    bf16: bool
    spectra: spectrum.FastSpectrum | None = None
    channels_last: bool = False
    _mean: torch.Tensor = field(init=False)
    _std: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        bb = self.backbone
        self._mean = torch.tensor(bb.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(bb.std, device=self.device).view(1, 3, 1, 1)
        bb.module.to(self.device)
        if self.channels_last:
            bb.module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> np.ndarray:
        """Images in [0, 1] (n, 3, S, S) on the device -> features (n, width) float32."""
        x = (x - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=self.bf16):
            y = self.backbone.module(x)
        return y.float().cpu().numpy()

    def features(self, batch: dict[str, Any]) -> np.ndarray:
        """The features of every row of a worker batch, in row order."""
        if "images" in batch:
            imgs = batch["images"].to(self.device, non_blocking=True)
            return self.forward(imgs.float() / 255.0)
        out = np.zeros((len(batch["signals"]), self.backbone.width), np.float32)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (sig, sr) in enumerate(zip(batch["signals"], batch["rate"].tolist(), strict=True)):
            groups.setdefault((int(sr), sig.numel()), []).append(i)
        for (sr, _), rows in groups.items():
            sigs = torch.stack([batch["signals"][i] for i in rows])
            out[rows] = self.forward(self.spectra.images(sigs, sr))
        return out


def run(
    job: Job,
    model: Model,
    *,
    workers: int,
    on_done: Callable[[Finished], None],
    on_rows: Callable[[int], None] = lambda n: None,
) -> None:
    """Extract every target of `job`; `on_done` receives each finished target in order of completion."""
    loader = DataLoader(
        _Stream(job),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        pin_memory=model.device.type == "cuda",
        persistent_workers=False,
    )
    parts: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    name = "segment" if job.media == "audio" else "frame"
    for batch in loader:
        if len(batch["target"]):
            feats = model.features(batch)
            tgt = batch["target"].numpy()
            for ti in np.unique(tgt):
                sel = tgt == ti
                parts.setdefault(int(ti), []).append(
                    (batch["index"].numpy()[sel], batch["time"].numpy()[sel], feats[sel])
                )
            on_rows(len(tgt))
        for ti, stats in batch["done"]:
            got = parts.pop(ti, [])
            rows = ExtractedRows(
                np.concatenate([p[0] for p in got]) if got else np.zeros(0, np.int64),
                np.concatenate([p[1] for p in got]) if got else np.zeros(0, np.float64),
                np.concatenate([p[2] for p in got])
                if got
                else np.zeros((0, model.backbone.width), np.float32),
                name,
            )
            on_done(Finished(job.targets[ti], rows, dict(stats)))
        if batch["error"] is not None:  # after the targets this batch finished were handed on
            raise DataError(*batch["error"][:2], **dict(zip(
                ("row", "column", "expected", "found", "hint"), batch["error"][2:], strict=True
            )))  # fmt: skip


def bare_forward_rate(model: Model, images: torch.Tensor, batch_size: int) -> float:
    """Rows per second of the backbone alone on ready batches (the benchmark's ceiling)."""
    t0 = time.perf_counter()
    for s in range(0, len(images), batch_size):
        model.forward(images[s : s + batch_size].to(model.device).float() / 255.0)
    return len(images) / max(time.perf_counter() - t0, 1e-9)
