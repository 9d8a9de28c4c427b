"""Small media with known answers, for tests, benchmarks and trying `abaw extract` without data.

The challenge media are licensed, so the tests make their own: webcam-like videos with an
audio track, in which a real human face (scikit-image's astronaut photograph, public domain)
moves over a textured background and one second shows no face at all (a patch of the same
photograph without a face moves instead, so a detector that fires on texture or clothing is
caught); Aff-Wild2-like `cropped_aligned/<video>/00001.jpg` trees with missing frames; and the
tables of both tracks around them. Every function is deterministic for its seed.

`FACE_BOX` is the face's known position on the photograph (x, y, size: hairline to chin,
cheek to cheek, drawn by hand); `face_video` returns the box of every frame, so detection
recall, false positives and IoU can be measured (benchmarks/bench_extract.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

FACE_BOX = (170, 62, 112)  # x, y, side of the face on skimage.data.astronaut() (512 x 512)
_FACE_PATCH = (120, 20, 210)  # x, y, side of the moving patch: face, hair and collar
_NO_FACE_PATCH = (300, 300, 210)  # the helmet and suit: textured, no face


def astronaut() -> np.ndarray:
    """The astronaut photograph (512, 512, 3) uint8 RGB (needs scikit-image: the dev extra)."""
    try:
        from skimage import data
    except ImportError as e:  # pragma: no cover - the dev extra installs it
        raise ImportError(
            "abaw.extract.testmedia needs scikit-image (pip install -e '.[dev]')"
        ) from e
    return np.ascontiguousarray(data.astronaut())


def texture(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """A colourful textured background: gratings, blobs and a brick-like pattern, uint8 RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        for _ in range(3):
            fx, fy = rng.uniform(0.02, 0.25, 2)
            ph = rng.uniform(0, 2 * np.pi)
            img[..., c] += np.sin(fx * xx + fy * yy + ph)
    bricks = ((yy // 9) % 2 == 0) ^ (((xx + 7 * ((yy // 9) % 2)) // 14) % 2 == 0)
    img += 0.8 * bricks[..., None]
    img += rng.normal(0, 0.25, img.shape)
    img -= img.min()
    img /= img.max()
    return (40 + 170 * img).astype(np.uint8)


@dataclass
class VideoTruth:
    """What `face_video` wrote: every frame's time and its known face box (None: no face)."""

    path: Path
    fps: int
    times: list[float]
    boxes: list[tuple[float, float, float, float] | None]  # x0, y0, x1, y1 in pixels
    audio_seconds: float  # 0 without an audio stream


def _resize(img: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)


def audio_signal(seconds: float, sr: int, *, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Speech-like test audio (channels, samples) float32 in [-1, 1]: chirps, harmonics, bursts."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n, dtype=np.float64) / sr
    f0 = 140 + 60 * np.sin(2 * np.pi * 0.7 * t) + 40 * rng.uniform(-1, 1)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.3 * t + rng.uniform(0, 6)) ** 2
    chirp = np.sin(2 * np.pi * (300 * t + 900 * t**2 / max(seconds, 1e-6)))
    noise = rng.normal(0, 1, n) * (np.sin(2 * np.pi * 0.9 * t) > 0.6)
    mono = 0.25 * voiced * envelope + 0.15 * chirp + 0.08 * noise
    out = np.stack([mono * (1.0 - 0.2 * c) + 0.01 * rng.normal(0, 1, n) for c in range(channels)])
    return np.clip(out, -1, 1).astype(np.float32)


def face_video(
    path: str | Path,
    *,
    seconds: float = 3.0,
    fps: int = 10,
    size: tuple[int, int] = (160, 120),
    face_px: int = 60,
    face_free: tuple[float, float] | None = (1.0, 2.0),
    audio: bool = True,
    sample_rate: int = 16000,
    seed: int = 0,
    faststart: bool = False,
) -> VideoTruth:
    """Write an H.264 (+ AAC) video of the astronaut's face moving over a texture.

    `face_px` is the face's side in the frame; `face_free` the [start, end) seconds in which a
    face-free patch of the photograph moves instead; `faststart` puts the index first (as
    web videos have it), so a truncated copy still opens. Returns every frame's known box.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    photo = astronaut()
    scale = face_px / FACE_BOX[2]
    side = int(round(_FACE_PATCH[2] * scale))
    px, py, ps = _FACE_PATCH
    face_patch = _resize(photo[py : py + ps, px : px + ps], side)
    nx, ny, ns = _NO_FACE_PATCH
    empty_patch = _resize(photo[ny : ny + ns, nx : nx + ns], side)
    bg = texture(h, w, seed=seed)
    rng = np.random.default_rng(seed + 1)
    n_frames = int(round(seconds * fps))
    truth = VideoTruth(path, fps, [], [], seconds if audio else 0.0)
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "20", "preset": "veryfast", "tune": "zerolatency"}
        ast = out.add_stream("aac", rate=sample_rate, layout="stereo") if audio else None
        x_path = np.linspace(0, max(0, w - side), n_frames) if n_frames > 1 else [0.0]
        jitter = rng.uniform(-1, 1)
        for i in range(n_frames):
            t = i / fps
            x = int(round(x_path[i]))
            y = int(round((h - side) / 2 + 0.2 * (h - side) * np.sin(2.1 * t + jitter)))
            y = min(max(y, 0), max(0, h - side))
            frame = bg.copy()
            no_face = face_free is not None and face_free[0] <= t < face_free[1]
            patch = empty_patch if no_face else face_patch
            ph, pw = min(side, h - y), min(side, w - x)
            frame[y : y + ph, x : x + pw] = patch[:ph, :pw]
            truth.times.append(t)
            if no_face:
                truth.boxes.append(None)
            else:
                fx = x + (FACE_BOX[0] - px) * scale
                fy = y + (FACE_BOX[1] - py) * scale
                truth.boxes.append((fx, fy, fx + face_px, fy + face_px))
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            for packet in vs.encode(vf):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if ast is not None:
            _write_audio(out, ast, audio_signal(seconds, sample_rate, seed=seed), sample_rate)
    return truth


def _write_audio(out, stream, signal: np.ndarray, sr: int) -> None:
    import av

    hop = 1024
    for start in range(0, signal.shape[1], hop):
        chunk = np.ascontiguousarray(signal[:, start : start + hop])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def audio_file(path: str | Path, *, seconds: float = 3.0, sample_rate: int = 16000, seed: int = 0):
    """An audio-only file (AAC in .m4a, or WAV for a .wav name) of `audio_signal`."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "pcm_s16le" if path.suffix == ".wav" else "aac"
    signal = audio_signal(seconds, sample_rate, seed=seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=sample_rate, layout="stereo")
        if codec == "pcm_s16le":
            pcm = (signal.T * 32767).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, 0, Fraction(1, sample_rate)
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        else:
            _write_audio(out, stream, signal, sample_rate)
    return path


def face_frames(n: int, *, side: int = 112, seed: int = 0) -> list[np.ndarray]:
    """`n` cropped-aligned-like face images (side x side RGB): the face, gently moving and lit."""
    import cv2

    photo = astronaut()
    rng = np.random.default_rng(seed)
    x0, y0, s = FACE_BOX
    out = []
    for i in range(n):
        dx, dy = 4 * np.sin(0.3 * i + rng.uniform(0, 0.2)), 3 * np.cos(0.2 * i)
        zoom = 1.0 + 0.05 * np.sin(0.17 * i)
        half = s * zoom / 2
        cx, cy = x0 + s / 2 + dx, y0 + s / 2 + dy
        m = np.array([[side / (2 * half), 0, side / 2 - cx * side / (2 * half)]])
        m = np.vstack([m, [0, side / (2 * half), side / 2 - cy * side / (2 * half)]])
        img = cv2.warpAffine(photo, m, (side, side), flags=cv2.INTER_LINEAR)
        gain = 0.85 + 0.3 * (0.5 + 0.5 * np.sin(0.11 * i + seed))
        out.append(np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    return out


def cropped_aligned(
    root: str | Path,
    lengths: dict[str, int],
    *,
    missing: dict[str, Sequence[int]] | None = None,
    side: int = 112,
    seed: int = 0,
) -> Path:
    """An Aff-Wild2-like `root/<video>/00001.jpg` tree; `missing` lists frames left out."""
    from PIL import Image

    root = Path(root)
    missing = missing or {}
    for k, (video, n) in enumerate(sorted(lengths.items())):
        folder = root / video
        folder.mkdir(parents=True, exist_ok=True)
        gone = set(missing.get(video, ()))
        for i, img in enumerate(face_frames(n, side=side, seed=seed + k), start=1):
            if i not in gone:
                Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def random_weights(arch: str, path: str | Path, *, seed: int = 0) -> Path:
    """A weights file for `arch` with seeded random values, as a published file is laid out.

    `.safetensors` or a `torch.save` state dict (`.pth`), classifier included, so loading it
    goes through the same key checks as real weights.
    """
    import torch

    torch.manual_seed(seed)
    kind, _, name = arch.partition(":")
    if kind == "torchvision":
        import torchvision

        model = torchvision.models.get_model(name, weights=None)
    elif kind == "timm":
        import timm

        model = timm.create_model(name, pretrained=False)
    elif arch == "inception_resnet_v1":
        from abaw.extract.irv1 import InceptionResnetV1

        model = InceptionResnetV1()
    else:
        raise ValueError(f"no random weights for {arch}")
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if arch == "inception_resnet_v1":  # the published files carry the classifier too
        sd["logits.weight"] = torch.randn(8631, 512) * 0.01
        sd["logits.bias"] = torch.zeros(8631)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return path


EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"


def expr_data(
    root: str | Path,
    *,
    train: dict[str, int],
    devel: dict[str, int],
    test: dict[str, int],
    missing: dict[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> Path:
    """A tiny Aff-Wild2 Expr root: annotations, both test lists and `cropped_aligned/`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    ann = root / "EXPR_Classification_Challenge"
    for folder, videos in (("Train_Set", train), ("Validation_Set", devel)):
        (ann / folder).mkdir(parents=True, exist_ok=True)
        for v, n in videos.items():
            labels = np.repeat(rng.integers(0, 8, size=(n + 9) // 10), 10)[:n]
            labels[rng.random(n) < 0.05] = -1
            text = EXPR_HEADER + "\n" + "\n".join(str(int(x)) for x in labels) + "\n"
            (ann / folder / f"{v}.txt").write_text(text, encoding="utf-8")
    (root / "Expression_Classification_Challenge_test_set_release.txt").write_text(
        "".join(f"{v}\n" for v in test), encoding="utf-8"
    )
    rows = [f"{v}/{i:05d}.jpg," for v, n in test.items() for i in range(1, n + 1)]
    (root / "CVPR_5th_ABAW_EXPR_test_set_sample.txt").write_text(
        "image_location," + EXPR_HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )
    cropped_aligned(
        root / "cropped_aligned", {**train, **devel, **test}, missing=missing, seed=seed
    )
    return root


def eri_data(
    root: str | Path,
    videos: str | Path,
    *,
    splits: dict[str, int],
    seconds: float = 2.0,
    fps: int = 10,
    seed: int = 0,
) -> dict[str, VideoTruth]:
    """A tiny Hume-Reaction root (MuSe layout tables) and one face video with audio per sample."""
    root, videos = Path(root), Path(videos)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    emotions = "Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise"
    labels, parts, truth = [f"File_ID,{emotions}"], ["Id,Partition"], {}
    k = 0
    for split, n in splits.items():
        for _ in range(n):
            sid = f"{k:05d}"
            y = rng.random(7)
            y /= y.max()
            cells = ",".join(f"{v:.4f}" for v in y) if split != "test" else "," * 6
            labels.append(f"[{sid}],{cells}")
            parts.append(f"[{sid}],{split}")
            free = (0.5, 1.0) if k % 3 == 0 else None
            truth[sid] = face_video(videos / f"{sid}.mp4", seconds=seconds, fps=fps,
                                    face_free=free, seed=seed + k)  # fmt: skip
            k += 1
    (root / "labels.csv").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (root / "partition.csv").write_text("\n".join(parts) + "\n", encoding="utf-8")
    return truth
