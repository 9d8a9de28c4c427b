"""Where the memory of `abaw tune` goes (issue #19): the process tree, and one worker's phases.

`tree`: runs a command (e.g. `abaw tune ... --jobs 2`) and samples every process of its tree
from /proc/<pid>/smaps_rollup every 0.2 s: peak RSS summed over the processes (what `top`
adds up; shared library pages count once per process), peak PSS (shared pages divided
among the processes that map them: the honest total), peak private anonymous memory, and
the largest single process.

`phases`: one worker's steps in one process (import, load the data, build the task and the
model, train epochs), RSS split into anonymous (private heap) and file-backed (libraries, the
memory-mapped data cache: shared between workers, reclaimable) after each step.

    python benchmarks/bench_tune_memory.py tree -- abaw tune --sweep sweeps/eri-fusion-mean.toml \\
        --data demo/data/eri --trials 4 --jobs 2 --set train.epochs=2 --runs /tmp/mem-runs
    python benchmarks/bench_tune_memory.py phases --data demo/data/eri --embed-dim 256 --readout flatten
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rollup(pid: int | str = "self") -> dict[str, float]:
    """MB per field of /proc/<pid>/smaps_rollup (Rss, Pss, Anonymous, ...); {} if gone."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    out[parts[0][:-1]] = int(parts[1]) / 1024
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pids
    for k in kids:
        pids += _tree(int(k))
    return pids


def tree(cmd: list[str]) -> None:
    """Run `cmd`; print the peaks over its process tree."""
    load = os.getloadavg()
    proc = subprocess.Popen(cmd)
    peak = {"rss": 0.0, "pss": 0.0, "anon": 0.0, "one": 0.0}
    t0 = time.time()
    while proc.poll() is None:
        stats = [_rollup(p) for p in _tree(proc.pid)]
        peak["rss"] = max(peak["rss"], sum(s.get("Rss", 0) for s in stats))
        peak["pss"] = max(peak["pss"], sum(s.get("Pss", 0) for s in stats))
        peak["anon"] = max(peak["anon"], sum(s.get("Anonymous", 0) for s in stats))
        peak["one"] = max(peak["one"], max((s.get("Rss", 0) for s in stats), default=0))
        time.sleep(0.2)
    print(
        f"peak RSS summed over the processes {peak['rss']:.0f} MB; peak PSS {peak['pss']:.0f} MB; "
        f"peak anonymous {peak['anon']:.0f} MB; largest process {peak['one']:.0f} MB; "
        f"{time.time() - t0:.0f} s; load average before {load[0]:.2f}, after "
        f"{os.getloadavg()[0]:.2f}; exit {proc.returncode}"
    )


def _line(what: str) -> None:
    r = _rollup()
    rss, anon = r.get("Rss", 0), r.get("Anonymous", 0)
    print(f"{what:40s} RSS {rss:6.0f} MB  anonymous {anon:6.0f}  file-backed {rss - anon:6.0f}")


def phases(data: Path, embed_dim: int, readout: str, epochs: int) -> None:
    """One worker's steps, in this process."""
    _line("start")
    import torch

    from abaw.sweep import build_configs, load_sweep
    from abaw.track import get_track
    from abaw.train import fit, run_sections

    torch.set_num_threads(1)
    _line("import torch + abaw")
    sw = load_sweep(ROOT / "sweeps" / "eri-fusion-mean.toml")
    tr = get_track(sw.track)
    pins = {"model.embed_dim": embed_dim, "model.readout": readout, "train.epochs": epochs}
    configs = build_configs(sw.resolve(overrides=pins), run_sections(tr, sw.model))
    loaded = tr.load_data(data, sw.model, configs)
    _line("data loaded (cache memory-mapped)")
    task = tr.prepare(data, sw.model, configs, torch.device("cpu"), data=loaded)
    _line("task prepared")
    model = task.build_model()
    n = sum(p.numel() for p in model.parameters())
    _line(f"model built ({n / 1e6:.1f} M parameters)")
    del model

    def each(epoch: int, score: float) -> None:
        _line(f"end of epoch {epoch}")

    fit(task, configs["train"], device=torch.device("cpu"), show_progress=False,
        log_epochs=False, callback=each)  # fmt: skip
    _line("after fit")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="part", required=True)
    t = sub.add_parser("tree", help="run a command and sample its process tree")
    t.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    ph = sub.add_parser("phases", help="one worker's phases in this process")
    ph.add_argument("--data", type=Path, required=True, help="an ERI data set (demo/data/eri)")
    ph.add_argument("--embed-dim", type=int, default=256)
    ph.add_argument("--readout", default="flatten", choices=("flatten", "mean"))
    ph.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    if a.part == "tree":
        cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
        if not cmd:
            sys.exit("tree: give the command after --")
        tree(cmd)
    else:
        phases(a.data, a.embed_dim, a.readout, a.epochs)


if __name__ == "__main__":
    main()
