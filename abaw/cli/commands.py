"""One function per `abaw` command: parsed arguments -> one library call -> printed result.

Each function reads its `argparse.Namespace`, calls the library with typed keyword
arguments (exactly what a notebook calls, docs/api.md), prints with `abaw.cli.show` and
returns the exit code. Track-specific options are passed only to the tracks that declare
them (`Track.synth_options`, `inspect_options`, `submission_options`), so nothing here asks
which track it is.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from abaw.cli import show
from abaw.errors import AbawError
from abaw.track import get_track, track_names


def _csv_list(text: str | None) -> list[str] | None:
    """ "A, B" -> ["A", "B"]; empty or None -> None."""
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    return items or None


def _track_options(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The track's own options, read from the arguments of the same name."""
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def synth(args: argparse.Namespace) -> int:
    """`abaw synth`: write the data set, then one line with its ceiling."""
    from abaw.synth import synth as write

    tr = get_track(args.track)
    oracle = write(
        args.track,
        args.out,
        scale=args.scale,
        seed=args.seed,
        difficulty=args.difficulty,
        features=_csv_list(args.features),
        force=args.force,
        **_track_options(args, tr.synth_options),
    )
    show.line(tr.describe_oracle(oracle, Path(args.out)))
    return 0


_INSPECT_FLAGS = {"test_frames": "--test-frames", "test_videos": "--test-videos"}


def inspect(args: argparse.Namespace) -> int:
    """`abaw inspect`: render the track's inspection; exit 1 when problems were found."""
    tr = get_track(args.track)
    given = {k: getattr(args, k) for k in _INSPECT_FLAGS if getattr(args, k, None)}
    foreign = [k for k in given if k not in tr.inspect_options]
    if foreign:
        takers = [n for n in track_names() if set(foreign) <= set(get_track(n).inspect_options)]
        raise AbawError(
            f"{' / '.join(_INSPECT_FLAGS[k] for k in foreign)} do not apply to the {tr.name} "
            f"track (tracks that take them: {', '.join(takers) or 'none'})"
        )
    report = tr.inspect(
        Path(args.data), features=_csv_list(args.features), use_cache=not args.no_cache, **given
    )
    show.inspect_report(report)
    return 1 if report.problems else 0


def train(args: argparse.Namespace) -> int:
    """`abaw train`: train the [fixed] configuration of one sweep file (plus --set overrides)."""
    from abaw.predictions import Predictions
    from abaw.train import train_sweep

    task, result, out_dir = train_sweep(
        args.sweep,
        args.data,
        overrides=list(args.overrides),
        device=args.device,
        threads=args.threads,
        seed=args.seed,
        runs=args.runs,
        name=args.name,
    )
    show.tables(task.summary(Predictions.load(result.predictions["devel"])))
    show.line(
        f"best devel {task.metric} {result.best_score:.4f} at epoch {result.best_epoch} "
        f"of {len(result.history)}; run folder {out_dir}"
    )
    return 0


def tune(args: argparse.Namespace) -> int:
    """`abaw tune`: create or resume the study and run trials (the live view is the library's)."""
    from abaw.tune import run_study

    run_study(
        args.sweep,
        args.data,
        trials=args.trials,
        timeout=args.timeout,
        jobs=args.jobs,
        storage=args.storage,
        study=args.study,
        runs=args.runs,
        artifacts=args.artifacts,
        seed=args.seed,
        trial_seeds=args.trial_seeds,
        sampler=args.sampler,
        pruner=args.pruner,
        keep=args.keep,
        device=args.device,
        overrides=list(args.overrides),
        threads=args.threads,
    )
    return 0


def studies(args: argparse.Namespace) -> int:
    """`abaw studies`: every study in a storage with its track, model, counts and best trial."""
    from abaw.tune import storage_label, study_rows

    show.studies(study_rows(args.storage, args.runs), storage_label(args.storage, args.runs))
    return 0


def ensemble(args: argparse.Namespace) -> int:
    """`abaw ensemble`: build, write and print an ensemble."""
    from abaw.ensemble import build_ensemble

    res = build_ensemble(
        args.track,
        name=args.name,
        studies=_csv_list(args.studies) or [],
        predictions=args.predictions or [],
        top_k=args.top_k,
        method=args.method,
        storages=list(args.storage) if args.storage else [None],
        runs=args.runs,
        artifacts=args.artifacts,
        force=args.force,
        post=not args.no_postprocess,
        seed=args.seed,
    )
    show.ensemble(res.manifest, res.members)
    show.line(f"wrote {res.out_dir}/ (predictions-devel.npz, predictions-test.npz, manifest.json)")
    return 0


def _submission_options(args: argparse.Namespace) -> dict[str, Any]:
    return _track_options(args, get_track(args.track).submission_options)


def submit(args: argparse.Namespace) -> int:
    """`abaw submit`: write, validate and zip the challenge file(s)."""
    from abaw.submit import submit as write

    if args.predictions and not Path(args.predictions).is_file():
        raise AbawError(f"{args.predictions}: predictions file not found")
    res = write(
        args.track,
        args.ensemble or args.predictions,
        args.data,
        runs=args.runs,
        out=args.out,
        force=args.force,
        name=args.name,
        **_submission_options(args),
    )
    show.submitted(res)
    return 0


def validate(args: argparse.Namespace) -> int:
    """`abaw validate`: exit 0 with one OK line, or 1 with every problem (first 20, then a count)."""
    from abaw.submit import validate as check

    problems = check(args.track, args.path, args.data, **_submission_options(args))
    if problems:
        show.problems(problems, args.path)
        return 1
    show.line(f"OK: {args.path} passes every {args.track} check")
    return 0


def report(args: argparse.Namespace) -> int:
    """`abaw report (--study NAME | --ensemble NAME)`."""
    from abaw.report import make_report

    rep = make_report(
        study=args.study,
        ensemble=args.ensemble,
        storage=args.storage,
        runs=args.runs,
        artifacts=args.artifacts,
        out=args.out,
    )
    show.report(rep)
    return 0


def demo(args: argparse.Namespace) -> int:
    """`abaw demo`: the whole pipeline on synthetic data, then the summary table."""
    from abaw.demo import run_demo

    t0 = time.perf_counter()
    results = run_demo(
        args.out,
        tracks=None if args.track == "both" else (args.track,),
        minutes=args.minutes,
        jobs=args.jobs,
        device=args.device,
        seed=args.seed,
        scale=args.scale,
    )
    show.demo_summary(results, time.perf_counter() - t0)
    return 0
