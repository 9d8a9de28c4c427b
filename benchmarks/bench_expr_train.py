"""Expr training and inference speed at Aff-Wild2 scale, streamed from the float16 feature store.

Builds an Aff-Wild2-sized store directly (548 annotation-level videos, ~2.7 M frames,
the paper's three backbones: 512 + 512 + 888 = 1912 columns, float16 = ~10 GB) with the
loader's own `StoreWriter`/`FeatureStore`, wraps it in an `ExprData`, and measures with the
[fixed] settings of sweeps/expr-fusion.toml:

1. training: optimiser steps on windows streamed chunk by chunk (frames/s, peak RSS);
2. inference: `predict(model, "test")` over the full 1,022,656-frame test list
   (or a measured subset, extrapolated, with --test-videos);
3. the loader alone against a naive loader that `np.load`s each backbone's per-video .npy
   for every window (the baseline, same process, same windows, same batch size).

    nice -n 10 python benchmarks/bench_expr_train.py --root /tmp/abaw-bench/expr-full

Feature values are random (speed does not depend on them); labels are random segments.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from abaw.expr.data import ExprData
from abaw.expr.store import FeatureStore, StoreWriter
from abaw.expr.track import TRACK, ExprTask
from abaw.sweep import build_configs, load_sweep
from abaw.train import run_sections

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = {"IRv1-VGGFace2": 512, "IRv1-CASIA": 512, "RegNetY-1.6GF": 888}
TEST_FRAMES = 1_022_656


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def video_lengths(rng: np.random.Generator, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Aff-Wild2-like frame counts: 248 train, 72 devel, 228 test videos; test sums to 1,022,656."""
    counts = {"train": 248, "devel": 72, "test": 228}
    n, split = [], []
    for s, k in counts.items():
        x = np.clip(rng.lognormal(np.log(4400), 0.45, k), 1500, 20000)
        if s == "test":
            x = x * TEST_FRAMES / x.sum()
        x = np.maximum(10, (x * fraction).astype(np.int64))
        if s == "test":
            x[np.argmax(x)] += int(TEST_FRAMES * fraction) - x.sum()
        n.append(x)
        split += [s] * k
    return np.concatenate(n), np.array(split)


def build(root: Path, fraction: float, seed: int) -> ExprData:
    """Write (once) the store and return an ExprData over it."""
    rng = np.random.default_rng(seed)
    n, split = video_lengths(rng, fraction)
    offsets = np.concatenate([[0], np.cumsum(n)])
    total, width = int(offsets[-1]), sum(BACKBONES.values())
    path = root / "store.npy"
    if not path.is_file() or FeatureStore(path).shape != (total, width):
        root.mkdir(parents=True, exist_ok=True)
        block = rng.standard_normal((16384, width)).astype(np.float32)
        writer = StoreWriter(path, (total, width))
        for a in range(0, total, len(block)):
            writer.write(block[: min(len(block), total - a)].copy())
        writer.close()
    seg = rng.integers(0, 8, total // 70 + 1)  # classes persisting ~70 frames
    labels = np.repeat(seg, 70)[:total].astype(np.int8)
    labels[offsets[int((split != "test").sum())] :] = -1
    videos = [f"video{i}" for i in range(len(n))]
    test = np.flatnonzero(split == "test")
    tv = np.repeat(test, n[test])
    tf = np.concatenate([np.arange(1, k + 1) for k in n[test]])
    return ExprData(
        root,
        list(BACKBONES),
        dict(BACKBONES),
        videos,
        split,
        offsets,
        labels,
        np.ones(total, bool),
        FeatureStore(path),
        {videos[v]: tf[tv == v] for v in test},
        (tv, tf),
    )


def naive_batches(files: dict[int, list[Path]], windows, local, order, batch_size: int):
    """The baseline: for every window, np.load each backbone's whole .npy of its video."""
    for i in range(0, len(order), batch_size):
        xs = []
        for w in order[i : i + batch_size]:
            v, start = int(windows.video[w]), int(local[w])
            feats = [np.load(f, allow_pickle=False) for f in files[v]]
            x = np.concatenate(feats, axis=1)
            idx = np.minimum(np.arange(start, start + windows.size), len(x) - 1)
            xs.append(x[idx])
        yield torch.from_numpy(np.stack(xs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--root", default="/tmp/abaw-bench/expr-full", help="where the store is written"
    )
    ap.add_argument(
        "--fraction", type=float, default=1.0, help="fraction of the Aff-Wild2 frame count"
    )
    ap.add_argument("--steps", type=int, default=60, help="training steps to time")
    ap.add_argument("--loader-batches", type=int, default=20, help="batches to time per loader")
    ap.add_argument(
        "--test-videos", type=int, default=0, help="predict only this many test videos (0 = all)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the store afterwards")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    data = build(Path(args.root), args.fraction, 0)
    build_s = time.perf_counter() - t0
    sweep = load_sweep(ROOT / "sweeps" / "expr-fusion.toml")
    configs = build_configs(sweep.resolve(), run_sections(TRACK, "fusion"), where="expr-fusion")
    task = ExprTask(data, "fusion", configs, "cpu")
    rss_setup = peak_rss_gib()
    cfg, bs, size = configs["train"], configs["train"].batch_size, configs["data"].window
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(0)

    # 1. Training steps streamed from the store.
    model.train()
    frames = 0
    batches = task.train_batches(epoch=1, generator=g)
    next(batches)  # first chunk buffer read outside the timing
    t = time.perf_counter()
    for _, batch in zip(range(args.steps), batches, strict=False):
        loss = task.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        frames += int((~batch["pad"]).sum())
    train_s = time.perf_counter() - t
    train_fps = frames / train_s
    epoch_frames = int(task.windows["train"].length.sum())
    rss_train = peak_rss_gib()

    # 2. Inference over the test list (all of it, or a subset extrapolated).
    model.eval()
    if args.test_videos:
        keep = np.isin(
            task.windows["test"].video, np.flatnonzero(data.split == "test")[: args.test_videos]
        )
        task.windows["test"] = task.windows["test"].take(np.flatnonzero(keep))
        task.chunks["test"] = task.chunks["test"][keep]
    t = time.perf_counter()
    probs = task.frame_probs(model, "test")
    infer_s = time.perf_counter() - t
    measured = probs.shape[0]  # every frame of the (chosen) test videos
    infer_fps = measured / infer_s
    rss_infer = peak_rss_gib()

    # 3. Loader only: streamed chunks vs the naive per-window np.load, same windows.
    win = task.windows["train"]
    vids = np.unique(win.video)[:12]
    naive_dir = Path(args.root) / "naive"
    files: dict[int, list[Path]] = {}
    for v in vids:
        x = data.store.read(int(data.offsets[v]), int(data.offsets[v + 1]))
        files[int(v)] = []
        for b in BACKBONES:
            f = naive_dir / b / f"{v}.npy"
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, x[:, data.backbone_columns(b)])  # float32, as users' per-video files are
            files[int(v)].append(f)
    sub_idx = np.flatnonzero(np.isin(win.video, vids))
    sub = win.take(sub_idx)
    local = sub.row - data.offsets[sub.video]
    order = np.random.default_rng(0).permutation(len(sub))[: args.loader_batches * bs]
    t = time.perf_counter()
    n_naive = sum(len(b) for b in naive_batches(files, sub, local, order, bs))
    naive_wps = n_naive / (time.perf_counter() - t)
    stream = task.train_batches(epoch=2, generator=torch.Generator().manual_seed(1))
    t = time.perf_counter()
    n_stream = sum(len(b["x"]) for _, b in zip(range(args.loader_batches), stream, strict=False))
    stream_wps = n_stream / (time.perf_counter() - t)

    test_total = TEST_FRAMES * args.fraction
    print(
        f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, no GPU, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); load average at the end "
        f"{os.getloadavg()[0]:.1f} (the CPU was shared). Store: {data.store.shape[0]:,} frames x "
        f"{data.store.shape[1]} float16 ({data.store.shape[0] * data.store.shape[1] * 2 / 2**30:.1f} GiB), "
        f"fraction {args.fraction:g} of Aff-Wild2, written in {build_s:.0f} s. "
        f"Settings: sweeps/expr-fusion.toml [fixed] (window {size}, batch {bs} windows).\n"
    )
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| training, frames/s (real frames in windows, fwd+bwd+AdamW) | {train_fps:,.0f} ({args.steps} steps, {train_s:.1f} s) |"
    )
    print(
        f"| training epoch (train windows: {epoch_frames:,} frames), estimated | {epoch_frames / train_fps / 60:.1f} min |"
    )
    print(f"| inference, test frames/s (overlapping windows averaged) | {infer_fps:,.0f} |")
    how = "measured" if not args.test_videos else f"extrapolated from {measured:,} frames"
    print(
        f"| time to predict the {test_total:,.0f}-frame test list ({how}) | {test_total / infer_fps / 60:.1f} min |"
    )
    print(
        f"| peak RSS after setup / training / inference | {rss_setup:.2f} / {rss_train:.2f} / {rss_infer:.2f} GiB |"
    )
    print(f"| loader only: streamed chunks, windows/s | {stream_wps:,.0f} |")
    print(f"| loader only: naive np.load per window, windows/s | {naive_wps:,.1f} |")
    print(f"| ratio streamed / naive | {stream_wps / naive_wps:,.0f}x |")
    print(f"| peak RSS at the end | {peak_rss_gib():.2f} GiB |")
    shutil.rmtree(naive_dir, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(args.root, ignore_errors=True)


if __name__ == "__main__":
    main()
