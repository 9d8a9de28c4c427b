"""`abaw demo`: the whole pipeline on built-in synthetic data, in minutes on a laptop CPU.

synth (both tracks, the real layouts) -> tune two variants per track with pruning ->
ensemble their best trials -> submit -> validate -> report, then one summary table. Every
stage is the same library call the CLI makes, so the demo is also the end-to-end check that
the stages fit together. Only the demo knows the synthetic test truth (the generator hides it
in `.oracle/`), so only the demo can print a test score.

The tuning budget is wall-clock (`--minutes`, split between the variants); each trial is
kept small (few epochs, narrow models) so several fit in the budget on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abaw.console import console, escape
from abaw.errors import AbawError

# Per variant: sweep file, the settings pinned for a CPU demo (left out of the search), and
# the share of the track's tuning budget. Pins shrink trials, they do not change the method.
VARIANTS: dict[str, list[tuple[str, dict[str, Any], float]]] = {
    "eri": [
        (  # the recommended fusion (masked-mean read-out); width 32 so a trial takes seconds
            "eri-fusion-mean",
            {
                "model.embed_dim": 32,
                "model.readout": "mean",
                "train.epochs": 15,
                "train.patience": 4,
            },
            0.6,
        ),
        (  # a different model on the same features: the ensemble's second opinion. Measured
            # on the demo data: +0.0015 to +0.0064 honest gain with the fusion, against -0.0002
            # to +0.0036 with eri-lstm, whose visual-only trials are 0.06 weaker
            # (docs/benchmarks.md)
            "eri-pooled",
            {"train.epochs": 30, "train.patience": 8},
            0.4,
        ),
    ],
    "expr": [
        (
            "expr-fusion",
            {
                "train.epochs": 6,
                "train.patience": 3,
                "model.layers": 1,
                "data.window": 64,
                "data.stride": 64,
            },
            0.6,
        ),
        (
            "expr-regnet",
            {
                "train.epochs": 6,
                "train.patience": 3,
                "model.layers": 1,
                "data.window": 64,
                "data.stride": 64,
            },
            0.4,
        ),
    ],
}
TRACK_SHARE = {"eri": 0.4, "expr": 0.6}  # Expr trials are slower (per-frame windows)
MAX_TRIALS = 12  # per variant: past this the budget buys little on demo data


@dataclass
class VariantResult:
    """One tuned variant of the summary table."""

    study: str
    complete: int
    pruned: int
    failed: int
    best: float | None
    seconds: float


@dataclass
class TrackResult:
    """Everything the demo made for one track."""

    track: str
    metric: str
    oracle_devel: float
    oracle_test: float | None
    variants: list[VariantResult] = field(default_factory=list)
    ensemble: dict[str, Any] = field(default_factory=dict)  # manifest scores
    ensemble_test: float | None = None
    best_single_test: float | None = None
    submission: list[Path] = field(default_factory=list)
    zip: Path | None = None
    report: Path | None = None
    valid: bool = False


def _stage(title: str) -> None:
    """A stage heading: a rule on a terminal, one plain line in a log."""
    if console.is_terminal:
        console.rule(f"[bold]{escape(title)}[/]")
    else:
        console.print(f"== {escape(title)}")


def sweeps_dir() -> Path:
    """The repository's sweeps/ folder (next to the package in a checkout or editable install)."""
    here = Path(__file__).resolve().parent.parent / "sweeps"
    if (here / "eri-fusion.toml").is_file():
        return here
    raise AbawError(
        f"the demo's sweep files are not at {here}; run it from a checkout "
        "(pip install -e .) or copy the repository's sweeps/ folder there"
    )


def _synth(track: str, out: Path, scale: str, seed: int) -> dict[str, Any]:
    """Write the track's synthetic set unless one of this scale and seed is already there."""
    from abaw.cli import build_parser
    from abaw.track import get_track

    oracle_path = out / "oracle.json"
    if oracle_path.is_file():
        oracle = json.loads(oracle_path.read_text(encoding="utf-8"))
        if oracle.get("scale") == scale and oracle.get("seed") == seed:
            console.print(f"reusing {track} data in {escape(str(out))}")
            return oracle
    argv = ["synth", "--track", track, "--out", str(out), "--scale", scale]
    args = build_parser().parse_args([*argv, "--seed", str(seed), "--force"])
    get_track(track).synth(args, out, None)
    return json.loads(oracle_path.read_text(encoding="utf-8"))


def _oracle_scores(track: str, oracle: dict[str, Any]) -> tuple[float, float | None]:
    if track == "eri":
        return oracle["devel"]["mean_pearson"], oracle.get("test", {}).get("mean_pearson")
    s = oracle["splits"]
    return s["devel"]["macro_f1"], s.get("test", {}).get("macro_f1")


def synthetic_test_score(track: str, data: Path, pred: Any) -> float | None:
    """The challenge metric of test predictions against the generator's hidden truth.

    None when the data set has no hidden truth (real data, or a set written before it
    was kept). ERI: `.oracle/test_labels.csv`; Expr: `.oracle/test_labels/<video>.npy`.
    """
    from abaw.metrics import macro_f1, mean_pearson

    if pred is None or len(pred) == 0:
        return None
    if track == "eri":
        path = data / ".oracle" / "test_labels.csv"
        if not path.is_file():
            return None
        import pandas as pd

        truth = pd.read_csv(path, dtype={"File_ID": str}).set_index("File_ID")
        ids = [str(i).strip("[]") for i in pred.keys["id"]]
        truth.index = [str(i).strip("[]") for i in truth.index]
        y = truth.loc[ids, list(pred.columns)].to_numpy(dtype=np.float64)
        return mean_pearson(y, pred.values.astype(np.float64), pred.columns).value
    root = data / ".oracle" / "test_labels"
    if not root.is_dir():
        return None
    labels = np.full(len(pred), -1, dtype=np.int64)
    videos, frames = pred.keys["video"], pred.keys["frame"].astype(np.int64)
    for v in np.unique(videos):
        path = root / f"{v}.npy"
        if not path.is_file():
            return None
        y = np.load(path, allow_pickle=False)
        rows = np.flatnonzero(videos == v)
        f = frames[rows] - 1
        ok = (f >= 0) & (f < len(y))
        labels[rows[ok]] = y[f[ok]]
    return macro_f1(labels, pred.values.argmax(axis=1)).value


def _tune_track(
    track: str,
    data: Path,
    runs: Path,
    budget_s: float,
    *,
    jobs: int,
    device: str,
    seed: int,
    scale: str,
) -> list[VariantResult]:
    from optuna.trial import TrialState

    from abaw.tune import run_study

    out = []
    for study, pins, share in VARIANTS[track]:
        pins = dict(pins)
        if scale == "tiny":  # the test-suite size: one or two short trials
            pins.update({"train.epochs": 2, "train.patience": 2})
        _stage(f"{track}: tuning {study} ({share * budget_s:.0f} s budget)")
        t0 = time.perf_counter()
        st = run_study(
            sweeps_dir() / f"{study}.toml",
            data,
            trials=2 if scale == "tiny" else MAX_TRIALS,
            timeout=max(1.0, share * budget_s),
            jobs=jobs,
            runs=runs,
            seed=seed,
            sampler="tpe",
            pruner="median",
            keep=5,
            device=device,
            overrides=pins,
        )
        trials = st.get_trials(deepcopy=False)
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        out.append(
            VariantResult(
                study,
                len(done),
                sum(t.state == TrialState.PRUNED for t in trials),
                sum(t.state == TrialState.FAIL for t in trials),
                max((t.value for t in done), default=None),
                time.perf_counter() - t0,
            )
        )
    return out


def run_demo(
    out: str | os.PathLike[str] = "demo",
    *,
    tracks: tuple[str, ...] = ("eri", "expr"),
    minutes: float = 8.0,
    jobs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    scale: str = "small",
) -> list[TrackResult]:
    """Run synth -> tune -> ensemble -> submit -> validate -> report for each track.

    Args:
        out: working folder: data/, runs/ (studies, artifacts, ensembles, reports), submissions/.
        tracks: which tracks to run.
        minutes: wall-clock budget for all tuning (the stages around it add about a minute).
        jobs: trials in parallel (default: 2 on a machine with at least 2 cores).
        scale: "small" (the demo) or "tiny" (seconds; for tests).

    Rerunning with the same folder resumes: data are reused and each study continues.
    """
    from abaw.ensemble import build_ensemble
    from abaw.report import make_report
    from abaw.submit import submit, validate
    from abaw.track import get_track
    from abaw.trials import kept_trials, trial_predictions
    from abaw.tune import load_study

    if minutes <= 0:
        raise AbawError(f"--minutes must be > 0, got {minutes}")
    out = Path(out)
    runs, subs = out / "runs", out / "submissions"
    jobs = jobs or (2 if (os.cpu_count() or 1) >= 2 else 1)
    total = sum(TRACK_SHARE[t] for t in tracks)
    results = []
    for track in tracks:
        t_track = time.perf_counter()
        data = out / "data" / track
        _stage(f"{track}: synthetic data ({scale})")
        oracle = _synth(track, data, scale, seed)
        devel_ceiling, test_ceiling = _oracle_scores(track, oracle)
        res = TrackResult(track, get_track(track).metric, devel_ceiling, test_ceiling)
        budget = minutes * 60 * TRACK_SHARE[track] / total
        res.variants = _tune_track(
            track, data, runs, budget, jobs=jobs, device=device, seed=seed, scale=scale
        )

        _stage(f"{track}: ensemble, submit, validate, report")
        name = f"demo-{track}"
        studies = [v.study for v in res.variants if v.complete]
        if not studies:
            raise AbawError(f"{track}: no trial completed within the budget; raise --minutes")
        ens = build_ensemble(
            track,
            name=name,
            studies=studies,
            top_k=3,
            method="greedy",
            runs=runs,
            force=True,
            seed=seed,
        )
        res.ensemble = ens.manifest["scores"]
        res.ensemble_test = synthetic_test_score(track, data, ens.test)
        best_study = max(
            (v for v in res.variants if v.best is not None), key=lambda v: v.best or -1
        )
        st = load_study(best_study.study, runs=runs)
        best_trial = kept_trials(st, 1)
        if best_trial:
            res.best_single_test = synthetic_test_score(
                track, data, trial_predictions(st, best_trial[0], "test")
            )
        sub = submit(track, name, data, runs=runs, out=subs, force=True)
        res.submission, res.zip = list(sub.files), sub.zip
        problems = validate(track, sub.zip, data)
        res.valid = not problems
        if problems:
            raise AbawError(f"{track}: the demo's own submission failed validation: {problems[0]}")
        res.report = make_report(ensemble=name, runs=runs, out=runs / "reports" / name).html
        console.print(f"{track} done in {time.perf_counter() - t_track:.0f} s")
        results.append(res)
    return results


def _pct(x: float | None, ceiling: float | None) -> str:
    if x is None or not ceiling:
        return "-"
    return f"{100 * x / ceiling:.0f} %"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def print_summary(results: list[TrackResult], seconds: float) -> None:
    """The demo's closing table: every variant, the ensemble, test truth, and the files."""
    from rich.table import Table

    t = Table(title=f"abaw demo: {seconds / 60:.1f} min", title_justify="left")
    for col, just in (
        ("track", "left"),
        ("model", "left"),
        ("trials (done / pruned)", "right"),
        ("devel", "right"),
        ("% of oracle", "right"),
        ("honest devel", "right"),
        ("test (synthetic truth)", "right"),
    ):
        t.add_column(col, justify=just)
    for r in results:
        for v in r.variants:
            t.add_row(
                r.track, v.study, f"{v.complete} / {v.pruned}", _f(v.best),
                _pct(v.best, r.oracle_devel), "", "",
            )  # fmt: skip
        s = r.ensemble
        t.add_row(
            r.track, f"best single ({s.get('best_single_member', '?')})", "",
            _f(s.get("best_single_devel")), _pct(s.get("best_single_devel"), r.oracle_devel),
            _f(s.get("honest_best_single")), _f(r.best_single_test),
        )  # fmt: skip
        t.add_row(
            r.track, "[bold]ensemble[/]", "", _f(s.get("ensemble_devel")),
            _pct(s.get("ensemble_devel"), r.oracle_devel), _f(s.get("honest_ensemble")),
            _f(r.ensemble_test),
        )  # fmt: skip
        t.add_row(
            r.track, "oracle (ceiling)", "", _f(r.oracle_devel), "100 %", "",
            _f(r.oracle_test),
        )  # fmt: skip
        t.add_section()
    console.print(t)
    for r in results:
        console.print(f"{r.track} submission: {escape(str(r.zip))} (validated: {r.valid})")
        for p in r.submission[:3]:
            console.print(f"  {escape(str(p))}")
        if len(r.submission) > 3:
            console.print(f"  ... {len(r.submission)} files")
        console.print(f"{r.track} report: {escape(str(r.report))}")


def main(args: argparse.Namespace) -> int:
    """`abaw demo`."""
    tracks = ("eri", "expr") if args.track == "both" else (args.track,)
    t0 = time.perf_counter()
    results = run_demo(
        args.out,
        tracks=tracks,
        minutes=args.minutes,
        jobs=args.jobs,
        device=args.device,
        seed=args.seed,
        scale=args.scale,
    )
    print_summary(results, time.perf_counter() - t0)
    return 0
