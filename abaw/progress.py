"""What a training run shows while it trains, inside an epoch too, so slow is never taken for hung.

An epoch of a full-scale model on a CPU takes many minutes; a table that says "epoch 0" all
that time looks like a hang. `TrainProgress` (used by `abaw.train.fit`) follows every
optimiser step and shows, at a bounded rate:

- on a terminal: the rich bar of the epochs, whose text gives the step inside the epoch;
- in a log (one line per epoch): a line every `every` seconds inside a long epoch;
- to a sink (the tuner's live table, abaw/tune/view.py): a `StepProgress` at most once a second.

Steps per epoch come from the task (`steps_per_epoch()`, optional) or the epoch before.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from abaw.console import progress

LOG_EVERY_S = 30.0  # a log line inside an epoch at most this often
SINK_EVERY_S = 1.0  # the sink (the tuner's progress file) at most this often
BAR_EVERY_S = 0.5  # the bar's text at most this often


def fmt_duration(seconds: float) -> str:
    """45s, 2m10s, 1h02m: how long, at a glance."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class StepProgress:
    """Where a run is inside an epoch."""

    epoch: int  # 1-based epoch in progress
    epochs: int  # maximum epochs of the run
    step: int  # optimiser steps done in this epoch
    steps: int | None  # steps in the epoch, when known
    samples: int  # batch items done in this epoch (ERI samples, Expr windows)
    seconds: float  # since the epoch started
    unit: str = "samples"

    @property
    def rate(self) -> float:
        """Batch items per second in this epoch."""
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left in this epoch (None until the step count and a rate are known)."""
        if not self.steps or self.step <= 0 or self.step > self.steps:
            return None
        return self.seconds / self.step * (self.steps - self.step)

    def describe(self) -> str:
        """'epoch 2/30: step 120/400 (30 %), 85.2 samples/s, 2m10s left in the epoch'."""
        known = self.steps and self.step <= self.steps
        of = f"/{self.steps} ({100 * self.step / self.steps:.0f} %)" if known else ""
        eta = self.eta
        left = "" if eta is None else f", {fmt_duration(eta)} left in the epoch"
        return (
            f"epoch {self.epoch}/{self.epochs}: step {self.step}{of}, "
            f"{self.rate:.1f} {self.unit}/s{left}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the tuner writes them to a file its live table reads)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepProgress:
        """The inverse of `to_dict` (unknown keys ignored)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def batch_items(batch: Any) -> int:
    """Items in a batch: the first tensor's leading size (ERI samples, Expr windows)."""
    if isinstance(batch, dict) and batch:
        first = next(iter(batch.values()))
        shape = getattr(first, "shape", None)
        if shape:
            return int(shape[0])
    return 0


class TrainProgress:
    """The bar, the per-epoch log lines and the in-epoch progress of one run.

    Args:
        description: the bar's label.
        epochs: maximum epochs.
        steps: optimiser steps per epoch if known (else learnt from the first epoch).
        bar: show the rich bar (a terminal).
        log: print one line per epoch, and one every `every` seconds inside an epoch.
        every: seconds between in-epoch log lines (default LOG_EVERY_S, read at run time).
        sink: called with a `StepProgress` at most once a second (e.g. the tuner's file).
        unit: what a batch item is called ("samples", "windows").
    """

    def __init__(
        self,
        description: str,
        epochs: int,
        *,
        steps: int | None = None,
        bar: bool = False,
        log: bool = False,
        every: float | None = None,
        sink: Callable[[StepProgress], None] | None = None,
        unit: str = "samples",
    ) -> None:
        self.epochs, self.steps, self.log, self.sink = epochs, steps, log, sink
        self.every = LOG_EVERY_S if every is None else every
        self.unit = unit
        self._bar = progress(disable=not bar)
        self._job = self._bar.add_task(description, total=epochs, info="")
        self.epoch, self.step_n, self.samples = 0, 0, 0
        self._t0 = self._last_log = self._last_sink = self._last_bar = 0.0
        self.info = ""

    def __enter__(self) -> TrainProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.__exit__(*exc)

    def start_epoch(self, epoch: int) -> None:
        """A new epoch begins (steps and time restart)."""
        self.epoch, self.step_n, self.samples = epoch, 0, 0
        self._t0 = self._last_log = self._last_sink = self._last_bar = time.perf_counter()

    def now(self) -> StepProgress:
        """Where the epoch in progress is."""
        return StepProgress(
            self.epoch,
            self.epochs,
            self.step_n,
            self.steps,
            self.samples,
            time.perf_counter() - self._t0,
            self.unit,
        )

    def step(self, items: int) -> None:
        """One optimiser step of `items` batch items is done (cheap unless something is due)."""
        self.step_n += 1
        self.samples += items
        t = time.perf_counter()
        if self.sink is not None and t - self._last_sink >= SINK_EVERY_S:
            self._last_sink = t
            self.sink(self.now())
        if self.log and t - self._last_log >= self.every:
            self._last_log = t
            print(f"  {self.now().describe()}", flush=True)
        if t - self._last_bar >= BAR_EVERY_S and not self._bar.disable:
            self._last_bar = t
            self._bar.update(self._job, info=f"{self.info}  [{self.now().describe()}]")

    def end_epoch(self, info: str) -> None:
        """The epoch is validated: advance the bar, print its line (log form), learn its steps."""
        seconds = time.perf_counter() - self._t0
        if not self.steps or self.step_n > self.steps:
            self.steps = self.step_n  # the next epoch's ETA
        self.info = info
        self._bar.update(self._job, advance=1, info=info)
        if self.sink is not None:
            self.sink(self.now())
        if self.log:
            print(f"epoch {self.epoch}/{self.epochs}  {info}  {seconds:.1f} s", flush=True)


def stderr_is_terminal() -> bool:
    """Whether a bar can be drawn (stderr is a terminal)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
