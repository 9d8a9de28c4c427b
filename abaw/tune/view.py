"""What `abaw tune` shows while it runs: a live rich table on a terminal, plain lines in a log.

Kept apart from the workers (worker.py) so that the search, storage and retention logic
reads in one sitting; this file only reads the study.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from abaw import trials as T

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what `--trials N` counts


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


class Monitor:
    """Shows the study as it runs: a live rich table on a terminal, else one line per trial.

    It reads the storage (not the workers), so it shows every worker's trials,
    including those of other machines sharing the study.
    """

    def __init__(self, study: optuna.Study, names: list[str], target: int | None, *, live: bool):
        self.study, self.names, self.target, self.live = study, names, target, live
        self.printed: set[int] = set()
        self.start_n = len(study.trials)
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

    def _best_so_far(self, trials: list[FrozenTrial]) -> dict[int, float | None]:
        maximize = self.study.direction == optuna.study.StudyDirection.MAXIMIZE
        best, out = None, {}
        for t in sorted(trials, key=lambda t: t.number):
            ok = t.state == TrialState.COMPLETE and t.value is not None
            if ok and (best is None or (t.value > best if maximize else t.value < best)):
                best = t.value
            out[t.number] = best
        return out

    def _tick(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        if self._live is not None:
            self._live.update(self._table(trials))
            return
        best = self._best_so_far(trials)
        for t in trials:
            if t.state.is_finished() and t.number not in self.printed:
                self.printed.add(t.number)
                if t.number < self.start_n:
                    continue  # finished before this run started
                value = "" if t.value is None else f" value {t.value:.4f}"
                so_far = "" if best[t.number] is None else f" best {best[t.number]:.4f}"
                why = t.user_attrs.get(T.TRIAL_FAIL_REASON, "")
                print(
                    f"trial {t.number} {t.state.name.lower()}{value}{so_far} "
                    f"epochs {_epochs(t)} {_seconds(t):.1f} s"
                    + (" kept" if t.user_attrs.get(T.TRIAL_KEPT) else "")
                    + (f"  {_params(t, self.names)}" if self.names else "")
                    + (f"  ({why})" if why else ""),
                    flush=True,
                )

    def _table(self, trials: list[FrozenTrial] | None = None):
        from rich.table import Table

        trials = trials if trials is not None else self.study.get_trials(deepcopy=False)
        best = self._best_so_far(trials)
        done = sum(t.state in FINISHED for t in trials)
        title = f"{self.study.study_name}: {done}/{self.target or '-'} finished"
        table = Table(title=title)
        for col in ("trial", "state", "value", "best so far", "params", "epoch", "seconds"):
            table.add_column(col, justify="left" if col in ("state", "params") else "right")
        recent = [t for t in trials if t.number >= self.start_n or t.state == TrialState.RUNNING]
        for t in recent[-15:]:
            table.add_row(
                str(t.number),
                t.state.name.lower(),
                "" if t.value is None else f"{t.value:.4f}",
                "" if best[t.number] is None else f"{best[t.number]:.4f}",
                _params(t, self.names),
                str(_epochs(t)),
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
            if t.number >= self.start_n and T.TRIAL_SETUP_SECONDS in t.user_attrs
        ]
        lines = []
        if interrupted:
            lines.append("interrupted: the running trial is marked failed; rerun to resume")
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
                f"rank {i}: trial {t.number} value {t.value:.4f} best epoch "
                f"{t.user_attrs.get(T.TRIAL_BEST_EPOCH, '')}  {_params(t, self.names)}",
                flush=True,
            )
        for line in lines:
            print(line, flush=True)

    def _leaderboard(self, top: list[FrozenTrial]):
        """The top trials as a rich table (live view)."""
        from rich.table import Table

        table = Table(title=f"top {len(top)} of {self.study.study_name}")
        for col in ("rank", "trial", "value", "best epoch", "epochs", "seconds", "kept", "params"):
            table.add_column(col)
        for i, t in enumerate(top, 1):
            table.add_row(
                str(i),
                str(t.number),
                f"{t.value:.4f}",
                str(t.user_attrs.get(T.TRIAL_BEST_EPOCH, "")),
                str(_epochs(t)),
                f"{_seconds(t):.0f}",
                "yes" if t.user_attrs.get(T.TRIAL_KEPT) else "",
                _params(t, self.names),
            )
        return table
