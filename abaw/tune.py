"""`abaw tune` and `abaw studies`: Optuna studies from sweep files.

A trial is exactly an `abaw train` run with sampled settings: the sweep's
`[fixed]` values, a sample of its `[space]` (minus keys pinned with `--set`),
then `abaw.train.fit`, which reports the devel metric to Optuna after every
epoch so the pruner can stop a poor trial early. Nothing here knows a track:
the Track builds the task, the trainer trains it.

Where things go (names of the attributes: abaw/trials.py, the contract):
- the study lives in one Optuna storage: by default a journal file
  `<runs>/optuna-journal.log` (no server; safe for many processes on one
  machine), or an RDB URL (`postgresql://...`, `mysql://...`) shared by workers
  on many machines (with Optuna's heartbeat, so a dead worker's trial is failed);
- the files of the top-K completed trials (checkpoint, devel and test
  predictions) live in an Optuna FileSystemArtifactStore (`<runs>/artifacts` or
  `--artifacts DIR`); test predictions are only computed for a trial that enters
  the top-K, and files of displaced trials are deleted;
- `<runs>/tune/<study>/trial-NNNNN/{config.json,metrics.json}`: a few KB per
  completed trial, on the machine that ran it (the log; metrics.json last).

Crash safety: each artifact is written to a temporary name and renamed, and its
ID is recorded on the trial only after the upload; each RUNNING trial records
its owner (host, PID, process start time). On start, and before every trial, a
worker fails the RUNNING trials whose owner process on this host is gone (the
journal file's equivalent of the RDB heartbeat), deletes their unrecorded files
and enqueues a retry with the same parameters.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from abaw import trials as T
from abaw.errors import AbawError, ConfigError
from abaw.io import atomic_open, safe_name
from abaw.sweep import Sweep, build_configs, config_to_dict, load_sweep, parse_overrides
from abaw.track import DataCache, get_track
from abaw.tune_view import FINISHED, Monitor, fmt_value  # noqa: F401  (fmt_value: abaw.cli)

__all__ = ["load_study", "open_storage", "run_study", "storage_label", "study_rows"]

JOURNAL_FILE = "optuna-journal.log"
OWNER_ATTR = "abaw:owner"  # trial system attribute: {"host", "pid", "start"} of the worker
HEARTBEAT_S = 60  # RDB heartbeat interval; a trial silent for 2x this is failed and retried
UNCLAIMED_S = 120  # a RUNNING trial no worker claimed (killed between ask and start) is stale
MAX_FAILS_IN_A_ROW = 3  # a worker stops when this many trials in a row raise
SAMPLERS = ("tpe", "random", "gp")
PRUNERS = ("median", "hyperband", "none")
TRIAL_SEEDS = ("fixed", "per-trial")
# The median pruner lets every trial run a third of its epochs (at least 3, at most 10) ...
MEDIAN_WARMUP = (1 / 3, 3, 10)
MEDIAN_STARTUP_TRIALS = 5  # ... and prunes nothing before this many trials have finished
_ARTIFACTS = {
    T.TRIAL_CHECKPOINT: "checkpoint.pt",
    T.predictions_attr("devel"): "predictions-devel.npz",
    T.predictions_attr("test"): "predictions-test.npz",
}


# -- storage ------------------------------------------------------------------------------


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _sqlalchemy_url(url: str) -> str:
    """postgresql:// -> postgresql+psycopg:// (psycopg 3); other URLs unchanged."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def open_storage(
    storage: str | None,
    *,
    runs: str | os.PathLike[str] = "runs",
    heartbeat: int = HEARTBEAT_S,
    create: bool = True,
) -> optuna.storages.BaseStorage:
    """The Optuna storage of `--storage`.

    Args:
        storage: None = the local default, a journal file `<runs>/optuna-journal.log`
            (no server; many processes on one machine); a path ending in `.log` = that
            journal file; a URL = an RDB storage: `postgresql://user:pw@host/db` (psycopg 3,
            `pip install 'abaw[postgres]'`), `mysql+pymysql://...`, `sqlite:///file.db`.
        runs: the run directory holding the default journal file.
        heartbeat: RDB only: seconds between a running trial's heartbeats; a trial without
            one for twice this long is failed and retried once with the same parameters.
        create: False for readers (studies, ensemble, report): a missing journal file is an
            error naming it, instead of a new empty storage.
    """
    if storage is None or ("://" not in storage and storage.endswith(".log")):
        path = Path(runs) / JOURNAL_FILE if storage is None else Path(storage)
        if not create and not path.is_file():
            raise AbawError(
                f"no study storage at {path}: run `abaw tune` first, or pass --runs DIR / "
                "--storage URL"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalStorage

        return JournalStorage(_journal_backend(path))
    if "://" not in storage:
        raise ConfigError(
            f"--storage {storage!r}: expected a URL (postgresql://user:pw@host/db, "
            "sqlite:///runs/optuna.db) or a journal file path ending in .log"
        )
    url = _sqlalchemy_url(storage)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=None if url.startswith("sqlite") else {"pool_pre_ping": True},
                    heartbeat_interval=heartbeat,
                    grace_period=2 * heartbeat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
        except Exception as e:  # driver missing, server down, bad credentials: one sentence
            if "IntegrityError" in type(e).__name__ and attempt < 4:
                time.sleep(0.5 + attempt)  # two workers creating the tables of a new database
                continue
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise AbawError(
                f"--storage {_redact(storage)}: cannot open it ({type(e).__name__}: {first})"
            ) from None
    raise AssertionError("unreachable")


def storage_label(storage: str | None, runs: str | os.PathLike[str]) -> str:
    """Where a study lives, for messages: the journal file, or the URL without its password."""
    return str(Path(runs) / JOURNAL_FILE) if storage is None else _redact(storage)


def load_study(
    name: str, *, storage: str | None = None, runs: str | os.PathLike[str] = "runs"
) -> optuna.Study:
    """An existing study; a clear AbawError listing the storage's studies when it is absent."""
    st = open_storage(storage, runs=runs, create=False)
    names = optuna.get_all_study_names(st)
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise AbawError(
            f"no study {name!r} in {storage_label(storage, runs)}; studies there: {known}"
        )
    return optuna.load_study(study_name=name, storage=st)


# -- artifacts ------------------------------------------------------------------------------


class AtomicArtifactStore(FileSystemArtifactStore):
    """A FileSystemArtifactStore whose files appear only when complete (temp file + rename).

    Same layout as Optuna's (one file per artifact ID under the root), so
    `optuna-dashboard --artifact-dir` and `abaw.trials.artifact_store` read it as is.
    """

    def __init__(self, base_path: str | os.PathLike[str]) -> None:
        Path(base_path).mkdir(parents=True, exist_ok=True)
        super().__init__(Path(base_path))

    def write(self, artifact_id: str, content_body: Any) -> None:  # noqa: D102
        final = self._get_filepath(artifact_id)
        tmp = final.with_name(f".{artifact_id}.{socket.gethostname()}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                shutil.copyfileobj(content_body, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def remove_quietly(self, artifact_id: str) -> None:
        """Delete an artifact if it is there."""
        with contextlib.suppress(Exception):
            self.remove(artifact_id)


# -- who owns a running trial ---------------------------------------------------------------


def _proc_start(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a process from /proc, or None if unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def _owner() -> dict[str, Any]:
    info = _proc_start(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": info[1] if info else None}


def _owner_is_dead(owner: Any) -> bool:
    """True only when the owner is a process of this host that no longer runs."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False  # another machine's worker: the RDB heartbeat covers it
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    info = _proc_start(pid)
    if info is None:
        return False
    state, start = info
    return state in ("Z", "X") or (owner.get("start") is not None and start != owner["start"])


def _fail_stale(
    study: optuna.Study, store: AtomicArtifactStore, trial: FrozenTrial, reason: str
) -> bool:
    """Fail a stale RUNNING trial, delete its unrecorded files, enqueue one retry."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, T.TRIAL_FAIL_REASON, reason)
        storage.set_trial_user_attr(trial._trial_id, T.TRIAL_KEPT, False)
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
        return False  # another worker got there first
    for key, value in trial.system_attrs.items():
        if key.startswith("artifacts:"):
            with contextlib.suppress(Exception):
                store.remove_quietly(json.loads(value)["artifact_id"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=1)(study, storage.get_trial(trial._trial_id))
    return True


def recover_stale(
    study: optuna.Study, store: AtomicArtifactStore, folder: Path | None = None
) -> list[int]:
    """Fail (and retry once) RUNNING trials whose worker died; return their numbers.

    This host: the owner process is gone (any storage, at once). Other hosts, RDB
    storages: no heartbeat for twice the interval. Any storage: no owner recorded
    `UNCLAIMED_S` after the trial started (a worker killed between ask and start; it
    would otherwise hold up the study's last trials for good). Leftover temporary files
    of dead processes on this host (in the artifact store and in `folder`) are deleted.
    """
    folder = Path(folder) if folder is not None else Path(store._base_path)
    storage = study._storage
    stale: list[int] = []
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    now = datetime.datetime.now()  # Optuna's datetime_start is naive local time
    for t in running:
        owner = t.system_attrs.get(OWNER_ATTR)
        if isinstance(owner, dict):
            dead = _owner_is_dead(owner)
            reason = f"worker {owner['host']}:{owner['pid']} died while running it (killed?)"
        else:
            started = t.datetime_start or now
            dead = (now - started).total_seconds() > UNCLAIMED_S
            reason = f"no worker claimed it within {UNCLAIMED_S} s (killed before training it?)"
        if dead and _fail_stale(study, store, t, reason + "; retried"):
            stale.append(t.number)
    if optuna.storages._heartbeat.is_heartbeat_enabled(storage):
        with contextlib.suppress(Exception):
            silent = set(storage._get_stale_trial_ids(study._study_id))
            for t in running:
                if t._trial_id in silent and t.number not in stale:
                    msg = "its worker stopped sending heartbeats (killed or lost); retried"
                    if _fail_stale(study, store, t, msg):
                        stale.append(t.number)
    host = socket.gethostname()
    for tmp in [*Path(store._base_path).glob(".*.tmp"), *folder.glob(".trial-*.tmp")]:
        parts = tmp.name.split(".")
        mine = len(parts) >= 4 and parts[-3] == host and parts[-2].isdigit()
        if mine and _owner_is_dead({"host": host, "pid": int(parts[-2]), "start": None}):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
    return stale


# -- samplers, pruners ------------------------------------------------------------------------


def trial_seed(seed: int, number: int, mode: str) -> int:
    """The training seed of trial `number`: seed + number ("per-trial") or seed ("fixed")."""
    return seed + number if mode == "per-trial" else seed


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """tpe (multivariate, seeded), random or gp."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"--sampler {name!r}: expected one of {SAMPLERS}")


def median_warmup(max_epochs: int) -> int:
    """Epochs every trial runs before the median pruner may stop it: a third of them, 3 to 10.

    Slow starters (a low learning rate) look bad early and are often the best at the end;
    pruning them at epoch 3 taught TPE to avoid them. A third of 15 epochs reached random
    search's best-of-40 within half its epochs on 16 of 20 seeds, against 14 with a fixed 3;
    none of 21 other variants did better (benchmarks/bench_tune.py, docs/benchmarks.md).
    """
    share, low, high = MEDIAN_WARMUP
    return int(min(high, max(low, round(max_epochs * share))))


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """median (after a warm-up of a third of the epochs and 5 trials), hyperband or none."""
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=median_warmup(max_epochs)
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name!r}: expected one of {PRUNERS}")


# -- one worker -------------------------------------------------------------------------------


@dataclass
class _Worker:
    """Everything one worker process needs (plain values, so it crosses a spawn)."""

    sweep: str
    data: str
    overrides: dict[str, Any]
    storage: str | None
    runs: str
    artifacts: str
    study: str
    trials: int | None
    deadline: float | None  # time.time() after which no trial starts
    seed: int
    trial_seeds: str  # "per-trial" (seed + trial number) | "fixed" (seed for every trial)
    sampler: str
    pruner: str
    keep: int
    device: str
    threads: int | None
    jobs: int
    index: int = 0
    cache: Any = field(default=None, repr=False)  # DataCache (in-process worker only)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (f"{type(e).__name__}: {text}" if text else type(e).__name__)[:500]


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    return T.ranked_trials(study)


def _enters_top_k(study: optuna.Study, value: float, k: int) -> bool:
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    better = sum(
        1 for t in _completed(study) if (t.value >= value if maximize else t.value <= value)
    )
    return k > 0 and better < k


def retain(study: optuna.Study, store: AtomicArtifactStore, keep: int) -> list[int]:
    """Delete the files of completed trials outside the top `keep`; return their numbers.

    A trial's rank only worsens as trials complete, so a trial outside the top-K
    never needs its files again; one inside it always has them.
    """
    removed = []
    for t in _completed(study)[keep:]:
        ids = [t.user_attrs.get(a) for a in _ARTIFACTS]
        present = [a for a in ids if a and (Path(store._base_path) / a).exists()]
        for a in present:
            store.remove_quietly(a)
        if present:
            removed.append(t.number)
    return removed


@contextlib.contextmanager
def _sigint_held(*, replay: bool):
    """Hold off Ctrl-C while a block runs; then replay it (`replay`) or drop it.

    replay=True, around journal appends: Optuna's journal file lock is not safe against
    KeyboardInterrupt. Interrupted while waiting, it removes the lock another worker
    holds; interrupted while releasing, it raises FileNotFoundError instead, which
    would fail the trial and swallow the Ctrl-C.
    replay=False, while an interrupted trial is written as failed: a terminal's Ctrl-C
    reaches every `--jobs` worker and the parent, which passes it on to workers still
    alive, and a second SIGINT must not cut the first one's bookkeeping short.
    Outside the main thread signals cannot be set; the block then runs as it is.
    """
    caught: list[tuple[int, Any]] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *sig: caught.append(sig))
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if replay and caught and callable(previous):
            previous(*caught[0])  # the default handler raises KeyboardInterrupt here


def _journal_backend(path: Path):
    """A journal file backend whose appends (lock, write, unlock) are not cut by Ctrl-C."""
    from optuna.storages.journal import JournalFileBackend

    class _Backend(JournalFileBackend):
        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            with _sigint_held(replay=True):
                super().append_logs(logs)

    return _Backend(str(path))


def _heartbeat(trial: optuna.Trial, storage: optuna.storages.BaseStorage):
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, storage)


class _Runner:
    """One worker: asks the study for trials and trains them until the budget is spent."""

    def __init__(self, w: _Worker) -> None:
        from abaw.train import resolve_device, run_sections

        self.w = w
        self.sweep = load_sweep(w.sweep)
        self.track = get_track(self.sweep.track)
        self.sections = run_sections(self.track, self.sweep.model)
        self.space = self.sweep.searchable(w.overrides)
        self.storage = open_storage(w.storage, runs=w.runs)
        n0 = len(optuna.load_study(study_name=w.study, storage=self.storage).trials)
        seed = None if w.seed is None else w.seed + 7919 * w.index + n0  # fresh on resume
        self.study = optuna.load_study(
            study_name=w.study,
            storage=self.storage,
            sampler=make_sampler(w.sampler, seed),
            pruner=make_pruner(w.pruner, _max_epochs(self.sweep, w.overrides)),
        )
        self.store = AtomicArtifactStore(w.artifacts)
        self.device = resolve_device(w.device)
        self.cache = w.cache if w.cache is not None else DataCache()
        self.folder = Path(w.runs) / "tune" / w.study

    def run(self) -> None:
        fails = 0
        while True:
            if self.w.deadline is not None and time.time() >= self.w.deadline:
                return
            recover_stale(self.study, self.store, self.folder)
            if self.w.trials is not None:
                states = [t.state for t in self.study.get_trials(deepcopy=False)]
                done = sum(s in FINISHED for s in states)
                if done >= self.w.trials:
                    return
                if done + states.count(TrialState.RUNNING) >= self.w.trials:
                    time.sleep(0.5)  # the last trials are running elsewhere; one may fail
                    continue
            trial = self.study.ask()
            try:
                if self._surplus(trial):
                    continue
                self.storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, _owner())
                state, reason = self._trial(trial)
            except KeyboardInterrupt:
                # Anywhere between ask and tell: the trial is marked failed, never left
                # RUNNING (a RUNNING trial with no owner would hold up a resumed study).
                with _sigint_held(replay=False):
                    self._fail(trial, "interrupted (Ctrl-C)")
                raise
            if state == TrialState.FAIL:
                fails += 1
                if fails >= MAX_FAILS_IN_A_ROW:
                    raise AbawError(
                        f"{fails} trials in a row failed; the last (trial {trial.number}): {reason}"
                    )
            else:
                fails = 0

    def _surplus(self, trial: optuna.Trial) -> bool:
        """Two workers may ask at once for the last trial: the lower number runs, the other not."""
        if self.w.trials is None:
            return False
        counted = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
        ahead = sum(
            1
            for t in self.study.get_trials(deepcopy=False, states=counted)
            if t.number < trial.number
        )
        if ahead < self.w.trials:
            return False
        trial.set_user_attr(
            T.TRIAL_FAIL_REASON,
            f"not run: {self.w.trials} trials were already finished or running",
        )
        trial.set_user_attr(T.TRIAL_KEPT, False)
        self.study.tell(trial, state=TrialState.FAIL)
        return True

    def _trial(self, trial: optuna.Trial) -> tuple[TrialState, str]:
        hb = _heartbeat(trial, self.storage)
        hb.start()
        try:
            value = self._train(trial)
        except optuna.TrialPruned:
            hb.join()
            trial.set_user_attr(T.TRIAL_KEPT, False)
            self.study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED, ""
        except KeyboardInterrupt:
            with _sigint_held(replay=False):
                hb.join()
            raise
        except Exception as e:
            hb.join()
            reason = _one_line(e)
            self._fail(trial, reason)
            _free_device_memory()
            return TrialState.FAIL, reason
        hb.join()
        self.study.tell(trial, value)
        retain(self.study, self.store, self.w.keep)
        return TrialState.COMPLETE, ""

    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        with contextlib.suppress(Exception):
            trial.set_user_attr(T.TRIAL_FAIL_REASON, reason)
            trial.set_user_attr(T.TRIAL_KEPT, False)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.study.tell(trial, state=TrialState.FAIL)

    def _train(self, trial: optuna.Trial) -> float:
        from abaw.train import fit, run_metrics, write_run

        w = self.w
        seed = trial_seed(w.seed, trial.number, w.trial_seeds)
        trial.set_user_attr(T.TRIAL_SEED, seed)
        params = {name: spec.suggest(trial) for name, spec in self.space.items()}
        flat = self.sweep.resolve(params, w.overrides)
        configs = build_configs(
            flat,
            self.sections,
            where=f"{self.sweep.path} (trial {trial.number})",
            overridden=w.overrides,
        )
        task, setup = self.cache.prepare(
            self.track, Path(w.data), self.sweep.model, configs, self.device
        )
        trial.set_user_attr(T.TRIAL_SETUP_SECONDS, setup)
        config = {
            "track": self.sweep.track,
            "model": self.sweep.model,
            "sweep": str(self.sweep.path),
            "seed": seed,
            "study": w.study,
            "trial": trial.number,
            "params": params,
            "overrides": w.overrides,
            "settings": config_to_dict(configs),
        }

        def report(epoch: int, value: float) -> None:
            if math.isfinite(value):
                trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        result = fit(
            task,
            configs["train"],
            device=self.device,
            seed=seed,
            callback=report,
            show_progress=False,
            log_epochs=False,
            config=config,
        )
        value = float(result.best_score)
        trial.set_user_attr(T.TRIAL_BEST_EPOCH, result.best_epoch)
        trial.set_user_attr(T.TRIAL_EPOCHS_RUN, len(result.history))
        trial.set_user_attr(T.TRIAL_SECONDS, result.seconds)
        keep = _enters_top_k(self.study, value, w.keep)
        trial_dir = self.folder / f"trial-{trial.number:05d}"
        if keep:  # test predictions only for a trial worth keeping
            tmp = (
                self.folder / f".trial-{trial.number:05d}.{socket.gethostname()}.{os.getpid()}.tmp"
            )
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                write_run(task, result, tmp, config=config, seed=seed, test=True)
                ids = self._upload(trial, tmp)
                for attr, artifact_id in ids.items():  # recorded only after every upload
                    trial.set_user_attr(attr, artifact_id)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        trial.set_user_attr(T.TRIAL_KEPT, keep)
        trial_dir.mkdir(parents=True, exist_ok=True)
        with atomic_open(trial_dir / "config.json") as fh:
            json.dump(json.loads(json.dumps(config, default=str)), fh, indent=2)
        with atomic_open(trial_dir / "metrics.json") as fh:  # last: the trial's log is whole
            json.dump(run_metrics(task, result, seed), fh, indent=2)
        return value

    def _upload(self, trial: optuna.Trial, folder: Path) -> dict[str, str]:
        ids: dict[str, str] = {}
        try:
            for attr, name in _ARTIFACTS.items():
                ids[attr] = upload_artifact(
                    artifact_store=self.store,
                    file_path=str(folder / name),
                    study_or_trial=trial,
                )
        except BaseException:
            for artifact_id in ids.values():
                self.store.remove_quietly(artifact_id)
            raise
        return ids


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _max_epochs(sweep: Sweep, overrides: dict[str, Any]) -> int:
    flat = sweep.resolve(overrides=overrides)
    spec = sweep.searchable(overrides).get("train.epochs")
    if spec is not None and spec.high is not None:
        return int(spec.high)
    return int(flat.get("train.epochs", 100))


def _worker_process(w: _Worker) -> None:
    """Entry point of a `--jobs N` worker process (spawned)."""
    from abaw.train import set_threads

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    set_threads(jobs=w.jobs, threads=w.threads)
    try:
        _Runner(w).run()
    except KeyboardInterrupt:
        sys.exit(130)
    except AbawError as e:
        print(f"worker {w.index}: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:  # a Ctrl-C the parent passes on while this worker exits is not an error
        signal.signal(signal.SIGINT, signal.SIG_IGN)


# -- the study --------------------------------------------------------------------------------


def _create_study(
    sweep: Sweep,
    name: str,
    storage: optuna.storages.BaseStorage,
    *,
    data: Path,
    artifacts: Path | None,
    runs: Path,
    keep: int,
) -> tuple[optuna.Study, Path]:
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
    if artifacts is None:
        artifacts = Path(attrs.get(T.STUDY_ARTIFACTS) or T.default_artifacts_dir(runs))
    artifacts = artifacts.resolve()
    wanted = {
        **mine,
        T.STUDY_METRIC: sweep.metric or track.metric,
        T.STUDY_SWEEP: str(sweep.path.resolve()),
        T.STUDY_DATA: str(data.resolve()),
        T.STUDY_ARTIFACTS: str(artifacts),
        T.STUDY_KEEP: keep,
    }
    for key, value in wanted.items():
        if attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study, artifacts


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

    Returns:
        The optuna.Study (its trials carry the attributes of abaw/trials.py).
    """
    from abaw.train import run_sections, set_threads

    sw = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    overrides = dict(overrides or {})
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if keep < 0:
        raise ConfigError(f"--keep must be >= 0, got {keep}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: expected one of {SAMPLERS}")
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner {pruner!r}: expected one of {PRUNERS}")
    if trial_seeds not in TRIAL_SEEDS:
        raise ConfigError(f"--trial-seeds {trial_seeds!r}: expected one of {TRIAL_SEEDS}")
    name = study or sw.name
    try:
        safe_name(name, what="--study")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    runs, data = Path(runs), Path(data)
    if not data.is_dir():
        raise ConfigError(f"--data {data}: not a folder")
    track = get_track(sw.track)
    unknown = [
        k
        for k in sw.searchable(overrides)
        if k.partition(".")[0] not in run_sections(track, sw.model)
    ]
    if unknown:
        raise ConfigError(
            f"{sw.path}: [space] key(s) {unknown} are in no section of {sw.track}/{sw.model}"
        )
    # Pre-flight: the fixed settings and the data load, so a mistake is one sentence, not N failed trials.
    configs = build_configs(
        sw.resolve(overrides=overrides),
        run_sections(track, sw.model),
        where=str(sw.path),
        overridden=overrides,
    )
    from abaw.train import resolve_device

    dev = resolve_device(device)
    n_threads = set_threads(jobs=jobs, threads=threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    st = open_storage(storage, runs=runs)
    the_study, artifacts_dir = _create_study(
        sw,
        name,
        st,
        data=data,
        artifacts=None if artifacts is None else Path(artifacts),
        runs=runs,
        keep=keep,
    )
    cache = DataCache()
    if jobs == 1:
        cache.prepare(track, data, sw.model, configs, dev)  # loaded once, reused by every trial
    else:
        track.load_data(data, sw.model, configs)  # errors now; fills the on-disk cache
    w = _Worker(
        sweep=str(sw.path),
        data=str(data),
        overrides=overrides,
        storage=storage,
        runs=str(runs),
        artifacts=str(artifacts_dir),
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
    live = sys.stdout.isatty() if show_progress is None else show_progress
    monitor = Monitor(the_study, list(sw.searchable(overrides)), trials, live=live)
    print(
        f"study {name!r} ({sw.track}/{sw.model}) in {storage_label(storage, runs)}: "
        f"{len(the_study.trials)} trial(s) so far; target {trials or 'unlimited'} finished; "
        f"{jobs} worker(s) x {n_threads} CPU thread(s) on {dev}; artifacts in {artifacts_dir}",
        flush=True,
    )
    try:
        with monitor:
            if jobs == 1:
                w.cache = cache
                _Runner(w).run()
            else:
                _run_processes(w, jobs)
    except KeyboardInterrupt:
        monitor.final(interrupted=True)
        raise
    monitor.final()
    return the_study


def _run_processes(w: _Worker, jobs: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for i in range(jobs):
        wi = _Worker(**{**w.__dict__, "index": i, "cache": None})
        p = ctx.Process(target=_worker_process, args=(wi,), name=f"abaw-tune-{i}")
        p.start()
        procs.append(p)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        # A terminal's Ctrl-C has reached the workers too: give them a moment to fail
        # their trials, then pass it on to any still running (`kill -INT` of the parent).
        with _sigint_held(replay=False):
            grace = time.time() + 2.0
            for p in procs:
                p.join(timeout=max(0.0, grace - time.time()))
            for p in procs:
                if p.is_alive():
                    with contextlib.suppress(OSError):
                        os.kill(p.pid, signal.SIGINT)
            for p in procs:
                p.join(timeout=60)
        raise
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode not in (0, None)]
    if bad and len(bad) == len(procs):
        raise AbawError(
            "every worker stopped with an error: "
            + ", ".join(f"{n} exit {c}" for n, c in bad)
            + " (see the lines above)"
        )


# -- listing ------------------------------------------------------------------------------


def study_rows(storage: str | None, runs: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One plain dict per study of a storage: name, track, model, counts per state, best."""
    st = open_storage(storage, runs=runs, create=False)
    rows = []
    for name in sorted(optuna.get_all_study_names(st)):
        study = optuna.load_study(study_name=name, storage=st)
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
        best = _completed(study)[:1]
        info = T.study_info(study)
        rows.append(
            {
                "study": name,
                "track": info.get("track", "?"),
                "model": info.get("model", "?"),
                **counts,
                "best_value": best[0].value if best else None,
                "best_trial": best[0].number if best else None,
                "best_params": dict(best[0].params) if best else {},
            }
        )
    return rows
