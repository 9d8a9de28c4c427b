"""Where a study lives: a journal file on one machine, or an RDB shared by many.

The default is a journal file `<runs>/optuna-journal.log` (no server; safe for many
processes on one machine); an RDB URL (`postgresql://...`, `mysql://...`) is shared by
workers on many machines, with Optuna's heartbeat, so a dead worker's trial is failed.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from abaw.errors import AbawError, ConfigError
from abaw.tune.signals import sigint_held

JOURNAL_FILE = "optuna-journal.log"
HEARTBEAT_S = 60  # RDB heartbeat interval; a trial silent for 2x this is failed and retried


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
    return _rdb_storage(storage, heartbeat)


def _rdb_storage(storage: str, heartbeat: int) -> optuna.storages.RDBStorage:
    """An RDB storage with Optuna's heartbeat; a failure to open it is one sentence."""
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


def _journal_backend(path: Path) -> Any:
    """A journal file backend whose appends (lock, write, unlock) are not cut by Ctrl-C."""
    from optuna.storages.journal import JournalFileBackend

    class _Backend(JournalFileBackend):
        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            with sigint_held(replay=True):
                super().append_logs(logs)

    return _Backend(str(path))
