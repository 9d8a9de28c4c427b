"""`abaw tune` targets (issue #7): search efficiency, overhead, --jobs 2, per-trial data set-up.

Parts (run one with --part, or all):
- efficiency: TPE + median pruning vs random sampling without pruning, N trials each, several
  seeds, on `--scale small` synthetic ERI with a small LSTM. Records every trial's epochs and
  value; reports each method's best-of-N and the epochs TPE+median spent to first reach
  random's best-of-N (target: at most 50% of random's epochs). Scores are fine under load.
- overhead: per trial, wall time outside `fit` (Optuna ask/tell, storage, data set-up, test
  predictions of kept trials, artifact uploads, retention) as a share of the trial.
- jobs: trials per hour of `abaw tune --jobs 2` vs `--jobs 1` (same study settings).
- setup: per-trial data set-up with data loaded once per worker (DataCache) vs a fresh load.

Speed parts print `os.getloadavg()`: figures taken while other work runs are noise.

    python benchmarks/bench_tune.py --part efficiency --trials 40 --seeds 0-9
    python benchmarks/bench_tune.py --part efficiency --seeds 0-9 --trial-seeds per-trial
    python benchmarks/bench_tune.py --part efficiency --seeds 0-9 --variant vizier-3 --work W
    python benchmarks/bench_tune.py --part overhead,jobs,setup --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SWEEP = """
[study]
track = "eri"
model = "lstm"
name = "{name}"

[data]
features = {features}
max_len = 8

[fixed]
"model.hidden" = 32
"model.layers" = 1
"model.head_dropout" = 0.3
"loss.beta" = 0.0
"train.optimizer" = "adam"
"train.lr" = 1e-3
"train.weight_decay" = 0.0
"train.scheduler" = "none"
"train.batch_size" = 64
"train.epochs" = {epochs}
"train.patience" = 0
"train.ema" = false
"train.clip_norm" = 0.0

[space]
"train.lr" = {{ type = "float", low = 1e-5, high = 3e-2, log = true }}
"model.hidden" = {{ type = "categorical", choices = [16, 32, 64] }}
"model.layers" = {{ type = "int", low = 1, high = 2 }}
"model.head_dropout" = {{ type = "float", low = 0.0, high = 0.5, step = 0.1 }}
"data.max_len" = {{ type = "categorical", choices = [4, 8] }}
"""


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.2f} {b:.2f} {c:.2f} on {os.cpu_count()} cores"


def make_data(work: Path, scale: str) -> Path:
    data = work / f"eri-{scale}"
    if not (data / "oracle.json").exists():
        from abaw.cli import main

        main(["synth", "--track", "eri", "--out", str(data), "--scale", scale, "--force"])
    return data


FEATURES = {  # small feature sets, so a trial takes seconds on a CPU
    "tiny": '{ eGeMAPS = "audio" }',  # tiny writes no FAUs
    "small": '{ FAUs = "visual", eGeMAPS = "audio" }',
}
SCALE = "small"


def sweep_file(work: Path, name: str, epochs: int) -> Path:
    path = work / f"{name}.toml"
    path.write_text(SWEEP.format(name=name, epochs=epochs, features=FEATURES[SCALE]))
    return path


def efficiency(
    work: Path,
    data: Path,
    trials: int,
    seeds: list[int],
    epochs: int,
    trial_seeds: str = "fixed",
    variant: str = "default",
) -> dict:
    """Studies are named by method, variant and seed: rerun with the same --work, finished
    ones (random search's, most often) are reused, as `--trials` counts the total."""
    from optuna.trial import TrialState
    from tune_variants import variant as tpe_variant

    from abaw.tune import median_warmup, run_study

    out: dict = {
        "trials": trials,
        "epochs_max": epochs,
        "trial_seeds": trial_seeds,
        "variant": variant,
        "median_warmup": median_warmup(epochs),
        "seeds": {},
    }
    for seed in seeds:
        res = {}
        for method, sampler, pruner in (
            ("tpe_median", "tpe", "median"),
            ("random", "random", "none"),
        ):
            t0 = time.perf_counter()
            tag = f"{method}-{variant}" if method == "tpe_median" else method
            with tpe_variant(variant):
                study = run_study(
                    sweep_file(work, f"eff-{tag}-{trial_seeds}-{seed}", epochs),
                    data,
                    trials=trials,
                    runs=work / "runs-eff",
                    sampler=sampler,
                    pruner=pruner,
                    seed=seed,
                    keep=1,
                    show_progress=False,
                    threads=1,
                    trial_seeds=trial_seeds,
                )
            rows = [
                {
                    "number": t.number,
                    "state": t.state.name,
                    "epochs": len(t.intermediate_values),
                    "value": max(t.intermediate_values.values()) if t.intermediate_values else None,
                }
                for t in study.trials
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            ]
            res[method] = {"rows": rows, "seconds": time.perf_counter() - t0}
        best_random = max(r["value"] for r in res["random"]["rows"] if r["value"] is not None)
        spent, reached = 0, None
        for r in res["tpe_median"]["rows"]:
            spent += r["epochs"]
            if reached is None and r["value"] is not None and r["value"] >= best_random:
                reached = spent
        summary = {
            "best_random": best_random,
            "best_tpe_median": max(
                r["value"] for r in res["tpe_median"]["rows"] if r["value"] is not None
            ),
            "epochs_random": sum(r["epochs"] for r in res["random"]["rows"]),
            "epochs_tpe_median": sum(r["epochs"] for r in res["tpe_median"]["rows"]),
            "epochs_tpe_to_reach_random_best": reached,
            "pruned": sum(r["state"] == "PRUNED" for r in res["tpe_median"]["rows"]),
        }
        summary["share_of_random"] = None if reached is None else reached / summary["epochs_random"]
        out["seeds"][seed] = {"summary": summary, **res}
        print(f"efficiency seed {seed}: {json.dumps(summary)}", flush=True)
    shares = [v["summary"]["share_of_random"] for v in out["seeds"].values()]
    met = sum(x is not None and x <= 0.5 for x in shares)
    out["met"] = f"{met} of {len(shares)} seeds"
    print(
        f"efficiency ({trial_seeds} trial seeds, variant {variant}, median warm-up "
        f"{out['median_warmup']} epochs): "
        f"TPE + median reached random's best-of-{trials} within 50 % of its epochs on "
        f"{out['met']}; shares: "
        + ", ".join("not reached" if x is None else f"{x:.0%}" for x in shares),
        flush=True,
    )
    return out


def overhead(work: Path, data: Path, trials: int, epochs: int) -> dict:
    from abaw import trials as T
    from abaw.tune import run_study

    res: dict = {"trials": trials, "load": load()}
    # keep=all: every trial pays test predictions + uploads (worst case); keep=1: typical.
    for label, keep in (("keep_all", trials), ("keep_1", 1)):
        study = run_study(
            sweep_file(work, f"overhead-{label}", epochs),
            data,
            trials=trials,
            runs=work / "runs-overhead",
            pruner="none",
            keep=keep,
            show_progress=False,
            threads=1,
        )
        walls = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials]
        outside = [
            w - t.user_attrs[T.TRIAL_SECONDS] for w, t in zip(walls, study.trials, strict=True)
        ]
        res[label] = {
            "median_trial_seconds": statistics.median(walls),
            "median_outside_fit_seconds": statistics.median(outside),
            "median_outside_share": statistics.median(
                o / w for o, w in zip(outside, walls, strict=True)
            ),
        }
    res["load_end"] = load()
    print(f"overhead: {json.dumps(res)}", flush=True)
    return res


def jobs(work: Path, data: Path, trials: int, epochs: int) -> dict:
    res = {}
    for n in (1, 2):
        sweep = sweep_file(work, f"jobs{n}", epochs)
        cmd = [sys.executable, "-m", "abaw", "tune", "--sweep", str(sweep), "--data", str(data)]
        cmd += ["--runs", str(work / f"runs-jobs{n}"), "--trials", str(trials), "--jobs", str(n)]
        cmd += ["--pruner", "none", "--sampler", "random", "--keep", "2"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       stdout=subprocess.DEVNULL)  # fmt: skip
        seconds = time.perf_counter() - t0
        res[f"jobs{n}"] = {"seconds": seconds, "trials_per_hour": trials * 3600 / seconds}
    res["speedup"] = res["jobs2"]["trials_per_hour"] / res["jobs1"]["trials_per_hour"]
    res["load"] = load()
    print(f"jobs: {json.dumps(res)}", flush=True)
    return res


def setup(data: Path, repeats: int) -> dict:
    import torch

    from abaw.sweep import build_configs, load_sweep
    from abaw.track import DataCache, get_track
    from abaw.train import run_sections

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        sweep = load_sweep(sweep_file(Path(tmp), "setup", 1))
    track = get_track("eri")
    cpu = torch.device("cpu")
    configs = [
        build_configs(
            sweep.resolve({"data.max_len": m}), run_sections(track, sweep.model), where="setup"
        )
        for m in (4, 8)
    ]
    cache = DataCache()
    first = cache.prepare(track, data, "lstm", configs[0], cpu)[1]
    once = [cache.prepare(track, data, "lstm", configs[i % 2], cpu)[1] for i in range(repeats)]
    fresh = []
    for i in range(repeats):
        t0 = time.perf_counter()
        loaded = track.load_data(data, "lstm", configs[i % 2])  # parsed-CSV cache on disk
        track.prepare(data, "lstm", configs[i % 2], cpu, data=loaded)
        fresh.append(time.perf_counter() - t0)
    res = {
        "first_load_seconds": first,
        "loaded_once_median_seconds": statistics.median(once),
        "fresh_load_median_seconds": statistics.median(fresh),
        "load": load(),
    }
    print(f"setup: {json.dumps(res)}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", default="efficiency,overhead,jobs,setup")
    ap.add_argument("--scale", default="small", choices=("tiny", "small"))
    ap.add_argument("--trials", type=int, default=40, help="trials per study (efficiency)")
    ap.add_argument("--seeds", default="0,1,2", help="comma list, or a range like 0-9")
    ap.add_argument("--trial-seeds", default="fixed", choices=("fixed", "per-trial"))
    ap.add_argument("--epochs", type=int, default=15, help="max epochs per trial")
    ap.add_argument(
        "--variant",
        default="default",
        help="efficiency: a TPE / pruner variant of benchmarks/tune_variants.py (default: abaw's)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to prove the script works")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temp one)")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-tune-"))
    work.mkdir(parents=True, exist_ok=True)
    scale = "tiny" if args.quick else args.scale
    global SCALE
    SCALE = scale
    data = make_data(work, scale)
    parts = args.part.split(",")
    results: dict = {"scale": scale, "start": load()}
    print(f"bench_tune on {scale} ERI in {work}; {load()}", flush=True)
    if "efficiency" in parts:
        if "-" in args.seeds:
            lo, hi = map(int, args.seeds.split("-"))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(s) for s in args.seeds.split(",")]
        n = 6 if args.quick else args.trials
        results["efficiency"] = efficiency(
            work,
            data,
            n,
            seeds[:1] if args.quick else seeds,
            args.epochs,
            args.trial_seeds,
            args.variant,
        )
    if "overhead" in parts:
        results["overhead"] = overhead(work, data, 3 if args.quick else 10, args.epochs)
    if "jobs" in parts:
        results["jobs"] = jobs(work, data, 4 if args.quick else 12, args.epochs)
    if "setup" in parts:
        results["setup"] = setup(data, 5)
    results["end"] = load()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
