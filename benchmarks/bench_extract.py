"""How fast `abaw extract` is, against the model alone and against what teams do today (issue #17).

Figures, each printed with the load average (numbers taken while other jobs run are noise):

1. pipeline vs bare forward: Expr frames (JPG -> resize -> backbone -> .npy per video) through
   the worker pipeline, against the backbone alone on the same frames already decoded and
   batched. Target: the pipeline at >= 80 % of the bare forward (decoding, resizing and writing
   hidden behind compute). On CUDA also the share of the GPU's bf16 peak (--peak-tflops).
2. per-image PIL loop: the same frames as teams' scripts read them (PIL open, torchvision
   transform, the model on one image at a time); the pipeline's speed-up over it.
3. DeepSpectrum: spectrogram images per second, torch fast path (batched) vs the matplotlib
   reference (the original's drawing); target >= 20x; and the correlation of DenseNet121
   features of the two (target >= 0.99).
4. memory: peak RSS of extracting faces from a long video vs a 10-second one (streaming:
   target <= 1.2x), each in a fresh process.
5. face detection on the test videos (the astronaut's face over a texture, a face-free second;
   six face sizes, then tilted and dimmed copies): per detector (--detector haar,mtcnn), recall,
   false positives on face-free frames, IoU of the detector's box and of the crop's footprint
   with the known face box, time per frame. Detection figures do not depend on load.

Run: python benchmarks/bench_extract.py [--quick] [--device cpu|cuda|auto] [--out DIR]
     [--parts pipeline,deepspectrum,memory,faces] [--backbone ARCH] [--frames N]
     [--detector haar,mtcnn --detector-weights facenet_pytorch/data] [--face-margin X]
`--quick` shrinks everything to seconds (a test runs it); the full run takes minutes and
writes a 10-minute video. Weights are random (speed and memory do not depend on them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's abaw
from abaw.extract import media, pipeline, spectrum  # noqa: E402
from abaw.extract import testmedia as tm  # noqa: E402
from abaw.extract.backbones import load_backbone  # noqa: E402
from abaw.extract.faces import (  # noqa: E402
    DETECTORS,
    DetectorConfig,
    build_detector,
    check_detector,
    crop_region,
    iou,
)
from abaw.extract.run import resolve_device, write_atomic  # noqa: E402
from abaw.track import get_track  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def line(text: str) -> None:
    print(f"{text}   [{load()}]", flush=True)


def _frames(out: Path, videos: int, frames: int) -> tuple[Path, list]:
    lengths = {f"v{i}": frames for i in range(videos)}
    root = tm.expr_data(out / "expr", train=lengths, devel={}, test={})
    plan = get_track("expr").extract_plan(root, name="Bench")
    return root, plan.targets


def bench_pipeline(args, out: Path, dev: torch.device) -> None:
    root, targets = _frames(out, args.videos, args.frames)
    weights = tm.random_weights(args.backbone, out / "w.pth")
    bb = load_backbone(args.backbone, weights, input_size=args.input_size)
    bf16 = dev.type == "cuda"
    model = pipeline.Model(bb, dev, bf16, channels_last=dev.type == "cuda")
    files = [p for t in targets for p in sorted(t.source.glob("*.jpg"))]
    imgs = torch.from_numpy(np.stack([
        media.resize_square(media.read_image(p), bb.input_size).transpose(2, 0, 1) for p in files
    ]))  # fmt: skip
    pipeline.bare_forward_rate(model, imgs[: args.batch_size], args.batch_size)  # warm-up
    before = pipeline.bare_forward_rate(model, imgs, args.batch_size)
    track = get_track("expr")
    job = pipeline.Job("frames", targets, bb.input_size, args.batch_size)
    t0 = time.perf_counter()
    pipeline.run(job, model, workers=args.workers, on_done=lambda f: write_atomic(track, f))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    rate = len(files) / (time.perf_counter() - t0)
    after = pipeline.bare_forward_rate(model, imgs, args.batch_size)
    bare = (before + after) / 2  # measured on both sides of the pipeline: load drifts
    line(f"pipeline: {rate:,.1f} frames/s end to end ({len(files)} frames, {args.backbone} at "
         f"{bb.input_size} px, batch {args.batch_size}, {args.workers} workers, {dev})")  # fmt: skip
    line(f"bare forward: {bare:,.1f} frames/s on the same batches (before {before:,.1f}, after "
         f"{after:,.1f}); pipeline efficiency "
         f"{100 * rate / bare:.0f} % (target >= 80 %)")  # fmt: skip
    if dev.type == "cuda":
        _gpu_share(model, bb, rate, args)
    _pil_loop(bb, files, rate, args)


def _gpu_share(model, bb, rate: float, args) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, bb.input_size, bb.input_size, device=model.device)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        bb.module(x)
    flops = fc.get_total_flops()
    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    share = f"{100 * flops * rate / (peak * 1e12):.1f} % of {peak:.0f} TFLOP/s" if peak else "?"
    line(f"GPU {name}: {flops / 1e9:.2f} GFLOP per frame -> {flops * rate / 1e12:.1f} TFLOP/s, "
         f"{share} (bf16 dense peak)")  # fmt: skip


def _pil_loop(bb, files: list[Path], rate: float, args) -> None:
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.Resize((bb.input_size, bb.input_size)), transforms.ToTensor(),
        transforms.Normalize(bb.mean, bb.std),
    ])  # fmt: skip
    module = bb.module
    dev = next(module.parameters()).device
    n = min(len(files), args.loop_frames)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in files[:n]:
            x = tf(Image.open(p).convert("RGB")).unsqueeze(0).to(dev)
            module(x).cpu().numpy()
    loop = n / (time.perf_counter() - t0)
    line(f"per-image PIL loop: {loop:,.1f} frames/s ({n} frames); pipeline speed-up "
         f"{rate / loop:.1f}x")  # fmt: skip


def bench_deepspectrum(args, out: Path, dev: torch.device) -> None:
    sr = 16000
    signal = tm.audio_signal(args.windows * 0.5 + 1.0, sr).mean(axis=0)
    windows = np.stack(
        [signal[int(k * sr / 2) : int(k * sr / 2) + sr] for k in range(args.windows)]
    )
    t0 = time.perf_counter()
    ref = [spectrum.resize_reference(spectrum.render_reference(w, sr), 224) for w in windows]
    ref_rate = len(windows) / (time.perf_counter() - t0)
    fast = spectrum.FastSpectrum(dev, 224)
    x = torch.from_numpy(windows)
    fast.images(x[:2], sr)  # warm-up (tables)
    best = float("inf")
    for _ in range(3):  # best of 3: one batch takes a fraction of a second
        t0 = time.perf_counter()
        imgs = fast.images(x, sr)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    fast_rate = len(windows) / best
    line(
        f"DeepSpectrum images: fast {fast_rate:,.1f} /s vs reference {ref_rate:,.1f} /s "
        f"({fast_rate / ref_rate:.0f}x, target >= 20x; {len(windows)} windows of 1 s at 16 kHz)"
    )
    bb = load_backbone(
        "torchvision:densenet121", tm.random_weights("torchvision:densenet121", out / "d.pth")
    )
    model = pipeline.Model(bb, dev, False)
    a = model.forward(imgs.to(dev))
    b = model.forward(torch.from_numpy(np.stack(ref)).permute(0, 3, 1, 2).float().to(dev) / 255)
    corr = [np.corrcoef(u, v)[0, 1] for u, v in zip(a, b, strict=True)]
    line(f"DeepSpectrum DenseNet121 features, fast vs reference: correlation min {min(corr):.4f}, "
         f"mean {np.mean(corr):.4f} (target >= 0.99)")  # fmt: skip


_CHILD = """
import sys, torch
from abaw.extract import extract
r = extract("eri", sys.argv[1], name=sys.argv[3], backbone="torchvision:resnet18",
            weights=sys.argv[2], input_size=64, workers=0, videos=sys.argv[4], fps=4.0,
            show_progress=False)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(hwm, r.frames_read)
"""


def bench_memory(args, out: Path) -> None:
    weights = tm.random_weights("torchvision:resnet18", out / "r18.pth")
    peaks = {}
    for label, seconds in (("short", args.short_seconds), ("long", args.long_seconds)):
        root = out / f"mem-{label}"
        tm.eri_data(root / "eri", root / "videos", splits={"train": 1}, seconds=seconds, fps=10)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        res = subprocess.run(
            [sys.executable, "-c", _CHILD, str(root / "eri"), str(weights), "M", str(root / "videos")],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        kb, frames = res.stdout.split()[-2:]
        peaks[label] = (int(kb) / 1024, seconds, int(frames))
    (s, ss, sf), (lo, ls, lf) = peaks["short"], peaks["long"]
    line(f"peak RSS: {lo:,.0f} MiB for a {ls:.0f} s video ({lf} frames sampled) vs {s:,.0f} MiB "
         f"for {ss:.0f} s ({sf}): {lo / s:.2f}x (target <= 1.2x)")  # fmt: skip


FACE_ROWS = (  # seed, frame size, face side in px: the four of docs/extract.md, then small faces
    (0, (160, 120), 60), (1, (192, 144), 50), (2, (256, 192), 90), (3, (320, 240), 120),
    (4, (320, 240), 40), (5, (320, 240), 30),
)  # fmt: skip
HARD = (("tilt +25 deg", 25.0, 1.0), ("tilt -25 deg", -25.0, 1.0), ("dim x0.35", 0.0, 0.35))


def _detector_configs(args) -> list[DetectorConfig]:
    """--detector a,b with --detector-weights PATH (for the detectors that need a file) or
    NAME=PATH per detector; haar uses the wheel's cascade unless NAME=PATH names one."""
    given: dict[str, str] = {}
    for w in args.detector_weights:
        name, sep, path = w.partition("=")
        given.update({name: path} if sep and name in DETECTORS else {"": w})
    out = []
    for name in (n for n in args.detector.split(",") if n):
        weights = given.get(name) or (given.get("") if name != "haar" else None)
        cfg = DetectorConfig(name, weights, args.face_margin, str(args.device_resolved))
        check_detector(cfg)
        out.append(cfg)
    return out


def _tilted(rgb: np.ndarray, angle: float, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """The frame turned by `angle` about its centre and scaled in brightness; the matrix."""
    import cv2

    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    out = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8), m


def _inside(face, box, m: np.ndarray) -> bool:
    """Whether the detection's centre, mapped back through `m`, lies in the known box."""
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    x, y = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2] @ [cx, cy, 1]
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def _face_row(cfg: DetectorConfig, detect, truth, frames, label: str, hard=None) -> float:
    """One table row: recall, false positives, IoU of the box and of the crop, the crop's
    side over the face's and its centre's offset (in face sides; the sd is the jitter from
    frame to frame); returns the seconds spent detecting."""
    margin = cfg.crop_margin()
    hits = fp = 0
    box_iou, crop_iou, ratio, offset = [], [], [], []
    t0 = time.perf_counter()
    found = [detect(rgb) for rgb in frames]
    seconds = time.perf_counter() - t0
    for f, box, m in zip(found, truth.boxes, hard or [None] * len(frames), strict=True):
        if box is None:
            fp += f is not None
        elif f is not None and (m is None or _inside(f, box, m)):
            hits += 1
            if m is None:
                c, side = crop_region(f, 112, margin), box[2] - box[0]
                box_iou.append(iou(f.box, box))
                crop_iou.append(iou(c, box))
                ratio.append((c[2] - c[0]) / side)
                offset.append(
                    np.hypot(c[0] + c[2] - box[0] - box[2], c[1] + c[3] - box[1] - box[3])
                    / (2 * side)
                )
    n_face = sum(b is not None for b in truth.boxes)
    n_free = len(frames) - n_face
    geo = "- | - | - | -"
    if box_iou:
        geo = (f"{np.mean(box_iou):.3f} / {np.min(box_iou):.3f} | {np.mean(crop_iou):.3f} / "
               f"{np.min(crop_iou):.3f} | {np.mean(ratio):.2f} ± {np.std(ratio):.3f} | "
               f"{np.mean(offset):.3f} ± {np.std(offset):.3f}")  # fmt: skip
    print(f"| {cfg.name} | {label} | {hits}/{n_face} | {fp}/{n_free} | {geo} | "
          f"{1000 * seconds / len(frames):.1f} |", flush=True)  # fmt: skip
    return seconds


def bench_faces(args, out: Path) -> None:
    """Each detector on the same test frames: the known-box sizes, small faces, then tilted
    and dim copies of the 120 px video (recall: the detection's centre in the known box)."""
    import cv2

    configs = _detector_configs(args)
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)  # as in a pipeline worker; also steadier on a shared machine
    cv2.setNumThreads(1)
    try:
        _faces(args, out, configs)
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])


def _faces(args, out: Path, configs: list[DetectorConfig]) -> None:
    videos = [(f"{w}x{h}, face {face} px", tm.face_video(out / f"faces{seed}.mp4", seconds=3.0,
               size=(w, h), face_px=face, seed=seed)) for seed, (w, h), face in FACE_ROWS]  # fmt: skip
    frames = {label: [rgb for _, _, rgb in media.video_frames(t.path, None)] for label, t in videos}
    line(f"face detection on the test videos ({', '.join(c.name for c in configs)}): the "
         f"astronaut's face over a texture, 3 s at 10 fps, 1 s face-free; IoU mean / min of the "
         f"detector's box and of the crop's footprint with the known box (hairline to chin)")  # fmt: skip
    print("| detector | frames | recall | false positives | box IoU | crop IoU | crop side / face "
          "| crop centre offset | ms/frame |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for cfg in configs:
        detect = build_detector(cfg)
        detect(frames[videos[0][0]][0])  # warm-up (first-call allocations)
        seconds = n = 0
        for label, truth in videos:
            seconds += _face_row(cfg, detect, truth, frames[label], label)
            n += len(frames[label])
        label, truth = videos[3]
        for name, angle, gain in HARD:
            pairs = [_tilted(rgb, angle, gain) for rgb in frames[label]]
            _face_row(cfg, detect, truth, [p[0] for p in pairs], f"{label}, {name}",
                      hard=[p[1] for p in pairs])  # fmt: skip
        batch = ""
        if hasattr(detect, "batch"):
            t0 = time.perf_counter()
            for label, _ in videos:
                detect.batch(np.stack(frames[label]))
            batch = f"; batched per video {1000 * (time.perf_counter() - t0) / n:.1f} ms/frame"
        line(f"{cfg.name}: {1000 * seconds / n:.1f} ms/frame one at a time{batch} "
             f"({n} frames, {args.device_resolved}, one thread as in a pipeline worker)")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for the test")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--out", help="working folder (default: a temporary one)")
    p.add_argument("--backbone", help="default torchvision:resnet50 (quick: resnet18)")
    p.add_argument("--input-size", type=int, help="default 224 (quick: 64)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, help="default: cores - 1, at most 8 (quick: 1)")
    p.add_argument("--peak-tflops", type=float, help="the GPU's bf16 dense peak")
    p.add_argument("--frames", type=int, help="frames per video of the pipeline part (default 250)")
    p.add_argument("--detector", default="haar", help="faces: haar, mtcnn, yunet or a,b (haar)")
    p.add_argument(
        "--detector-weights",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="faces: the weights of the detector that needs a file (mtcnn: the folder of "
        "pnet.pt, rnet.pt, onet.pt; yunet: the ONNX file); NAME=PATH when several",
    )
    p.add_argument("--face-margin", type=float, help="faces: crop margin (detector default)")
    p.add_argument(
        "--parts",
        default="pipeline,deepspectrum,memory,faces",
        help="comma-separated parts to run (default: all)",
    )
    args = p.parse_args()
    q = args.quick
    args.backbone = args.backbone or ("torchvision:resnet18" if q else "torchvision:resnet50")
    args.input_size = args.input_size or (64 if q else 224)
    args.workers = (
        args.workers
        if args.workers is not None
        else (1 if q else max(1, min(8, (os.cpu_count() or 2) - 1)))
    )
    args.videos, args.frames = (2, 16) if q else (8, args.frames or 250)
    args.loop_frames = 24 if q else 400
    args.windows = 4 if q else 60
    args.short_seconds, args.long_seconds = (4.0, 8.0) if q else (10.0, 600.0)
    dev = resolve_device(args.device)
    args.device_resolved = dev
    torch.manual_seed(0)
    print(f"bench_extract: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores, device {dev}{' (quick)' if q else ''}   [{load()}]", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        parts = set(args.parts.split(","))
        if "pipeline" in parts:
            bench_pipeline(args, out, dev)
        if "deepspectrum" in parts:
            bench_deepspectrum(args, out, dev)
        if "memory" in parts:
            bench_memory(args, out)
        if "faces" in parts:
            bench_faces(args, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
