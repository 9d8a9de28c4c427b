"""What `abaw tune` shows while it runs: a live rich table on a terminal, plain lines in a log.

Kept apart from the workers (worker.py) so that the search, storage and retention logic
reads in one sitting; this file only reads the study, plus the small progress files the
workers of this machine leave (`ProgressFile`: where a running trial is inside its epoch).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from abaw import trials as T
from abaw.console import escape
from abaw.metrics import metric_label
from abaw.progress import StepProgress

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what `--trials N` counts
PROGRESS_DIR = ".progress"  # <runs>/tune/<study>/.progress/trial-NNNNN.json
LOG_PROGRESS_EVERY_S = 60.0  # log form: a line per running trial at most this often


def fmt_value(v: Any) -> str:
    """A parameter value for a table: floats to 3 significant digits."""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _params(t: FrozenTrial, names: list[str]) -> str:
    return " ".join(f"{n.split('.')[-1]}={fmt_value(t.params[n])}" for n in names if n in t.params)


def _epochs(t: FrozenTrial) -> int:
    return int(t.user_attrs.get(T.TRIAL_EPOCHS_RUN) or len(t.intermediate_values))


def _seconds(t: FrozenTrial) -> float:
    if t.datetime_start is None:
        return 0.0
    end = t.datetime_complete or type(t.datetime_start).now()
    return (end - t.datetime_start).total_seconds()


def _tags(t: FrozenTrial) -> str:
    """' [fixed]' for the sweep's defaults, ' [retry of N]' for a repeated interrupted trial."""
    out = " [fixed]" if t.user_attrs.get(T.TRIAL_FIXED_CONFIG) else ""
    if t.user_attrs.get(T.TRIAL_RETRY_OF) is not None:
        out += f" [retry of {t.user_attrs[T.TRIAL_RETRY_OF]}]"
    return out


def progress_dir(runs: str | os.PathLike[str], study: str) -> Path:
    """Where the workers of this machine leave their trials' in-epoch progress."""
    return Path(runs) / "tune" / study / PROGRESS_DIR


class ProgressFile:
    """A running trial's in-epoch progress, for the live view (`abaw.train.fit`'s sink).

    Written atomically at most once a second by the worker; removed when the trial ends.
    Only this machine's monitor reads it: another machine's trials show their epoch only.
    """

    def __init__(self, folder: Path, number: int) -> None:
        self.path = Path(folder) / f"trial-{number:05d}.json"

    def __call__(self, p: StepProgress) -> None:
        with contextlib.suppress(OSError):  # progress is a courtesy, never a failure
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(p.to_dict()), encoding="utf-8")
            os.replace(tmp, self.path)

    def __enter__(self) -> ProgressFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


def read_progress(folder: Path | None) -> dict[int, StepProgress]:
    """Trial number -> its last in-epoch progress (files of this machine's workers)."""
    out: dict[int, StepProgress] = {}
    if folder is None or not Path(folder).is_dir():
        return out
    for path in Path(folder).glob("trial-*.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            number = int(path.stem.split("-")[1])
            out[number] = StepProgress.from_dict(json.loads(path.read_text(encoding="utf-8")))
    return out


def best_so_far(study: optuna.Study, trials: list[FrozenTrial]) -> dict[int, float | None]:
    """Per trial, the best value among the trials that had completed when it finished.

    In completion order, not trial-number order: with several workers trial 5 can finish
    after trial 6, and "best" must never go backwards from one line to the next. A trial
    still running gets the best so far.
    """
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    never = datetime.datetime.max
    best, out = None, {}
    for t in sorted(trials, key=lambda t: (t.datetime_complete or never, t.number)):
        ok = t.state == TrialState.COMPLETE and t.value is not None
        if ok and (best is None or (t.value > best if maximize else t.value < best)):
            best = t.value
        out[t.number] = best
    return out


class Monitor:
    """Shows the study as it runs: a live rich table on a terminal, else one line per trial.

    It reads the storage (not the workers), so it shows every worker's trials,
    including those of other machines sharing the study; the step inside the epoch comes
    from the progress files of this machine's workers (`progress`).
    """

    def __init__(
        self,
        study: optuna.Study,
        names: list[str],
        target: int | None,
        *,
        live: bool,
        metric: str | None = None,
        progress: Path | None = None,
        log_every: float = LOG_PROGRESS_EVERY_S,
    ):
        self.study, self.names, self.target, self.live = study, names, target, live
        self.metric = metric_label(metric or T.study_info(study).get("metric"))
        self.progress, self.log_every = progress, log_every
        self.printed: set[int] = set()
        self.before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        self._best_printed: float | None = None
        self._progress_printed: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = None

    def __enter__(self) -> Monitor:
        if self.live:
            from rich.live import Live

            from abaw.console import console

            self._live = Live(self._table(), console=console, refresh_per_second=2)
            self._live.__enter__()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="abaw-monitor")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._tick()
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):  # a storage hiccup must not kill the run
                self._tick()

    def _better(self, a: float | None, b: float | None) -> float | None:
        if a is None or b is None:
            return a if b is None else b
        maximize = self.study.direction == optuna.study.StudyDirection.MAXIMIZE
        return max(a, b) if maximize else min(a, b)

    def _tick(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        if self._live is not None:
            self._live.update(self._table(trials))
            return
        best = best_so_far(self.study, trials)
        for t in sorted(trials, key=lambda t: t.datetime_complete or datetime.datetime.max):
            if t.state.is_finished() and t.number not in self.printed:
                self.printed.add(t.number)
                if t.number in self.before:
                    continue  # finished before this run started
                self._best_printed = self._better(self._best_printed, best[t.number])
                self._print_trial(t)
        self._print_progress(trials)

    def _print_trial(self, t: FrozenTrial) -> None:
        value = "" if t.value is None else f" {self.metric} {t.value:.4f}"
        so_far = "" if self._best_printed is None else f" best {self._best_printed:.4f}"
        why = t.user_attrs.get(T.TRIAL_FAIL_REASON, "")
        print(
            f"trial {t.number} {t.state.name.lower()}{value}{so_far} "
            f"epochs {_epochs(t)} {_seconds(t):.1f} s"
            + (" kept" if t.user_attrs.get(T.TRIAL_KEPT) else "")
            + _tags(t)
            + (f"  {_params(t, self.names)}" if self.names else "")
            + (f"  ({why})" if why else ""),
            flush=True,
        )

    def _print_progress(self, trials: list[FrozenTrial]) -> None:
        """Log form: where each running trial is inside its epoch, every `log_every` seconds."""
        running = {t.number for t in trials if t.state == TrialState.RUNNING}
        now = time.monotonic()
        for number, p in sorted(read_progress(self.progress).items()):
            last = self._progress_printed.setdefault(number, now)  # the first after log_every
            if number in running and now - last >= self.log_every:
                self._progress_printed[number] = now
                print(f"trial {number} running: {p.describe()}", flush=True)

    def _table(self, trials: list[FrozenTrial] | None = None):
        from rich.table import Table

        trials = trials if trials is not None else self.study.get_trials(deepcopy=False)
        best = best_so_far(self.study, trials)
        moving = read_progress(self.progress)
        done = sum(t.state in FINISHED for t in trials)
        title = f"{self.study.study_name}: {done}/{self.target or '-'} finished ({self.metric})"
        table = Table(title=title)
        cols = ("trial", "state", self.metric, "best so far", "params", "epoch", "in epoch", "s")
        for col in cols:
            table.add_column(
                col, justify="left" if col in ("state", "params", "in epoch") else "right"
            )
        recent = [t for t in trials if t.number not in self.before or t.state == TrialState.RUNNING]
        for t in recent[-15:]:
            p = moving.get(t.number) if t.state == TrialState.RUNNING else None
            table.add_row(
                str(t.number),
                escape(t.state.name.lower() + _tags(t)),  # "[fixed]" is not rich markup
                "" if t.value is None else f"{t.value:.4f}",
                "" if best[t.number] is None else f"{best[t.number]:.4f}",
                escape(_params(t, self.names)),
                f"{p.epoch}/{p.epochs}" if p else str(_epochs(t)),
                p.describe().split(": ", 1)[-1] if p else "",
                f"{_seconds(t):.0f}",
            )
        return table

    def final(self, *, interrupted: bool = False) -> None:
        """The leaderboard of the top trials and the per-trial data set-up time."""
        trials = self.study.get_trials(deepcopy=False)
        top = T.ranked_trials(self.study)[:10]
        counts = {s.name.lower(): 0 for s in TrialState}
        for t in trials:
            counts[t.state.name.lower()] += 1
        summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        setup = [
            t.user_attrs[T.TRIAL_SETUP_SECONDS]
            for t in trials
            if t.number not in self.before and T.TRIAL_SETUP_SECONDS in t.user_attrs
        ]
        lines = []
        if interrupted:
            lines.append(
                "interrupted: the running trial is marked failed; rerun the same command to "
                "resume (it runs that trial again with the same parameters)"
            )
        lines.append(f"study {self.study.study_name!r}: {summary or 'no trials'}")
        if setup:
            lines.append(
                f"per-trial data set-up: median {statistics.median(setup):.3f} s "
                f"over {len(setup)} trial(s) (data loaded once per worker)"
            )
        if self.live:
            from abaw.console import console

            if top:
                console.print(self._leaderboard(top))
            for line in lines:
                console.print(line, soft_wrap=True, markup=False)
            return
        for i, t in enumerate(top, 1):
            print(
                f"rank {i}: trial {t.number} {self.metric} {t.value:.4f} best epoch "
                f"{t.user_attrs.get(T.TRIAL_BEST_EPOCH, '')}{_tags(t)}  {_params(t, self.names)}",
                flush=True,
            )
        for line in lines:
            print(line, flush=True)

    def _leaderboard(self, top: list[FrozenTrial]):
        """The top trials as a rich table (live view)."""
        from rich.table import Table

        table = Table(title=f"top {len(top)} of {self.study.study_name} (devel {self.metric})")
        cols = ("rank", "trial", self.metric, "best epoch", "epochs", "seconds", "kept", "params")
        for col in cols:
            table.add_column(col)
        for i, t in enumerate(top, 1):
            table.add_row(
                str(i),
                escape(f"{t.number}{_tags(t)}"),
                f"{t.value:.4f}",
                str(t.user_attrs.get(T.TRIAL_BEST_EPOCH, "")),
                str(_epochs(t)),
                f"{_seconds(t):.0f}",
                "yes" if t.user_attrs.get(T.TRIAL_KEPT) else "",
                escape(_params(t, self.names)),
            )
        return table
