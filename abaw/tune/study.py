"""`abaw tune` and `abaw studies`: create or resume a study from a sweep file, run it, list studies.

Where things go: the study in one Optuna storage (storage.py); the files of the top-K
completed trials in an artifact store (`<runs>/artifacts` or `--artifacts DIR`); a small
log per completed trial under `<runs>/tune/<study>/` (worker.py).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from optuna.trial import TrialState

from abaw import trials as T
from abaw.console import warn
from abaw.errors import ConfigError
from abaw.io import folder_problem, safe_name, writable_dir
from abaw.sweep import Sweep, build_configs, load_sweep, parse_overrides
from abaw.track import DataCache, Track, get_track
from abaw.tune.enqueue import first_trials
from abaw.tune.identity import check_resume, search_identity, warn_missing_files
from abaw.tune.pool import run_pool
from abaw.tune.search import PRUNERS, SAMPLERS, TRIAL_SEEDS
from abaw.tune.storage import open_storage, storage_label
from abaw.tune.view import Monitor, progress_dir
from abaw.tune.worker import Runner, WorkerSettings


def _create_study(
    sweep: Sweep,
    name: str,
    storage: optuna.storages.BaseStorage,
    *,
    data: Path,
    identity: dict[str, Any],
    artifacts: Path | None,
    runs: Path,
    keep: int,
) -> tuple[optuna.Study, Path]:
    """Create or join the study; refuse one of another track/model, search or data set
    (abaw/tune/identity.py); record what it is; say which kept trials' files are gone."""
    track = get_track(sweep.track)
    study = optuna.create_study(
        storage=storage, study_name=name, direction=sweep.direction, load_if_exists=True
    )
    attrs = study.user_attrs
    mine = {T.STUDY_TRACK: sweep.track, T.STUDY_MODEL: sweep.model}
    for key, value in mine.items():
        if key in attrs and attrs[key] != value:
            raise ConfigError(
                f"study {name!r} exists for {attrs.get(T.STUDY_TRACK)}/{attrs.get(T.STUDY_MODEL)}, "
                f"but {sweep.path} is {sweep.track}/{sweep.model}; pass another --study"
            )
    record = check_resume(
        study,
        search=identity["search"],
        data=identity["data"],
        sweep_path=sweep.path,
        data_moved=identity["data_moved"],
    )
    if artifacts is None:
        artifacts = Path(attrs.get(T.STUDY_ARTIFACTS) or T.default_artifacts_dir(runs))
    artifacts = artifacts.resolve()
    first = {T.STUDY_SWEEP: str(sweep.path.resolve()), T.STUDY_DATA: str(data.resolve())}
    wanted = {
        **mine,
        **{k: v for k, v in first.items() if k not in attrs},  # the creator's paths stay
        **record,
        T.STUDY_METRIC: sweep.metric or track.metric,
        T.STUDY_ARTIFACTS: str(artifacts),
        T.STUDY_KEEP: keep,
    }
    for key, value in wanted.items():
        if attrs.get(key) != value:
            study.set_user_attr(key, value)
    warn_missing_files(study, artifacts)
    return study, artifacts


def _check_options(
    *,
    jobs: int,
    trials: int | None,
    timeout: float | None,
    keep: int,
    sampler: str,
    pruner: str,
    trial_seeds: str,
) -> None:
    """The plain options, each wrong value one sentence naming its flag."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(
            f"--timeout must be a number of seconds > 0, got {timeout} (leave it out for no limit)"
        )
    if keep < 0:
        raise ConfigError(f"--keep must be >= 0, got {keep}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: expected one of {SAMPLERS}")
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner {pruner!r}: expected one of {PRUNERS}")
    if trial_seeds not in TRIAL_SEEDS:
        raise ConfigError(f"--trial-seeds {trial_seeds!r}: expected one of {TRIAL_SEEDS}")


def _check_inputs(
    sw: Sweep,
    overrides: dict[str, Any],
    *,
    study: str | None,
    data: str | os.PathLike[str],
    trials: int | None,
    seeds: str,
) -> str:
    """The search space, the data folder and the study name (returned), each one sentence."""
    _check_space(sw, overrides, trials, seeds)
    bad = folder_problem(data, "the data set folder (--data)")
    if bad is not None:
        raise bad
    if not Path(data).is_dir():
        raise ConfigError(f"--data {data}: not a folder")
    return _check_name(sw.name if study is None else study)  # '' is refused, not the default


def _check_folders(runs: str | os.PathLike[str], artifacts: str | os.PathLike[str] | None) -> None:
    """The folders a study writes, checked before the data is read (minutes, at full scale)."""
    writable_dir(runs, "run folder (--runs)")
    if artifacts is not None:
        writable_dir(artifacts, "artifact folder (--artifacts)")


def _check_name(name: str) -> str:
    """The study name, which becomes a folder name under `<runs>/tune/` (so not ' ')."""
    try:
        safe_name(name, what="--study")
    except ValueError as e:
        raise ConfigError(f"{e}; leave --study out for the sweep's name") from None
    return name


def _check_space(
    sw: Sweep, overrides: dict[str, Any], trials: int | None, trial_seeds: str
) -> None:
    """Nothing to search under a fixed seed makes every trial the same run: an empty [space]
    is refused; a space that --set pins whole is warned about (it may be meant: a repeat)."""
    if sw.searchable(overrides) or trial_seeds != "fixed" or trials == 1:
        return
    fix = (
        "Add [space] entries, train once with `abaw train`, or pass --trial-seeds per-trial "
        "for a study of seeds"
    )
    if not sw.space:
        raise ConfigError(
            f"{sw.path}: nothing to search: its [space] is empty, and with --trial-seeds fixed "
            f"every trial would train the same settings with the same seed. {fix}"
        )
    warn(
        f"{sw.path}: nothing to search: --set pins every [space] key "
        f"({', '.join(sw.space)}), so with --trial-seeds fixed every trial trains the same "
        f"settings with the same seed (the same model). {fix}"
    )


def _fixed_configs(sw: Sweep, track: Track, overrides: dict[str, Any]) -> dict[str, Any]:
    """Pre-flight: the space fits the model and the fixed settings build, so a mistake is
    one sentence, not N failed trials."""
    from abaw.train import run_sections

    sections = run_sections(track, sw.model)
    unknown = [k for k in sw.searchable(overrides) if k.partition(".")[0] not in sections]
    if unknown:
        raise ConfigError(
            f"{sw.path}: [space] key(s) {unknown} are in no section of {sw.track}/{sw.model}"
        )
    return build_configs(
        sw.resolve(overrides=overrides), sections, where=str(sw.path), overridden=overrides
    )


class _Prepared(NamedTuple):
    """What the pre-flight leaves for the run."""

    study: optuna.Study
    artifacts: Path
    cache: DataCache
    device: Any
    threads: int


def _preflight(
    sw: Sweep,
    name: str,
    overrides: dict[str, Any],
    *,
    data: Path,
    runs: Path,
    storage: str | None,
    artifacts: str | os.PathLike[str] | None,
    keep: int,
    device: str,
    jobs: int,
    threads: int | None,
    data_moved: bool = False,
) -> _Prepared:
    """The space, the fixed settings, the device, the data and the storage, checked before
    any trial starts, so a mistake is one sentence, not N failed trials. The data is read
    before the study is opened: a resume is checked against the data set's identity."""
    from abaw.train import resolve_device, set_threads

    track = get_track(sw.track)
    configs = _fixed_configs(sw, track, overrides)
    dev = resolve_device(device)
    n_threads = set_threads(jobs=jobs, threads=threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cache = DataCache()
    if jobs == 1:  # loaded once, reused by every trial
        loaded = cache.load(track, data, sw.model, configs)
        track.prepare(data, sw.model, configs, dev, data=loaded)  # a task builds: errors now
    else:
        loaded = track.load_data(data, sw.model, configs)  # errors now; fills the disk cache
    identity = {
        "search": search_identity(sw, overrides),
        "data": track.data_identity(loaded),
        "data_moved": data_moved,
    }
    the_study, artifacts_dir = _create_study(
        sw,
        name,
        open_storage(storage, runs=runs),
        data=data,
        identity=identity,
        artifacts=None if artifacts is None else Path(artifacts),
        runs=runs,
        keep=keep,
    )
    return _Prepared(the_study, artifacts_dir, cache, dev, n_threads)


def _run(w: WorkerSettings, ready: _Prepared, *, names: list[str], title: str, live: bool) -> None:
    """The workers (this process for one job, else a pool) under the live view."""
    monitor = Monitor(
        ready.study, names, w.trials, live=live, progress=progress_dir(w.runs, w.study)
    )
    states = [t.state for t in ready.study.get_trials(deepcopy=False)]
    queued = states.count(optuna.trial.TrialState.WAITING)
    print(
        f"{title}: {len(states) - queued} trial(s) so far"
        + (f" ({queued} queued)" if queued else "")
        + "; "
        f"target {w.trials or 'unlimited'} finished; {w.jobs} worker(s) x {ready.threads} "
        f"target {w.trials or 'unlimited'} finished; {w.jobs} worker(s) x {ready.threads} "
        f"CPU thread(s) on {ready.device}; artifacts in {ready.artifacts}",
        flush=True,
    )
    try:
        with monitor:
            if w.jobs == 1:
                w.cache = ready.cache
                Runner(w).run()
            else:
                run_pool(w, jobs=w.jobs)
    except KeyboardInterrupt:
        monitor.final(interrupted=True)
        raise
    monitor.final()


def _as_dict(overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """`--set` values as a dict ("key=value" strings parsed)."""
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    return dict(overrides or {})


def run_study(
    sweep: str | os.PathLike[str] | Sweep,
    data: str | os.PathLike[str],
    *,
    trials: int | None = None,
    timeout: float | None = None,
    jobs: int = 1,
    storage: str | None = None,
    study: str | None = None,
    runs: str | os.PathLike[str] = "runs",
    artifacts: str | os.PathLike[str] | None = None,
    seed: int = 0,
    trial_seeds: str = "fixed",
    sampler: str = "tpe",
    pruner: str = "median",
    keep: int = 10,
    device: str = "auto",
    overrides: dict[str, Any] | list[str] | None = None,
    show_progress: bool | None = None,
    threads: int | None = None,
    default_first: bool = True,
    retry_interrupted: bool = True,
    data_moved: bool = False,
) -> optuna.Study:
    """Create or resume the study of `sweep` and run trials until it has `trials` finished.

    Args:
        sweep: a sweep file (or a loaded Sweep); its `[space]` is searched around `[fixed]`.
        data: the data set root.
        trials: finished (complete + pruned) trials the study should hold in total, so a
            rerun after a crash finishes the job; None = no limit (stop with timeout / Ctrl-C).
        timeout: start no trial after this many seconds.
        jobs: worker processes on this machine, each with cores // jobs CPU threads.
        storage: None = `<runs>/optuna-journal.log`; or an RDB URL (see `open_storage`).
        study: the study name (default: the sweep's name).
        runs: the run directory.
        artifacts: the artifact store folder (default: the study's, else `<runs>/artifacts`).
        seed: seeds the sampler and every trial's training.
        trial_seeds: "fixed" trains every trial with `seed` (comparisons of settings free of
            seed noise); "per-trial" trains trial k with seed + k (the top trials are then
            different initialisations, not one with nearby settings).
        sampler: tpe | random | gp.  pruner: median | hyperband | none.
        keep: completed trials whose checkpoint and predictions are kept (the top-K).
        device: auto | cpu | cuda | cuda:N.
        overrides: `--set` values (dict or "key=value" strings): pinned, not searched.
        show_progress: live table (True) or plain lines (False); default: live on a terminal.
        threads: torch CPU threads per worker (default cores // jobs).
        default_first: a new study's first trial is the sweep's [fixed] configuration
            (enqueue.py), so a small budget never ends below the defaults.
        retry_interrupted: on resume, run trials stopped by Ctrl-C again with the same
            parameters.
        data_moved: resume a study whose data set (same layout, split sizes and labels) is now
            at another path; without it such a resume is refused (abaw/tune/identity.py).

    Returns:
        The optuna.Study (its trials carry the attributes of abaw/trials.py).
    """
    sw = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    overrides = _as_dict(overrides)
    options = {"jobs": jobs, "trials": trials, "timeout": timeout, "keep": keep}
    _check_options(**options, sampler=sampler, pruner=pruner, trial_seeds=trial_seeds)
    name = _check_inputs(sw, overrides, study=study, data=data, trials=trials, seeds=trial_seeds)
    _check_folders(runs, artifacts)
    runs, data = Path(runs), Path(data)
    ready = _preflight(
        sw,
        name,
        overrides,
        data=data,
        runs=runs,
        storage=storage,
        artifacts=artifacts,
        keep=keep,
        device=device,
        jobs=jobs,
        threads=threads,
        data_moved=data_moved,
    )
    for line in first_trials(
        ready.study,
        sw.searchable(overrides),
        _fixed_configs(sw, get_track(sw.track), overrides),
        default_first=default_first,
        retry=retry_interrupted,
        trials=trials,
    ):
        print(line, flush=True)
    w = WorkerSettings(
        sweep=str(sw.path),
        data=str(data),
        overrides=overrides,
        storage=storage,
        runs=str(runs),
        artifacts=str(ready.artifacts),
        study=name,
        trials=trials,
        deadline=None if timeout is None else time.time() + timeout,
        seed=seed,
        trial_seeds=trial_seeds,
        sampler=sampler,
        pruner=pruner,
        keep=keep,
        device=device,
        threads=threads,
        jobs=jobs,
    )
    _run(
        w,
        ready,
        names=list(sw.searchable(overrides)),
        title=f"study {name!r} ({sw.track}/{sw.model}) in {storage_label(storage, runs)}",
        live=sys.stdout.isatty() if show_progress is None else show_progress,
    )
    return ready.study


def study_rows(storage: str | None, runs: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One plain dict per study of a storage: name, track, model, counts per state, best."""
    st = open_storage(storage, runs=runs, create=False)
    rows = []
    for name in sorted(optuna.get_all_study_names(st)):
        study = optuna.load_study(study_name=name, storage=st)
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
        best = T.ranked_trials(study)[:1]
        info = T.study_info(study)
        rows.append(
            {
                "study": name,
                "track": info.get("track", "?"),
                "model": info.get("model", "?"),
                "metric": info.get("metric", ""),
                **counts,
                "best_value": best[0].value if best else None,
                "best_trial": best[0].number if best else None,
                "best_params": dict(best[0].params) if best else {},
            }
        )
    return rows
