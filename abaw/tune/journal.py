"""The journal file of a study, safe against a crash in the middle of an append.

Optuna appends one JSON record per line under a file lock. A crash, a power loss or a full
disk during an append leaves the last line cut (no newline). Optuna's reader skips such a
line, as its recovery intends, but the next append would glue its record onto the cut one:
a garbage line in the middle, after which every read fails. So here:

- a cut last line is skipped with a warning naming the line (readers), and set aside to
  `<journal>.cut-line-N` under the journal's lock before anything is appended (writers);
- a complete line that is not a journal record (not JSON, or JSON without the op_code and
  keys Optuna's replay reads: a damaged or hand-edited journal) is a DataError naming the
  file, the line, what it holds and how to recover.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from abaw.console import warn
from abaw.errors import DataError
from abaw.tune.signals import sigint_held

_CHUNK = 1 << 16
EXPECTED = "one JSON record per line (an Optuna journal file)"


def _line_start(fh: Any, end: int) -> int:
    """The offset of the line holding byte `end - 1` (just after the previous newline)."""
    pos = end
    while pos > 0:
        step = min(_CHUNK, pos)
        pos -= step
        fh.seek(pos)
        i = fh.read(step).rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0


def _count_lines(fh: Any, end: int) -> int:
    """Newlines in the first `end` bytes."""
    fh.seek(0)
    n, left = 0, end
    while left > 0:
        block = fh.read(min(1 << 20, left))
        if not block:
            break
        n += block.count(b"\n")
        left -= len(block)
    return n


def last_line(path: Path) -> tuple[int, bytes] | None:
    """(offset, bytes) of the journal's last line; None for an empty file.

    Reads back from the end to the previous newline only: it runs before every append.
    """
    size = os.path.getsize(path)
    if size == 0:
        return None
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        cut = fh.read(1) != b"\n"
        start = _line_start(fh, size if cut else size - 1)
        fh.seek(start)
        return start, fh.read(size - start)


def line_number(path: Path, offset: int) -> int:
    """The 1-based number of the line starting at byte `offset` (for messages only)."""
    with open(path, "rb") as fh:
        return _count_lines(fh, offset) + 1


# The keys each Optuna journal operation reads unconditionally (optuna/storages/journal/
# _storage.py, JournalStorageReplayResult._apply_*), by JournalOperation value; every record
# also has "op_code" and "worker_id". Why check them: a line that is JSON but not such a
# record ({}, [1, 2], {"op_code": 5}) otherwise fails inside Optuna's replay with a KeyError,
# TypeError or AssertionError that names neither the file nor the line.
_OP_KEYS: dict[int, tuple[str, ...]] = {
    0: ("study_name", "directions"),  # CREATE_STUDY
    1: ("study_id",),  # DELETE_STUDY
    2: ("study_id", "user_attr"),  # SET_STUDY_USER_ATTR
    3: ("study_id", "system_attr"),  # SET_STUDY_SYSTEM_ATTR
    4: ("study_id", "datetime_start"),  # CREATE_TRIAL
    5: ("trial_id", "param_name", "param_value_internal", "distribution"),  # SET_TRIAL_PARAM
    6: ("trial_id", "state", "values"),  # SET_TRIAL_STATE_VALUES
    7: ("trial_id", "step", "intermediate_value"),  # SET_TRIAL_INTERMEDIATE_VALUE
    8: ("trial_id", "user_attr"),  # SET_TRIAL_USER_ATTR
    9: ("trial_id", "system_attr"),  # SET_TRIAL_SYSTEM_ATTR
    10: (),  # DISCARD_TRIALS (skipped by Optuna's reader)
}
_ONE_ENTRY = ("user_attr", "system_attr")  # Optuna asserts these hold exactly one key


def is_record(log: object) -> bool:
    """Whether `log` (one parsed line) is a record Optuna's journal replay can apply."""
    if not isinstance(log, dict):
        return False
    op = log.get("op_code")
    if isinstance(op, bool) or not isinstance(op, int) or op not in _OP_KEYS:
        return False
    if any(k not in log for k in ("worker_id", *_OP_KEYS[op])):
        return False
    return all(isinstance(log[k], dict) and len(log[k]) == 1 for k in _ONE_ENTRY if k in log)


def _is_record(line: bytes) -> bool:
    try:
        return is_record(json.loads(line))
    except ValueError:
        return False


def damaged(path: Path, line: int, data: bytes) -> DataError:
    """The error for a complete journal line that is not a record."""
    return DataError(
        path,
        "damaged journal record",
        row=line,
        expected=EXPECTED,
        found=repr(data[:60].decode("utf-8", errors="replace").rstrip("\n")),
        hint=f"Restore the journal from a backup; or keep the records before line {line} "
        f"(`head -n {line - 1} FILE > FILE.fixed`, then move FILE.fixed over FILE): the "
        "records from that line on are lost",
    )


def first_damaged_line(path: Path) -> DataError | None:
    """The first complete line of the journal that is not a JSON record, as a DataError."""
    with open(path, "rb") as fh:
        for i, line in enumerate(fh, start=1):
            if line.endswith(b"\n") and not _is_record(line):
                return damaged(path, i, line)
    return None


def check_tail(path: Path, *, writer: bool) -> None:
    """Deal with the journal's last line before it is read (and before every append).

    A cut last line: readers skip it with a warning; a writer moves it aside under the
    journal's lock (so its own append starts on a fresh line). A complete last line that is
    not a record: a DataError (an append after it would hide it in the middle).
    """
    tail = last_line(path)
    if tail is None:
        return
    start, data = tail
    if data.endswith(b"\n"):
        if not _is_record(data):
            raise damaged(path, line_number(path, start), data)
        return
    if not writer:
        time.sleep(0.2)  # a live writer's append may be in flight: look again
        tail = last_line(path)
        if tail is not None and not tail[1].endswith(b"\n"):
            warn(
                f"{path}, line {line_number(path, tail[0])}: the last record is incomplete "
                "(cut by a crash or a full disk); it is skipped (the next `abaw tune` sets it "
                "aside)"
            )
        return
    _set_aside(path)


def _set_aside(path: Path) -> None:
    """Move a cut last line to `<journal>.cut-line-N`, under the lock Optuna's appends take."""
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        tail = last_line(path)
        if tail is None or tail[1].endswith(b"\n"):
            return  # a writer that was still appending has finished its line
        start, data = tail
        line = line_number(path, start)
        aside = path.with_name(f"{path.name}.cut-line-{line}")
        aside.write_bytes(data)
        with open(path, "r+b") as fh:
            fh.truncate(start)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        lock.release()
    warn(
        f"{path}, line {line}: the last record was incomplete (cut by a crash or a full "
        f"disk); skipped and moved to {aside}"
    )


def journal_backend(path: Path, *, writer: bool) -> JournalFileBackend:
    """Optuna's journal file backend, with the checks above on open, read and append.

    Appends (lock, write, unlock) are not cut by Ctrl-C: Optuna's file lock, cut short, can
    remove another worker's lock.
    """
    if path.exists():
        check_tail(path, writer=writer)

    class _Backend(JournalFileBackend):
        def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
            try:
                for log in super().read_logs(log_number_from):
                    if not is_record(log):  # JSON, but not a record: named like garbage
                        raise ValueError("not an Optuna journal record")
                    yield log
            except ValueError:  # json.JSONDecodeError, or Optuna's "Invalid log format."
                bad = first_damaged_line(path)
                raise (bad or DataError(path, "unreadable journal", expected=EXPECTED)) from None

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            with sigint_held(replay=True):
                check_tail(path, writer=True)
                super().append_logs(logs)

    # The lock is named, not left to Optuna's default: `_set_aside` takes the same one.
    return _Backend(str(path), lock_obj=JournalFileSymlinkLock(str(path)))
