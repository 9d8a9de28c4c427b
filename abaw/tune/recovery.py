"""Who owns a running trial, and what happens to it when its worker dies.

Each RUNNING trial records its owner (host, PID, process start time). On start, and
before every trial, a worker fails the RUNNING trials whose owner process on this host
is gone (the journal file's equivalent of the RDB heartbeat), deletes their unrecorded
files and enqueues a retry with the same parameters.

This is the one module of `abaw` that touches Optuna's private API; everything else goes
through the small public functions below. The private names, pinned against the
installed Optuna by tests/test_tune_private_api.py (an upgrade that moves one fails there
with a sentence naming it):

- `Study._storage`, `Study._study_id`: the storage and ID of a study;
- `Trial._trial_id` / `FrozenTrial._trial_id`: a trial's storage ID (its number is per study);
- `RDBStorage._get_stale_trial_ids`: the trials without a heartbeat for the grace period;
- `optuna.storages._heartbeat.is_heartbeat_enabled`, `get_heartbeat_thread`;
- `FileSystemArtifactStore._base_path`, `_get_filepath`: the store's folder and file names.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from abaw import trials as T

OWNER_ATTR = "abaw:owner"  # trial system attribute: {"host", "pid", "start"} of the worker
UNCLAIMED_S = 120  # a RUNNING trial no worker claimed (killed between ask and start) is stale

# -- Optuna's private API, in one place -------------------------------------------------------


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes (Optuna keeps it private)."""
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's ID in its storage (unique across studies, unlike `trial.number`)."""
    return trial._trial_id


def heartbeat(trial: optuna.Trial, *, storage: optuna.storages.BaseStorage) -> Any:
    """A thread (start/join) that records `trial`'s heartbeat on an RDB storage; a no-op else."""
    return get_heartbeat_thread(trial_id(trial), storage)


def has_heartbeat(study: optuna.Study) -> bool:
    """Whether the study's storage records heartbeats (RDB storages of `open_storage`)."""
    return is_heartbeat_enabled(study._storage)


def silent_trial_ids(study: optuna.Study) -> set[int]:
    """IDs of the study's RUNNING trials without a heartbeat for the grace period."""
    return set(study._storage._get_stale_trial_ids(study._study_id))


def artifact_root(store: FileSystemArtifactStore) -> Path:
    """The folder of a file-system artifact store."""
    return Path(store._base_path)


def artifact_file(store: FileSystemArtifactStore, *, artifact_id: str) -> Path:
    """The file of an artifact ID in a file-system artifact store (Optuna's checked path)."""
    return store._get_filepath(artifact_id)


# -- who owns a running trial ---------------------------------------------------------------


def temp_name(stem: str) -> str:
    """A temporary name that `recover_stale` can trace to this process: `.stem.host.pid.tmp`."""
    return f".{stem}.{socket.gethostname()}.{os.getpid()}.tmp"


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


def set_owner(trial: optuna.Trial, *, storage: optuna.storages.BaseStorage) -> None:
    """Record this process as the owner of a RUNNING trial (so a rerun knows when it died)."""
    storage.set_trial_system_attr(trial_id(trial), OWNER_ATTR, _owner())


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


# -- stale trials -----------------------------------------------------------------------------


def _fail_stale(
    study: optuna.Study, store: FileSystemArtifactStore, trial: FrozenTrial, reason: str
) -> bool:
    """Fail a stale RUNNING trial, delete its unrecorded files, enqueue one retry."""
    storage, tid = storage_of(study), trial_id(trial)
    try:
        storage.set_trial_user_attr(tid, T.TRIAL_FAIL_REASON, reason)
        storage.set_trial_user_attr(tid, T.TRIAL_KEPT, False)
        if not storage.set_trial_state_values(tid, state=TrialState.FAIL):
            return False
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
        return False  # another worker got there first
    for key, value in trial.system_attrs.items():
        if key.startswith("artifacts:"):
            with contextlib.suppress(Exception):
                store.remove(json.loads(value)["artifact_id"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=1)(study, storage.get_trial(tid))
    return True


def recover_stale(
    study: optuna.Study, store: FileSystemArtifactStore, folder: Path | None = None
) -> list[int]:
    """Fail (and retry once) RUNNING trials whose worker died; return their numbers.

    This host: the owner process is gone (any storage, at once). Other hosts, RDB
    storages: no heartbeat for twice the interval. Any storage: no owner recorded
    `UNCLAIMED_S` after the trial started (a worker killed between ask and start; it
    would otherwise hold up the study's last trials for good). Leftover temporary files
    of dead processes on this host (in the artifact store and in `folder`) are deleted.
    """
    folder = Path(folder) if folder is not None else artifact_root(store)
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
    if has_heartbeat(study):
        with contextlib.suppress(Exception):
            silent = silent_trial_ids(study)
            for t in running:
                if trial_id(t) in silent and t.number not in stale:
                    msg = "its worker stopped sending heartbeats (killed or lost); retried"
                    if _fail_stale(study, store, t, msg):
                        stale.append(t.number)
    _remove_dead_temp_files(artifact_root(store), folder)
    return stale


def _remove_dead_temp_files(root: Path, folder: Path) -> None:
    """Delete the `temp_name` files (in `root`) and folders (in `folder`) of dead processes."""
    host = socket.gethostname()
    for tmp in [*root.glob(".*.tmp"), *folder.glob(".trial-*.tmp")]:
        parts = tmp.name.split(".")
        mine = len(parts) >= 4 and parts[-3] == host and parts[-2].isdigit()
        if mine and _owner_is_dead({"host": host, "pid": int(parts[-2]), "start": None}):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
