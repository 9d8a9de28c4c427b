"""Where a study lives: a journal file on one machine, or an RDB shared by many.

The default is a journal file `<runs>/optuna-journal.log` (no server; safe for many
processes on one machine); an RDB URL (`postgresql://...`, `mysql://...`) is shared by
workers on many machines, with Optuna's heartbeat, so a dead worker's trial is failed.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from abaw.console import warn
from abaw.errors import AbawError, ConfigError
from abaw.io import folder_problem, path_error, reading, writable_dir
from abaw.tune.journal import journal_backend

JOURNAL_FILE = "optuna-journal.log"
HEARTBEAT_S = 60  # RDB heartbeat interval; a trial silent for 2x this is failed and retried
DB_CONNECT_TIMEOUT_S = 10  # RDB: give up connecting after this (ABAW_DB_CONNECT_TIMEOUT)
DB_STATEMENT_TIMEOUT_S = 300  # PostgreSQL: cancel a statement after this (..._STATEMENT_TIMEOUT)
POOL_TIMEOUT_S = 30  # SQLAlchemy: wait this long for a free pooled connection
_ANNOUNCED: set[str] = set()  # database URLs this process has said it opens (once each)


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
        bad = folder_problem(path.parent, "the run folder (--runs)") or path_error(
            path, "an Optuna journal file"
        )
        if bad is not None:
            raise bad
        if not create and not path.is_file():
            raise AbawError(
                f"no study storage at {path}: run `abaw tune` first, or pass --runs DIR / "
                "--storage URL"
            )
        if create:
            writable_dir(path.parent, "run folder (--runs)")
        from optuna.storages.journal import JournalStorage

        with reading(path, "an Optuna journal file"):
            return JournalStorage(journal_backend(path, writer=create))
    if "://" not in storage:
        raise ConfigError(
            f"--storage {storage!r}: expected a URL (postgresql://user:pw@host/db, "
            "sqlite:///runs/optuna.db) or a journal file path ending in .log"
        )
    return _rdb_storage(storage, heartbeat)


def db_timeouts() -> tuple[float, float]:
    """(connect, statement) timeouts in seconds for RDB storages; 0 = none.

    Defaults DB_CONNECT_TIMEOUT_S and DB_STATEMENT_TIMEOUT_S; the environment variables
    ABAW_DB_CONNECT_TIMEOUT and ABAW_DB_STATEMENT_TIMEOUT override them, and a URL that sets
    `connect_timeout` / `options` itself wins over both.
    """
    out = []
    for var, default in (
        ("ABAW_DB_CONNECT_TIMEOUT", DB_CONNECT_TIMEOUT_S),
        ("ABAW_DB_STATEMENT_TIMEOUT", DB_STATEMENT_TIMEOUT_S),
    ):
        text = os.environ.get(var, "").strip()
        try:
            value = float(text) if text else float(default)
        except ValueError:
            value = -1.0
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{var}={text!r}: expected seconds (a number >= 0; 0 = no limit)")
        out.append(value)
    return out[0], out[1]


def _engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine settings: a pool that checks its connections, and timeouts.

    Why: a server that accepts the connection but never answers (a wrong port behind a
    proxy, a full server) would hang `abaw tune` with no output; libpq and MySQL wait for
    ever by default.
    """
    if url.startswith("sqlite"):
        return {}
    connect, statement = db_timeouts()
    query = parse_qs(urlsplit(url).query)
    args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        if connect > 0 and "connect_timeout" not in query:
            args["connect_timeout"] = max(2, math.ceil(connect))  # libpq's minimum is 2 s
        if statement > 0 and "options" not in query:
            args["options"] = f"-c statement_timeout={int(statement * 1000)}"
    elif url.startswith("mysql"):
        if connect > 0 and "connect_timeout" not in query:
            args["connect_timeout"] = max(1, math.ceil(connect))
        if statement > 0 and "read_timeout" not in query:
            args["read_timeout"] = max(1, math.ceil(statement))
    return {"pool_pre_ping": True, "pool_timeout": POOL_TIMEOUT_S, "connect_args": args}


def _rdb_storage(storage: str, heartbeat: int) -> optuna.storages.RDBStorage:
    """An RDB storage with Optuna's heartbeat; a failure to open it is one sentence."""
    url = _sqlalchemy_url(storage)
    engine = _engine_kwargs(url)
    connect = engine.get("connect_args", {}).get("connect_timeout")
    if engine and storage not in _ANNOUNCED:  # a server: say where, before a wait can start
        _ANNOUNCED.add(storage)
        limit = f"connect timeout {connect} s" if connect else "no connect timeout"
        warn(
            f"opening the study storage {_redact(storage)} ({limit}; "
            "ABAW_DB_CONNECT_TIMEOUT=S to change)",
            label="note",
        )
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine or None,
                    heartbeat_interval=heartbeat,
                    grace_period=2 * heartbeat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
        except Exception as e:  # driver missing, server down, bad credentials: one sentence
            if "IntegrityError" in type(e).__name__ and attempt < 4:
                time.sleep(0.5 + attempt)  # two workers creating the tables of a new database
                continue
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            hint = ""
            if "timeout" in first.lower() or "timed out" in first.lower():
                hint = (
                    "; check the host, the port and that the server is up (a longer wait: "
                    "ABAW_DB_CONNECT_TIMEOUT=S)"
                )
            raise AbawError(
                f"--storage {_redact(storage)}: cannot open it ({type(e).__name__}: {first})" + hint
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
