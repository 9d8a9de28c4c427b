"""What a faster training step buys a user: `abaw demo` at its fixed budget, before vs after.

Runs `abaw.demo.run_demo` (the code `abaw demo` runs) for git revision REV (a worktree in a
temp folder) and for this checkout, one track at a time, alternating versions (ref then
current, per track), each in its own subprocess on fresh data of the same seed, with the
same wall-clock budget. The table gives, per tuned variant, the trials the budget finished
(complete + pruned), the best devel score, and the track's submitted devel score (the ensemble's or, where it lost,
the best single trial's), so "faster" shows up as more
trials and (not always) a better score. The synthetic set's test labels are known (its
oracle), so the submitted predictions' TEST score is printed too. Nothing else should run meanwhile: the load
average is printed beside each run.

    python benchmarks/bench_demo.py --ref REV [--minutes 4] [--tracks eri,expr] [--seed 0] [--scale tiny]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def worker(out: str, track: str, minutes: float, seed: int, scale: str) -> None:
    """Run the demo for one track with the abaw importable here; one JSON line on stdout."""
    from abaw.demo import run_demo

    t0 = time.perf_counter()
    (res,) = run_demo(out, tracks=(track,), minutes=minutes, seed=seed, scale=scale)
    variants = [dataclasses.asdict(v) for v in res.variants]
    summary = {
        "seconds": time.perf_counter() - t0,
        "variants": variants,
        "ensemble": res.ensemble,
        "verdict": res.verdict,
        "submitted_test": res.submitted_test,
        "valid": res.valid,
    }
    print(json.dumps(summary, default=str))


def _run(src: Path, out: Path, track: str, minutes: float, seed: int, scale: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(out), track]
    cmd += ["--minutes", str(minutes), "--seed", str(seed), "--scale", scale]
    done = subprocess.run(cmd, env=env, cwd=src, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"demo of {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ref", metavar="REV", required=False, help="the 'before' git revision")
    p.add_argument("--minutes", type=float, default=4.0, help="tuning budget per track run")
    p.add_argument("--tracks", default="eri,expr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", choices=("small", "tiny"), default="small", help="tiny: a smoke test")
    p.add_argument("--worker", nargs=2, metavar=("OUT", "TRACK"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker[0], a.worker[1], a.minutes, a.seed, a.scale)
    if not a.ref:
        p.error("--ref REV is required")
    sys.path.insert(0, str(HERE))
    from bench_step import _worktree, cpu_model

    versions = {f"ref {a.ref}": _worktree(a.ref), "current": REPO}
    root = Path(tempfile.mkdtemp(prefix="abaw-demo-bench-"))
    print(f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; budget "
          f"{a.minutes:g} min per track run; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    results: dict[tuple[str, str], dict] = {}
    for track in a.tracks.split(","):
        for i, (v, src) in enumerate(versions.items()):
            r = _run(src, root / f"{track}-{i}", track, a.minutes, a.seed, a.scale)
            results[(track, v)] = r
            print(f"{track} {v}: {r['seconds']:.0f} s; load average {os.getloadavg()[0]:.2f}",
                  flush=True)  # fmt: skip
    print(
        f"{'track':6} {'version':14} {'variant':22} {'trials':>6} {'pruned':>6} {'best devel':>10}"
    )
    for (track, v), r in results.items():
        for var in r["variants"]:
            best = "-" if var["best"] is None else f"{var['best']:.4f}"
            n = var["complete"] + var["pruned"]
            print(f"{track:6} {v:14} {var['study']:22} {n:6d} {var['pruned']:6d} {best:>10}")
        sub = r["submitted_test"]
        kind = (r.get("verdict") or {}).get("written", "?")
        print(f"{track:6} {v:14} {'submitted: ' + str(kind):22} {'':6} {'':6} {'':>10} "
              f"test {'-' if sub is None else f'{sub:.4f}'}")  # fmt: skip


if __name__ == "__main__":
    main()
