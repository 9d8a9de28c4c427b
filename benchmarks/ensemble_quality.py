"""Does the ensemble of two studies' top trials beat the best single trial on the honest estimate?

Runs after `abaw tune` (the issue's third target, on `--scale small` synthetic data of both
tracks): for each method it builds the ensemble of the top-K kept trials of the named studies
(nothing is written unless --write) and prints one Markdown table row per method: best single
and ensemble on devel (the selection set) and on the honest cross-fitted halves, the honest
gain, and whether it is positive.

    python benchmarks/ensemble_quality.py --track eri --studies eri-fusion-mean,eri-pooled \\
        --runs demo/runs --data demo/data/eri
    python benchmarks/ensemble_quality.py --track expr --studies expr-fusion,expr-regnet \\
        --storage postgresql://user@host/abaw --top-k 5 --methods mean,greedy
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def evaluate(
    track: str,
    studies: list[str],
    *,
    storages: list[str | None],
    runs: str,
    top_k: int,
    methods: list[str],
    seed: int = 0,
    write: bool = False,
    data: str | None = None,
) -> list[dict]:
    """One result dict per method (scores of the manifest, plus method and seconds).

    With `data` (a synthetic set that keeps its test truth in `.oracle/`), each row also
    has the test score of the ensemble and of the best single member (by devel).
    """
    from abaw.demo import synthetic_test_score
    from abaw.ensemble import build_ensemble, collect_members, stream_test

    members = collect_members(track, studies, top_k=top_k, storages=storages, runs=runs)
    truth = Path(data) if data else None
    single_test: dict[str, float | None] = {}
    rows = []
    for method in methods:
        t = time.perf_counter()
        res = build_ensemble(
            track,
            name=f"quality-{method}",
            members=members,
            method=method,
            runs=runs,
            seed=seed,
            write=write,
            force=True,
        )
        sc = res.manifest["scores"]
        rows.append(
            {
                "method": method,
                "used": res.manifest["method_used"],
                "members": len(members),
                "seconds": time.perf_counter() - t,
                **{k: v for k, v in sc.items() if k != "honest_halves"},
                "gain": sc["honest_ensemble"] - sc["honest_best_single"],
            }
        )
        if truth is not None:
            best = sc["best_single_member"]
            if best not in single_test:
                mem = next(m for m in members if m.name == best)
                single_test[best] = synthetic_test_score(track, truth, mem.load_test())
            test = res.test if res.test is not None else stream_test(track, members, res.pipeline)
            rows[-1]["test_best_single"] = single_test[best]
            rows[-1]["test_ensemble"] = synthetic_test_score(track, truth, test)
    return rows


def table(track: str, studies: list[str], rows: list[dict]) -> str:
    """The Markdown table recorded in docs/benchmarks.md."""
    out = [
        f"ensemble quality, {track}, studies {', '.join(studies)} (load {os.getloadavg()[0]:.2f})",
        "",
        "| method (used) | members | best single devel | ensemble devel | honest best single "
        "| honest ensemble | honest gain | wins | test: best single / ensemble |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tests = (r.get("test_best_single"), r.get("test_ensemble"))
        test = " / ".join("-" if t is None else f"{t:.4f}" for t in tests)
        out.append(
            f"| {r['method']} ({r['used']}) | {r['members']} | {r['best_single_devel']:.4f} "
            f"({r['best_single_member']}) | {r['ensemble_devel']:.4f} | "
            f"{r['honest_best_single']:.4f} | {r['honest_ensemble']:.4f} | {r['gain']:+.4f} | "
            f"{'yes' if r['gain'] > 0 else 'no'} | {test} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--track", required=True, choices=("eri", "expr"))
    ap.add_argument("--studies", required=True, help="comma-separated study names")
    ap.add_argument("--storage", action="append", help="Optuna storage URL (repeatable)")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument(
        "--methods", default=None, help="default: mean,greedy,stack (ERI) / mean,greedy"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="also write runs/ensembles/quality-*")
    ap.add_argument(
        "--data", default=None, help="synthetic data set: also score test on its hidden truth"
    )
    args = ap.parse_args(argv)
    studies = [s.strip() for s in args.studies.split(",") if s.strip()]
    methods = (
        args.methods or ("mean,greedy,stack" if args.track == "eri" else "mean,greedy")
    ).split(",")
    rows = evaluate(
        args.track,
        studies,
        storages=args.storage or [None],
        runs=args.runs,
        top_k=args.top_k,
        methods=methods,
        seed=args.seed,
        write=args.write,
        data=args.data,
    )
    print(table(args.track, studies, rows))
    return 0 if all(r["gain"] > 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
