"""Memory and time of ensembling many full-scale Expr members (test: 1,022,656 frames x 8).

Writes --members member folders (predictions-devel.npz + predictions-test.npz, the one
format) with synthetic probabilities of the real sizes, then runs `build_ensemble` on them
as `abaw ensemble --predictions ...` would, and reports:
  - one member's test arrays (values + keys) in MB: the yardstick,
  - the peak RSS above the pre-ensemble baseline while the test side is streamed and
    written (target: within 2x of one member's test arrays),
  - the peak RSS of the devel phase (all members' devel values are held: devel is small),
  - seconds per member on the test side (read + align + add), and the phases' wall times,
with `os.getloadavg()` beside every figure. Peaks come from the kernel's VmHWM, reset
between phases (`/proc/self/clear_refs`, Linux).

    python benchmarks/bench_ensemble.py                      # 20 members, full size
    python benchmarks/bench_ensemble.py --members 3 --test-frames 50000 --devel-frames 20000
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abaw.expr import CLASSES  # noqa: E402
from abaw.predictions import Predictions  # noqa: E402


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def status(field: str) -> float:
    """A /proc/self/status field in MB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def keys_for(frames: int, videos: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.gamma(2.0, 1.0, videos)
    n = np.maximum(1, np.floor(w / w.sum() * frames)).astype(int)
    n[np.argmax(n)] += frames - n.sum()
    names = np.array(
        [f"{seed}{i:03d}-30-1920x1080" + ("_right" if i % 9 == 0 else "") for i in range(videos)]
    )
    return np.repeat(names, n), np.concatenate([np.arange(1, k + 1) for k in n])


def write_members(root: Path, m: int, test_frames: int, devel_frames: int) -> list[Path]:
    tv, tf = keys_for(test_frames, 228, 1)
    dv, df = keys_for(devel_frames, 72, 2)
    rng = np.random.default_rng(0)
    # Sticky labels (segments of 50 frames) so smoothing has something to find.
    labels = np.repeat(
        rng.choice(8, size=devel_frames // 50 + 1, p=[0.3, 0.05, 0.03, 0.03, 0.2, 0.1, 0.09, 0.2]),
        50,
    )[:devel_frames]
    folders = []
    for i in range(m):
        r = np.random.default_rng(100 + i)
        z = (
            1.2 * np.eye(8, dtype=np.float32)[labels]
            + r.standard_normal((devel_frames, 8), np.float32) * 1.5
        )
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        dev = Predictions(
            "expr", "devel", {"video": dv, "frame": df}, p, CLASSES, labels.astype(np.int64)
        )
        t = r.random((test_frames, 8), np.float32)
        t /= t.sum(1, keepdims=True)
        test = Predictions("expr", "test", {"video": tv, "frame": tf}, t, CLASSES)
        d = root / f"m{i:02d}"
        d.mkdir(parents=True, exist_ok=True)
        dev.save(d / "predictions-devel.npz")
        test.save(d / "predictions-test.npz")
        folders.append(d)
        del dev, test, p, z, t
    return folders


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--test-frames", type=int, default=1_022_656)
    ap.add_argument(
        "--devel-frames", type=int, default=342_000, help="full-scale synth devel: 72 videos"
    )
    ap.add_argument("--method", default="mean", choices=("mean", "greedy"))
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = ap.parse_args()
    from abaw.ensemble import build_ensemble, collect_members

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-ensemble-"))
    try:
        t = time.perf_counter()
        folders = write_members(work / "members", args.members, args.test_frames, args.devel_frames)
        print(f"wrote {args.members} members in {time.perf_counter() - t:.1f} s   [{load()}]")
        gc.collect()
        one = Predictions.load(folders[0] / "predictions-test.npz")
        one_mb = (one.values.nbytes + sum(v.nbytes for v in one.keys.values())) / 2**20
        print(
            f"one member's test arrays: {one_mb:.0f} MB (values {one.values.nbytes / 2**20:.0f} MB, "
            f"keys {(one_mb - one.values.nbytes / 2**20):.0f} MB)   [{load()}]"
        )
        del one
        gc.collect()
        base = status("VmRSS")
        reset_peak()
        t0 = time.perf_counter()
        members = collect_members("expr", files=folders)
        t_collect = time.perf_counter() - t0
        per_member: list[float] = []
        stream: dict[str, float] = {}
        for m in members:
            orig = m.load_test

            def timed(orig=orig):
                if not stream:  # first test read: the devel phase is over
                    stream["devel_peak"] = status("VmHWM")
                    stream["start_rss"] = status("VmRSS")
                    stream["t"] = time.perf_counter()
                    reset_peak()
                per_member.append(time.perf_counter())
                return orig()

            m.load_test = timed
        build_ensemble(
            "expr",
            name="bench",
            members=members,
            method=args.method,
            runs=work / "runs",
            force=True,
        )
        t_total = time.perf_counter() - t0
        peak = status("VmHWM")
        t_stream = time.perf_counter() - stream["t"]
        gaps = np.diff(per_member + [time.perf_counter()])
        print(f"baseline RSS before ensembling: {base:.0f} MB   [{load()}]")
        print(
            f"devel phase ({args.members} members' devel held, fit + honest halves): peak "
            f"{stream['devel_peak'] - base:+.0f} MB over baseline; collect {t_collect:.1f} s   [{load()}]"
        )
        over = peak - stream["start_rss"]
        print(
            f"test side (stream {args.members} members, post-process, write): peak {over:+.0f} MB "
            f"over the RSS when it began = {over / one_mb:.2f}x one member (target <= 2x); "
            f"whole run peak {peak - base:+.0f} MB over baseline   [{load()}]"
        )
        print(
            f"test side time: {t_stream:.1f} s; per member {np.median(gaps[:-1]):.2f} s median "
            f"(read + align + add); last step incl. post-processing and writing "
            f"{gaps[-1]:.1f} s   [{load()}]"
        )
        print(f"build_ensemble total: {t_total:.1f} s ({args.method})   [{load()}]")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
