"""Expr data benchmark: synth, first load (store build), cached load, and a windowed pass.

Each phase runs in its own subprocess so its peak RSS is its own. Baselines measured in the
same command: reading the raw feature files once (np.load, what any loader must at least do)
for the build time, and the same windowed pass through an np.memmap for peak RSS.

    nice -n 10 python benchmarks/bench_expr_data.py --scale full --features RegNetY-1.6GF
    python benchmarks/bench_expr_data.py --scale small          # quick check

Prints a markdown table for docs/benchmarks.md. Data lives under --out and is deleted at the
end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _rss_gib() -> float:
    """Peak RSS of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _phase(name: str, args: argparse.Namespace) -> dict:
    from abaw.expr.data import load_expr
    from abaw.expr.synth import write_expr

    data = Path(args.out) / "data"
    feats = args.features.split(",") if args.features else None
    t = time.perf_counter()
    res: dict = {}
    if name == "synth":
        write_expr(data, scale=args.scale, seed=0, backbones=feats, show_progress=True)
    elif name == "raw_read":  # baseline: read every feature file once
        nbytes = 0
        for f in sorted((data / "features").rglob("*.npy")):
            nbytes += np.load(f, allow_pickle=False).nbytes
        res["bytes"] = nbytes
    elif name in ("build", "cached"):
        d = load_expr(data, feats, use_cache=name == "cached", show_progress=True)
        res["store_shape"] = list(d.store.shape)
    elif name in ("pass", "pass_memmap"):
        d = load_expr(data, feats)
        rng = np.random.default_rng(0)
        mm = np.load(d.store.path, mmap_mode="r") if name == "pass_memmap" else None
        rows = 0
        total = 0.0
        for v in rng.permutation(len(d.videos)):
            sl = d.video_slice(int(v))
            for s in range(sl.start, sl.stop, 64):
                e = min(s + 64, sl.stop)
                w = d.store.read(s, e) if mm is None else np.asarray(mm[s:e], np.float32)
                total += float(w[0, 0])  # use the data so nothing is optimised away
                rows += e - s
        assert rows == d.store.shape[0]
        res["rows"] = rows
    res["seconds"] = time.perf_counter() - t
    res["peak_rss_gib"] = _rss_gib()
    res["children_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return res


def _run(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--out", args.out, "--scale", args.scale]
    if args.features:
        cmd += ["--features", args.features]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _size_gib(path: Path, pattern: str) -> float:
    return sum(p.stat().st_size for p in path.rglob(pattern)) / 2**30


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", default="/tmp/abaw-bench/expr", help="working folder (deleted at the end)"
    )
    p.add_argument("--scale", default="full", choices=("tiny", "small", "full"))
    p.add_argument("--features", help="comma-separated backbones (default: all three)")
    p.add_argument("--keep", action="store_true", help="keep the data afterwards")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        print(json.dumps(_phase(args.phase, args)))
        return
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    try:
        r = {
            n: _run(n, args)
            for n in ("synth", "raw_read", "build", "cached", "pass", "pass_memmap")
        }
        data = out / "data"
        feat_gib = _size_gib(data / "features", "*.npy")
        store_gib = _size_gib(data / ".abaw_cache", "features.f16.npy")
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    rows = r["pass"]["rows"]
    print(f"\n### Expr data (scale {args.scale}, backbones {args.features or 'all'})\n")
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, no GPU; "
        f"{rows:,} frames, store {r['build']['store_shape']}."
    )
    print(
        f"Feature files {feat_gib:.2f} GiB (float32 .npy); store {store_gib:.2f} GiB (float16).\n"
    )
    print("| phase | seconds | peak RSS (GiB) | ratio |")
    print("|---|---:|---:|---|")
    syn = r["synth"]
    print(
        f"| synth | {syn['seconds']:.1f} | {syn['peak_rss_gib']:.2f} (workers {syn['children_peak_rss_gib']:.2f}) | |"
    )
    base = r["raw_read"]["seconds"]
    print(
        f"| baseline: np.load every feature file once | {base:.1f} | {r['raw_read']['peak_rss_gib']:.2f} | 1.00x time |"
    )
    b = r["build"]
    print(
        f"| first load (store build) | {b['seconds']:.1f} | {b['peak_rss_gib']:.2f} | {b['seconds'] / base:.2f}x raw read time |"
    )
    c = r["cached"]
    print(
        f"| second load (cached) | {c['seconds']:.3f} | {c['peak_rss_gib']:.2f} | {c['seconds'] / b['seconds']:.4f}x build time |"
    )
    pm = r["pass_memmap"]
    ps = r["pass"]
    print(
        f"| baseline: windows of 64 via np.memmap, random video order | {pm['seconds']:.1f} | {pm['peak_rss_gib']:.2f} | 1.00x RSS |"
    )
    print(
        f"| windows of 64 via FeatureStore.read, random video order | {ps['seconds']:.1f} | {ps['peak_rss_gib']:.2f} | "
        f"{ps['peak_rss_gib'] / pm['peak_rss_gib']:.3f}x memmap RSS, {rows / ps['seconds'] / 1e6:.2f} M frames/s |"
    )


if __name__ == "__main__":
    main()
