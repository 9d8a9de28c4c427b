"""`--jobs N`: N spawned worker processes on this machine, and Ctrl-C across all of them.

On one CUDA device the N workers share its memory: each caps its caching allocator at
DEVICE_SHARE / N of the card (`share_device`), so one worker's large trial runs out of its
own share (that trial fails alone, abaw/tune/worker.py) instead of starving the others.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from typing import Any

import optuna

from abaw.errors import AbawError
from abaw.tune.signals import sigint_held
from abaw.tune.worker import Runner, WorkerSettings

# Share of a GPU's memory the workers of `--jobs N` divide between them; the rest is headroom
# for what the caching allocator does not count (each process's CUDA context, cuBLAS/cuDNN
# workspaces) and for other processes.
DEVICE_SHARE = 0.95


def share_device(device: Any, jobs: int) -> float | None:
    """Cap this process's share of a CUDA `device` at DEVICE_SHARE / `jobs`; the fraction set.

    Nothing on CPU or for a single job (None). Without a cap, N trials packed on one card
    grow until one of them cannot allocate, and it is not always the one that used the most.
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda" or jobs < 2:
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    fraction = DEVICE_SHARE / jobs
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return fraction


def _worker_main(w: WorkerSettings) -> None:
    """Entry point of a `--jobs N` worker process (spawned)."""
    from abaw.train import resolve_device, set_threads

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    set_threads(jobs=w.jobs, threads=w.threads)
    try:
        share_device(resolve_device(w.device), w.jobs)
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
