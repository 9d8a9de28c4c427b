"""Ctrl-C held off around the few blocks that must not be cut short (journal appends, bookkeeping)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def sigint_held(*, replay: bool) -> Iterator[None]:
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
