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

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abaw.console import console, escape
from abaw.errors import AbawError
from abaw.io import writable_dir
from abaw.sweep import SHIPPED_SWEEPS
from abaw.track import get_track, track_names

MAX_TRIALS = 12  # per variant: past this the budget buys little on demo data
TOP_K = 3  # best trials of each study in the ensemble
KEEP = TOP_K  # files kept per study: only what the ensemble reads (disk: docs/benchmarks.md)


@dataclass
class VariantResult:
    """One tuned variant of the summary table."""

    study: str
    complete: int
    pruned: int
    failed: int
    best: float | None
    seconds: float
    epochs: int = 0  # the variant's epochs per trial
    warmup: int = 0  # epochs every trial runs before the median pruner may stop it
    startup: int = 0  # finished trials before the median pruner prunes anything
    fixed_first: float | None = None  # devel score of the first trial: the sweep's [fixed] values

    def pruning(self) -> str:
        """Why this many trials were pruned, in a sentence."""
        got = f"{self.complete + self.pruned} trials, {self.pruned} pruned"
        if self.pruned or not self.startup:
            return got
        when = (
            f"nor in a trial's first {self.warmup} of its {self.epochs} epochs"
            if self.warmup < self.epochs
            else f"and never in a trial of {self.epochs} epochs (its warm-up is {self.warmup})"
        )
        return (
            f"{got}: the median pruner prunes nothing before {self.startup} trials have "
            f"finished, {when}; the budget finished {self.complete + self.pruned} "
            "(more minutes, more trials)"
        )


@dataclass
class TrackResult:
    """Everything the demo made for one track."""

    track: str
    metric: str
    oracle_devel: float
    oracle_test: float | None
    variants: list[VariantResult] = field(default_factory=list)
    ensemble: dict[str, Any] = field(default_factory=dict)  # manifest scores
    ensemble_test: float | None = None  # the ensemble's test score, written or not
    best_single_test: float | None = None
    verdict: dict[str, Any] = field(default_factory=dict)  # the manifest's verdict
    submitted_test: float | None = None  # the written predictions' test score
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
    here = SHIPPED_SWEEPS
    if (here / "eri-fusion.toml").is_file():
        return here
    raise AbawError(
        f"the demo's sweep files are not at {here}; run it from a checkout "
        "(pip install -e .) or copy the repository's sweeps/ folder there"
    )


def _synth(track: str, out: Path, scale: str, seed: int) -> dict[str, Any]:
    """Write the track's synthetic set unless one of this scale and seed is already there.

    Only the feature sets the demo's variants read are written (DemoVariant.features).
    """
    oracle_path = out / "oracle.json"
    if oracle_path.is_file():
        oracle = json.loads(oracle_path.read_text(encoding="utf-8"))
        if oracle.get("scale") == scale and oracle.get("seed") == seed:
            console.print(f"reusing {track} data in {escape(str(out))}")
            return oracle
    tr = get_track(track)
    wanted = [v.features for v in tr.demo_variants]
    features = None if not all(wanted) else sorted({f for fs in wanted for f in fs})
    oracle = tr.synth(out, scale=scale, seed=seed, features=features)
    console.print(tr.describe_oracle(oracle, out), markup=False, soft_wrap=True)
    return oracle


def synthetic_test_score(track: str, data: Path, pred: Any) -> float | None:
    """The challenge metric of test predictions against the generator's hidden truth.

    None when the data set has no hidden truth (real data, or a set written before it
    was kept); each track knows where its synth hides the truth (`.oracle/`).
    """
    return get_track(track).synthetic_test_score(Path(data), pred)


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

    from abaw.sweep import load_sweep
    from abaw.trials import TRIAL_FIXED_CONFIG
    from abaw.tune import MEDIAN_STARTUP_TRIALS, median_warmup, run_study

    out = []
    for variant in get_track(track).demo_variants:
        study, pins, share = variant.study, dict(variant.pins), variant.share
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
            keep=KEEP,
            device=device,
            overrides=pins,
        )
        trials = st.get_trials(deepcopy=False)
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        epochs = int(
            load_sweep(sweeps_dir() / f"{study}.toml")
            .resolve(overrides=pins)
            .get("train.epochs", 100)
        )
        first = [t.value for t in done if t.user_attrs.get(TRIAL_FIXED_CONFIG)]
        out.append(
            VariantResult(
                study,
                len(done),
                sum(t.state == TrialState.PRUNED for t in trials),
                sum(t.state == TrialState.FAIL for t in trials),
                max((t.value for t in done), default=None),
                time.perf_counter() - t0,
                epochs=epochs,
                warmup=median_warmup(epochs),
                startup=MEDIAN_STARTUP_TRIALS,
                fixed_first=first[0] if first else None,
            )
        )
    return out


def announce_disk(out: Path, tracks: tuple[str, ...], scale: str) -> int:
    """Say where the demo writes and about how much, before it writes; refuse a full disk.

    The figures are each track's measured `demo_disk_mb` (data, the loaders' caches, the
    kept trials' files, ensembles, submissions, reports); returns the estimate in MB.
    """
    need = sum(get_track(t).demo_disk_mb.get(scale, 0) for t in tracks)
    where = out.resolve()
    probe = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free // 2**20
    reused = [t for t in tracks if (out / "data" / t / "oracle.json").is_file()]
    console.print(
        f"abaw demo writes up to about {_mb(need)} into {escape(str(where))} "
        f"(data, caches, kept trials, submissions, reports; {_mb(free)} free there)"
        + (f"; data of {', '.join(reused)} already there are reused" if reused else ""),
        soft_wrap=True,
    )
    if free < need and not reused:
        raise AbawError(
            f"{where}: {_mb(free)} free, the demo needs about {_mb(need)}; "
            "free some space or pass --out on another disk"
        )
    return need


def _mb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _ensemble_and_submit(res: TrackResult, data: Path, runs: Path, subs: Path, seed: int) -> None:
    """Ensemble the variants' best trials (acting on the verdict), submit, validate, report."""
    from abaw.ensemble import build_ensemble
    from abaw.ensemble.stream import stream_test
    from abaw.report import make_report
    from abaw.submit import submit, validate
    from abaw.trials import kept_trials, trial_predictions
    from abaw.tune import load_study

    track, name = res.track, f"demo-{res.track}"
    studies = [v.study for v in res.variants if v.complete]
    if not studies:
        raise AbawError(f"{track}: no trial completed within the budget; raise --minutes")
    ens = build_ensemble(
        track, name=name, studies=studies, top_k=TOP_K, method="greedy", runs=runs, force=True,
        seed=seed,
    )  # fmt: skip
    res.ensemble = ens.manifest["scores"]
    res.verdict = dict(ens.manifest.get("verdict", {}))
    res.submitted_test = synthetic_test_score(track, data, ens.test)
    lost = ens.ensemble is not None and ens.ensemble is not ens.pipeline
    res.ensemble_test = (
        synthetic_test_score(track, data, stream_test(track, ens.members, ens.ensemble))
        if lost
        else res.submitted_test
    )
    best = max((v for v in res.variants if v.best is not None), key=lambda v: v.best or -1)
    st = load_study(best.study, runs=runs)
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


def run_demo(
    out: str | os.PathLike[str] = "demo",
    *,
    tracks: tuple[str, ...] | None = None,
    minutes: float = 8.0,
    jobs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    scale: str = "small",
) -> list[TrackResult]:
    """Run synth -> tune -> ensemble -> submit -> validate -> report for each track.

    Args:
        out: working folder: data/, runs/ (studies, artifacts, ensembles, reports), submissions/.
        tracks: which tracks to run (default: every registered track).
        minutes: wall-clock budget for all tuning (the stages around it add about a minute).
        jobs: trials in parallel (default: 2 on a machine with at least 2 cores).
        scale: "small" (the demo) or "tiny" (seconds; for tests).

    Rerunning with the same folder resumes: data are reused and each study continues.
    """
    if minutes <= 0:
        raise AbawError(f"--minutes must be > 0, got {minutes}")
    out = writable_dir(out, "demo folder (--out)")  # a file or read-only folder: say so now
    runs = out / "runs"
    # Two workers on 2+ cores; one at the smoke-test size, where starting a worker process
    # (importing torch, seconds on a busy machine) would eat the whole budget.
    jobs = jobs or (2 if (os.cpu_count() or 1) >= 2 and scale != "tiny" else 1)
    tracks = tuple(tracks) if tracks else track_names()
    announce_disk(out, tracks, scale)
    total = sum(get_track(t).demo_share for t in tracks)
    results = []
    for track in tracks:
        t_track = time.perf_counter()
        data = out / "data" / track
        _stage(f"{track}: synthetic data ({scale})")
        oracle = _synth(track, data, scale, seed)
        devel_ceiling, test_ceiling = get_track(track).oracle_scores(oracle)
        res = TrackResult(track, get_track(track).metric, devel_ceiling, test_ceiling)
        budget = minutes * 60 * get_track(track).demo_share / total
        res.variants = _tune_track(
            track, data, runs, budget, jobs=jobs, device=device, seed=seed, scale=scale
        )
        _stage(f"{track}: ensemble, submit, validate, report")
        _ensemble_and_submit(res, data, runs, out / "submissions", seed)
        console.print(f"{track} done in {time.perf_counter() - t_track:.0f} s")
        results.append(res)
    return results
