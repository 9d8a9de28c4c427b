"""`--jobs N`: N spawned worker processes on this machine, and Ctrl-C across all of them."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time

import optuna

from abaw.errors import AbawError
from abaw.tune.signals import sigint_held
from abaw.tune.worker import Runner, WorkerSettings


def _worker_main(w: WorkerSettings) -> None:
    """Entry point of a `--jobs N` worker process (spawned)."""
    from abaw.train import set_threads

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    set_threads(jobs=w.jobs, threads=w.threads)
    try:
        Runner(w).run()
    except KeyboardInterrupt:
        sys.exit(130)
    except AbawError as e:
        print(f"worker {w.index}: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:  # a Ctrl-C the parent passes on while this worker exits is not an error
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_pool(w: WorkerSettings, *, jobs: int) -> None:
    """Run `jobs` worker processes to the end; an error only when every one of them failed."""
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for i in range(jobs):
        wi = WorkerSettings(**{**w.__dict__, "index": i, "cache": None})
        p = ctx.Process(target=_worker_main, args=(wi,), name=f"abaw-tune-{i}")
        p.start()
        procs.append(p)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        # A terminal's Ctrl-C has reached the workers too: give them a moment to fail
        # their trials, then pass it on to any still running (`kill -INT` of the parent).
        with sigint_held(replay=False):
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
