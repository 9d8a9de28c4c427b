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

from abaw.cli import infer, show
from abaw.errors import AbawError
from abaw.track import get_track, track_names


def _csv_list(text: str | None) -> list[str] | None:
    """ "A, B" -> ["A", "B"]; empty or None -> None."""
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    return items or None


def _own_options(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
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
        **_own_options(args, tr.synth_options),
    )
    show.line(tr.describe_oracle(oracle, Path(args.out)))
    return 0


def _features(text: str | None) -> list[str] | dict[str, str] | None:
    """`--features`: "A,B" (names), or a mapping as `data.features` takes it: "A=audio,B=visual"
    or the TOML table '{A = "audio", B = "visual"}'; a name without "=" in a mapping keeps the
    modality its track knows."""
    if not text or ("=" not in text):
        return _csv_list(text)
    from abaw.sweep import parse_overrides

    if text.strip().startswith("{"):
        table = parse_overrides([f"data.features={text}"])["data.features"]
        if not isinstance(table, dict):
            raise AbawError(f'--features {text!r}: expected a table like {{A = "audio"}}')
        return {str(k): str(v) for k, v in table.items()}
    pairs = [x.partition("=") for x in _csv_list(text) or []]
    return {name.strip(): modality.strip() for name, _, modality in pairs}


def _given_options(args: argparse.Namespace, flags: dict[str, str], kind: str) -> dict[str, Any]:
    """The options of `flags` that were given, checked against the track's `<kind>_options`.

    One of another track is refused in one sentence naming the tracks that take it (an Expr
    `--frames` on ERI means a mistake somewhere), never silently dropped.
    """
    tr = get_track(args.track)
    given = {k: getattr(args, k) for k in flags if getattr(args, k, None) not in (None, "")}
    foreign = [k for k in given if k not in getattr(tr, f"{kind}_options")]
    if foreign:
        takers = [
            n
            for n in track_names()
            if set(foreign) <= set(getattr(get_track(n), f"{kind}_options"))
        ]
        raise AbawError(
            f"{' / '.join(flags[k] for k in foreign)} do not apply to the {tr.name} "
            f"track (tracks that take them: {', '.join(takers) or 'none'})"
        )
    return given


_INSPECT_FLAGS = {"test_frames": "--test-frames", "test_videos": "--test-videos"}


def inspect(args: argparse.Namespace) -> int:
    """`abaw inspect`: render the track's inspection; exit 1 when problems were found."""
    tr = get_track(args.track)
    given = _given_options(args, _INSPECT_FLAGS, "inspect")
    report = tr.inspect(
        Path(args.data), features=_features(args.features), use_cache=not args.no_cache, **given
    )
    show.inspect_report(report)
    return 1 if report.problems else 0


_EXTRACT_FLAGS = {"images": "--images", "videos": "--videos", "audio": "--audio",
                  "fps": "--fps", "window": "--window", "hop": "--hop"}  # fmt: skip


def extract(args: argparse.Namespace) -> int:
    """`abaw extract`: media -> feature files, then one summary line."""
    from abaw.extract import extract as run

    given = _given_options(args, _EXTRACT_FLAGS, "extract")
    res = run(
        args.track,
        args.data,
        name=args.name,
        backbone=args.backbone,
        weights=args.weights,
        input_size=args.input_size,
        mean=args.mean,
        std=args.std,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        workers=args.workers,
        shard=args.shard,
        force=args.force,
        detector=args.detector,
        detector_weights=args.detector_weights,
        face_margin=args.face_margin,
        reference=args.reference,
        sample_rate=args.sample_rate,
        **given,
    )
    for note in res.notes:
        show.line(f"note: {note}")
    show.line(res.describe())
    return 0


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
        default_first=args.default_first,
        retry_interrupted=args.retry_interrupted,
        data_moved=args.data_moved,
    )
    return 0


def studies(args: argparse.Namespace) -> int:
    """`abaw studies`: every study in a storage with its track, model, counts and best trial.

    With no storage in `--runs`, the journal files below this folder (e.g. the demo's
    `demo/runs/`) are named with the command that lists them.
    """
    from abaw.tune import JOURNAL_FILE, storage_label, study_rows

    if args.storage is None and not (Path(args.runs) / JOURNAL_FILE).is_file():
        found = infer.journals_below(Path.cwd())
        if found:
            show.line(
                f"no study storage at {Path(args.runs) / JOURNAL_FILE}; studies below this "
                "folder, most recently written first:"
            )
            for path in found[:5]:
                show.line(f"  {path.parent}/  ->  abaw studies --runs {path.parent}")
            if len(found) > 5:
                show.line(f"  ... and {len(found) - 5} more")
            return 1
    show.studies(study_rows(args.storage, args.runs), storage_label(args.storage, args.runs))
    return 0


def ensemble(args: argparse.Namespace) -> int:
    """`abaw ensemble`: build, write and print an ensemble."""
    from abaw.ensemble import build_ensemble

    storages = list(args.storage) if args.storage else [None]
    studies = _csv_list(",".join(args.studies or [])) or []  # every --studies, flattened
    recorded = infer.study_tracks(studies, storages, args.runs)
    for f in args.predictions or []:
        recorded[f"predictions {f}"] = infer.npz_track(infer.member_file(f))
    args.track = infer.resolve_track(args.track, recorded, "ensemble")
    res = build_ensemble(
        args.track,
        name=args.name,
        studies=studies,
        predictions=args.predictions or [],
        top_k=args.top_k,
        method=args.method,
        storages=list(args.storage) if args.storage else [None],
        runs=args.runs,
        artifacts=args.artifacts,
        force=args.force,
        post=not args.no_postprocess,
        seed=args.seed,
        keep_ensemble=args.keep_ensemble,
    )
    show.ensemble(res.manifest, res.members)
    show.line(f"wrote {res.out_dir}/ (predictions-devel.npz, predictions-test.npz, manifest.json)")
    return 0


_SUBMIT_FLAGS = {"fmt": "--format", "id_style": "--id-style", "frames": "--frames"}


def _submission_options(args: argparse.Namespace) -> dict[str, Any]:
    """The submission options given (None = the library's default)."""
    return _given_options(args, _SUBMIT_FLAGS, "submission")


def submit(args: argparse.Namespace) -> int:
    """`abaw submit`: write, validate and zip the challenge file(s)."""
    from abaw.submit import submit as write

    if args.predictions and not Path(args.predictions).is_file():
        raise AbawError(f"{args.predictions}: predictions file not found")
    recorded = (
        {f"predictions {args.predictions}": infer.npz_track(args.predictions)}
        if args.predictions
        else infer.ensemble_track(args.ensemble, args.runs)
    )
    args.track = infer.resolve_track(args.track, recorded, "submit")
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

    args.track = infer.resolve_track(args.track, infer.submission_track(args.path), "validate")
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
