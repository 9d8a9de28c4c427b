"""Benchmark: synthesise ERI data, then time the first (CSV) load against the cached load.

Each stage runs in its own subprocess so each peak RSS is its own (the main
process's ru_maxrss; parallel workers are listed separately). Target: the
cached load is at least 20x faster than the first load.

    nice -n 10 python benchmarks/bench_eri_load.py --scale full    # ~3 GB under /tmp/abaw-bench/A
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

PAPER = ["DeepSpectrum", "PosterV2-ViT"]


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def stage(name: str, root: Path, scale: str, seed: int) -> dict:
    """Run one stage in this process and return its measurements."""
    from abaw.eri.data import load_eri, parse_feature_set, read_tables

    t0 = time.perf_counter()
    info: dict = {}
    if name == "synth":
        from abaw.eri.synth import write_eri

        oracle = write_eri(root, scale=scale, seed=seed, features=PAPER)
        info["gb_written"] = oracle["bytes_written"] / 1e9
        info["samples"] = sum(oracle["counts"].values())
    elif name in ("first", "cached"):
        data = load_eri(root, PAPER, use_cache=True)
        info["steps"] = {k: int(v.values.shape[0]) for k, v in data.features.items()}
        info["gb_arrays"] = sum(v.values.nbytes for v in data.features.values()) / 1e9
        info["seconds_load"] = time.perf_counter() - t0
        # Cached values are memory-mapped: also time reading every value once.
        info["checksum"] = float(
            sum(v.values.sum(dtype=np.float64) for v in data.features.values())
        )
    elif name.startswith("parse-"):  # parse one feature set with a given backend and n_jobs
        _, backend, jobs = name.split("-")
        ids, _, _, _ = read_tables(root, "muse")
        parse_feature_set(root / "feats" / PAPER[0], ids, n_jobs=int(jobs), backend=backend)
    info["seconds"] = time.perf_counter() - t0
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)  # reap the workers so RUSAGE_CHILDREN counts them
    info["peak_rss_mb"] = _peak_mb(resource.RUSAGE_SELF)
    info["workers_peak_rss_mb"] = _peak_mb(resource.RUSAGE_CHILDREN)
    return info


def run_stage(name: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--stage",
        name,
        "--out",
        str(args.out),
        "--scale",
        args.scale,
        "--seed",
        str(args.seed),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"stage {name} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scale", choices=("tiny", "small", "full"), default="full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("/tmp/abaw-bench/A/eri"),
        help="data folder (deleted afterwards unless --keep)",
    )
    p.add_argument("--keep", action="store_true", help="keep the data set and its cache")
    p.add_argument(
        "--backends",
        action="store_true",
        help="also time parsing DeepSpectrum with loky vs threads vs one job",
    )
    p.add_argument("--stage", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, args.out, args.scale, args.seed)))
        return

    if args.out.exists():
        shutil.rmtree(args.out)
    results = {"synth": run_stage("synth", args)}
    results["first"] = run_stage("first", args)  # no cache yet: parse every CSV, write the cache
    results["cached"] = run_stage("cached", args)
    if args.backends:
        for name in ("parse-loky-1", "parse-loky-2", "parse-threading-2"):
            results[name] = run_stage(name, args)
    first, cached, syn = results["first"], results["cached"], results["synth"]
    ratio = first["seconds_load"] / cached["seconds_load"]
    ratio_read = first["seconds_load"] / cached["seconds"]

    print(f"\n### ERI load ({args.scale} scale, {syn['samples']} samples, {' + '.join(PAPER)})\n")
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, no GPU; "
        f"Python {platform.python_version()}.\n"
    )
    print("| stage | seconds | peak RSS main (MB) | peak RSS workers (MB) | notes |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| synth (write CSVs) | {syn['seconds']:.1f} | {syn['peak_rss_mb']:.0f} | {syn['workers_peak_rss_mb']:.0f} | {syn['gb_written']:.2f} GB of CSV |"
    )
    print(
        f"| first load (parse + standardise + write cache) | {first['seconds_load']:.1f} | {first['peak_rss_mb']:.0f} | {first['workers_peak_rss_mb']:.0f} | arrays {first['gb_arrays']:.2f} GB float32 |"
    )
    print(
        f"| cached load (values memory-mapped) | {cached['seconds_load']:.2f} | - | - | pages read on first use |"
    )
    print(
        f"| cached load + read every value once | {cached['seconds']:.2f} | {cached['peak_rss_mb']:.0f} | {cached['workers_peak_rss_mb']:.0f} | |"
    )
    for name in ("parse-loky-1", "parse-loky-2", "parse-threading-2"):
        if name in results:
            r = results[name]
            print(
                f"| parse {PAPER[0]} only, {name[6:]} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['workers_peak_rss_mb']:.0f} | |"
            )
    same = abs(first["checksum"] - cached["checksum"]) <= 1e-6 * max(1.0, abs(first["checksum"]))
    verdict = "meets" if ratio >= 20 else "MISSES"
    print(
        f"\nCached load is **{ratio:.1f}x** faster than the first load ({verdict} the >= 20x target); "
        f"**{ratio_read:.1f}x** counting one full read of the mapped values. Same values: {same}."
    )
    if not args.keep:
        shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
