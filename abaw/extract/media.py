"""Reading the challenge media: frame images, and video/audio streamed with PyAV.

Nothing holds a whole video in memory: frames are decoded one at a time and only the sampled
ones are converted; audio windows are cut from a rolling buffer. Every failure (an unreadable
or truncated file, a missing stream, a corrupt image) is one DataError naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from abaw.errors import DataError

_FRAME_NAME = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)
DELETE_HINT = (
    "Replace it with a good copy, or delete it: a missing frame is written as a row of NaN "
    "(no face), as for any frame Aff-Wild2 has no image for"
)


def frame_files(folder: Path) -> dict[int, Path]:
    """Frame number -> image file of a `cropped_aligned/<video>/` folder (`00001.jpg` = frame 1)."""
    out: dict[int, Path] = {}
    try:
        entries = list(Path(folder).iterdir())
    except OSError as e:
        raise DataError(
            folder, "cannot list the frame folder", found=e.strerror or str(e)
        ) from None
    for p in entries:
        m = _FRAME_NAME.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file; a corrupt or truncated file is a DataError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decodes fully: a truncated JPEG raises here
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DataError(
            path,
            "unreadable frame image",
            expected="a JPEG or PNG image",
            found=f"{type(e).__name__}: {str(e)[:100]}",
            hint=DELETE_HINT,
        ) from None


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """`img` resized to size x size (area filter when shrinking, bilinear when growing)."""
    import cv2

    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(img)
    interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def _open(path: Path, what: str):
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(
            path,
            "unreadable media file",
            expected=what,
            found=f"{type(e).__name__}: {str(e)[:120]}",
            hint="Check the file (an interrupted copy?) with `ffprobe FILE`",
        ) from None


def _truncated(path: Path, decoded_to: float, duration: float | None, what: str) -> DataError:
    return DataError(
        path,
        f"truncated or corrupt {what}",
        expected=f"{duration:.2f} s of {what}" if duration else f"a whole {what} stream",
        found=f"decoding stops at {decoded_to:.2f} s",
        hint="Copy the file again (an interrupted download?)",
    )


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def video_frames(path: Path, fps: float | None) -> Iterator[tuple[int, float, np.ndarray]]:
    """(decoded frame number from 0, time in s, RGB array) of the frames sampled at `fps`.

    A frame is taken when it is the first at or after the next sampling time (minus half a
    frame), so `fps` above the video's rate takes every frame once; None takes all frames.
    """
    import av

    container = _open(path, "a video file with a video stream")
    with container:
        if not container.streams.video:
            raise DataError(path, "no video stream", expected="a video", found="audio only")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        duration = _duration(container, stream)
        half = 0.5 / rate
        next_t, t, i = 0.0, 0.0, -1
        try:
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else i / rate
                if fps is None or t + half >= next_t:
                    yield i, t, frame.to_ndarray(format="rgb24")
                    if fps is not None:
                        next_t = (np.floor((t + half) * fps + 1e-9) + 1) / fps
        except av.FFmpegError:
            raise _truncated(path, t, duration, "video") from None
        if i < 0 or (duration and t + 2.0 / rate < 0.9 * duration):
            raise _truncated(path, max(t, 0.0), duration, "video")


def audio_windows(
    path: Path,
    window: float | None,
    hop: float | None,
    sample_rate: int | None = None,
    info: dict[str, int] | None = None,
) -> Iterator[tuple[int, float, np.ndarray, int]]:
    """(window index, start time, mono samples, sample rate), as DeepSpectrum cuts them.

    Audio is decoded to float, channels averaged (librosa's mono), optionally resampled.
    Window n is samples[n*hop : n*hop + window] for n < max(len // hop, 1), so the last
    windows are shorter; without a window the whole file is one chunk. Windows shorter than
    the FFT are dropped by the caller, as the original does. `info`, when given, receives the
    stream's own rate (`source_rate`) before the first window, for the manifest.
    """
    import av

    container = _open(path, "a media file with an audio stream")
    with container:
        if not container.streams.audio:
            raise DataError(
                path,
                "no audio stream",
                expected="a video with an audio track (DeepSpectrum reads the audio)",
                found=f"{len(container.streams.video)} video stream(s) and no audio",
            )
        stream = container.streams.audio[0]
        source = int(stream.rate or stream.codec_context.sample_rate)
        if info is not None:
            info["source_rate"] = source
        sr = int(sample_rate or source)
        resampler = av.AudioResampler(format="fltp", rate=sr)
        duration = _duration(container, stream)
        yield from _cut(path, container, stream, resampler, sr, window, hop, duration)


def _decoded(container, stream, resampler) -> Iterator[np.ndarray]:
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            yield out.to_ndarray().astype(np.float32).mean(axis=0)
    for out in resampler.resample(None):
        yield out.to_ndarray().astype(np.float32).mean(axis=0)


def _cut(path, container, stream, resampler, sr, window, hop, duration):
    import av

    win = int(window * sr) if window else None
    step = int(hop * sr) if hop else None
    buf = np.zeros(0, np.float32)
    offset = 0  # absolute sample index of buf[0]
    n = 0
    total = 0
    try:
        for chunk in _decoded(container, stream, resampler):
            total += len(chunk)
            buf = np.concatenate([buf, chunk]) if buf.size else chunk
            while win and step and offset + buf.size >= n * step + win:
                s = n * step - offset
                yield n, n * hop, buf[s : s + win].copy(), sr
                n += 1
                drop = n * step - offset
                if drop > 0:
                    buf, offset = buf[drop:], offset + drop
    except av.FFmpegError:
        raise _truncated(path, total / sr, duration, "audio") from None
    if total == 0 or (duration and total / sr < 0.9 * duration - 0.1):
        raise _truncated(path, total / sr, duration, "audio")
    if not (win and step):
        yield 0, 0.0, buf, sr
        return
    last = max(total // step, 1)
    while n < last:
        s = n * step - offset
        yield n, n * hop, buf[max(s, 0) : s + win].copy(), sr
        n += 1
