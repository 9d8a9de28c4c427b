"""One worker: asks the study for trials, trains each as an `abaw train` run, tells the result.

A trial is exactly an `abaw train` run with sampled settings: the sweep's `[fixed]`
values, a sample of its `[space]` (minus keys pinned with `--set`), then
`abaw.train.fit`, which reports the devel metric to Optuna after every epoch so the
pruner can stop a poor trial early. Nothing here knows a track: the Track builds the
task, the trainer trains it.

What a completed trial leaves (names of the attributes: abaw/trials.py, the contract):
- the files of the top-K completed trials (checkpoint, devel and test predictions) in
  the artifact store; test predictions are only computed for a trial that enters the
  top-K, and files of displaced trials are deleted;
- `<runs>/tune/<study>/trial-NNNNN/{config.json,metrics.json}`: a few KB per completed
  trial, on the machine that ran it (the log; metrics.json last).

Each artifact is written to a temporary name and renamed, and its ID is recorded on the
trial only after the upload.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import upload_artifact
from optuna.trial import TrialState

from abaw import trials as T
from abaw.errors import AbawError
from abaw.io import atomic_open, ensure_dir
from abaw.sweep import Sweep, build_configs, config_to_dict, load_sweep
from abaw.track import DataCache, get_track
from abaw.tune.artifacts import AtomicArtifactStore
from abaw.tune.enqueue import INTERRUPTED
from abaw.tune.recovery import artifact_root, heartbeat, recover_stale, set_owner, temp_name
from abaw.tune.search import make_pruner, make_sampler, trial_seed
from abaw.tune.signals import sigint_held
from abaw.tune.storage import open_storage
from abaw.tune.view import FINISHED, ProgressFile, progress_dir

MAX_FAILS_IN_A_ROW = 3  # a worker stops when this many trials in a row raise
_ARTIFACTS = {
    T.TRIAL_CHECKPOINT: "checkpoint.pt",
    T.predictions_attr("devel"): "predictions-devel.npz",
    T.predictions_attr("test"): "predictions-test.npz",
}


@dataclass
class WorkerSettings:
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


def _enters_top_k(study: optuna.Study, value: float, k: int) -> bool:
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    better = sum(
        1 for t in T.ranked_trials(study) if (t.value >= value if maximize else t.value <= value)
    )
    return k > 0 and better < k


def retain(study: optuna.Study, store: AtomicArtifactStore, keep: int) -> list[int]:
    """Delete the files of completed trials outside the top `keep`; return their numbers.

    A trial's rank only worsens as trials complete, so a trial outside the top-K
    never needs its files again; one inside it always has them.
    """
    removed = []
    for t in T.ranked_trials(study)[keep:]:
        ids = [t.user_attrs.get(a) for a in _ARTIFACTS]
        present = [a for a in ids if a and (artifact_root(store) / a).exists()]
        for a in present:
            store.remove_quietly(a)
        if present:
            removed.append(t.number)
    return removed


def failure_reason(e: BaseException, *, device: Any, jobs: int) -> str:
    """A failed trial's reason, one line; running out of device memory says what to change.

    With `--jobs N` on one GPU each worker may use about 1/N of its memory (abaw/tune/pool.py),
    so a trial that fits alone can run out when packed: the reason names the sharing first, so
    the 500-character cut only ever shortens torch's own account of the allocator.
    """
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):
        share = (
            f"{jobs} workers share the device; try fewer --jobs or a smaller batch"
            if jobs > 1
            else "the only worker on the device; try a smaller batch or model"
        )
        return f"out of device memory on {device} ({share}): {_one_line(e)}"[:500]
    return _one_line(e)


def _free_device_memory() -> None:
    """Hand a failed trial's cached device memory back, so the next trial (or another worker
    packed on the same GPU) can use it. Call it outside the `except` clause: until then the
    traceback holds the trial's model and activations."""
    import gc

    import torch

    if torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def _max_epochs(sweep: Sweep, overrides: dict[str, Any]) -> int:
    flat = sweep.resolve(overrides=overrides)
    spec = sweep.searchable(overrides).get("train.epochs")
    if spec is not None and spec.high is not None:
        return int(spec.high)
    return int(flat.get("train.epochs", 100))


class Runner:
    """One worker: asks the study for trials and trains them until the budget is spent."""

    def __init__(self, w: WorkerSettings) -> None:
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
        """Trials until `trials` are finished in the study (any worker's), or the deadline."""
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
                set_owner(trial, storage=self.storage)
                state, reason = self._trial(trial)
            except KeyboardInterrupt:
                # Anywhere between ask and tell: the trial is marked failed, never left
                # RUNNING (a RUNNING trial with no owner would hold up a resumed study).
                with sigint_held(replay=False):
                    self._fail(trial, INTERRUPTED)
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
        hb = heartbeat(trial, storage=self.storage)
        hb.start()
        reason = None
        try:
            value = self._train(trial)
        except optuna.TrialPruned:
            hb.join()
            trial.set_user_attr(T.TRIAL_KEPT, False)
            self.study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED, ""
        except KeyboardInterrupt:
            with sigint_held(replay=False):
                hb.join()
            raise
        except Exception as e:
            hb.join()
            reason = failure_reason(e, device=self.device, jobs=self.w.jobs)
            self._fail(trial, reason)
        if reason is not None:  # out of the except clause: the traceback is gone
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
        """The objective: one `abaw train` run with the trial's settings; the devel score."""
        from abaw.train import fit

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

        with ProgressFile(progress_dir(w.runs, w.study), trial.number) as shown:
            result = fit(
                task,
                configs["train"],
                device=self.device,
                seed=seed,
                callback=report,
                show_progress=False,
                log_epochs=False,
                config=config,
                on_progress=shown,
            )
        return self._record(trial, task, result, config=config, seed=seed)

    def _record(
        self, trial: optuna.Trial, task: Any, result: Any, *, config: dict[str, Any], seed: int
    ) -> float:
        """A trained trial's numbers, its files if it enters the top-K, and its log."""
        from abaw.train import run_metrics, write_run

        value = float(result.best_score)
        trial.set_user_attr(T.TRIAL_BEST_EPOCH, result.best_epoch)
        trial.set_user_attr(T.TRIAL_EPOCHS_RUN, len(result.history))
        trial.set_user_attr(T.TRIAL_SECONDS, result.seconds)
        keep = _enters_top_k(self.study, value, self.w.keep)
        trial_dir = self.folder / f"trial-{trial.number:05d}"
        if keep:  # test predictions only for a trial worth keeping
            tmp = self.folder / temp_name(f"trial-{trial.number:05d}")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                write_run(task, result, tmp, config=config, seed=seed, test=True)
                ids = self._upload(trial, tmp)
                for attr, artifact_id in ids.items():  # recorded only after every upload
                    trial.set_user_attr(attr, artifact_id)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        trial.set_user_attr(T.TRIAL_KEPT, keep)
        ensure_dir(trial_dir, "trial log folder")
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
