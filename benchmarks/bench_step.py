"""Training-step efficiency: FLOPs per step against the machine's own fp32 matmul rate.

One training step is exactly the trainer's (forward, loss, backward, clipping, the
optimiser of `abaw.train._optimizer`, EMA) on random inputs of the real shapes. FLOPs are
counted by `torch.utils.flop_counter.FlopCounterMode` over one forward + backward (matmuls,
convolutions, attention; the optimiser's elementwise work is not counted, its time is), so
"share of peak" = counted FLOPs / step time / the machine's fp32 matmul rate, which this
script measures itself (a large square sgemm, best of several runs, same threads), at the
start and at the end (the higher is used). Stock `nn.Conv1d` with causal padding computes
(and is counted for) the padded outputs the TCN then chomps; `abaw.layers.causal_conv` does
not, so with `--ref` both versions' shares use the smaller count (the same mathematics).

With `--ref REV` the same steps run on the code of git revision REV (a worktree in a temp
folder), each version in its own subprocess, interleaved round by round, so both see the
same machine load; the table gives both and the speed-up.

Cases (batch shapes of the sweeps):
- eri-paper: the paper's fusion (d 256, T 30, batch 256, DeepSpectrum 1024 + PosterV2-ViT 1536,
  flatten read-out, A+V+interaction);
- eri-cpu: the same model at the CPU-sized settings (d 64, batch 64);
- eri-lstm: the MuSe-2022 LSTM (hidden 64, both feature sets, T 30, batch 256);
- expr: the Expr fusion (3 backbones 512 + 512 + 888, 64-frame windows, batch 32 windows).

    python benchmarks/bench_step.py [--ref REV] [--rounds 3] [--steps 6] [--only eri-paper,eri-cpu]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = ("eri-paper", "eri-cpu", "eri-lstm", "expr")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 matmul rate in GFLOP/s: best of `repeats` timed n x n products."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up (threads, caches)
    best = 0.0
    for _ in range(repeats):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.4:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


# -- one version's steps (runs in a subprocess with that version on sys.path) ---------------


def _eri_loss(batch: dict):
    """The trainer's ERI loss on a fixed `batch` (kept as `loss.inputs`, for the GPU script)."""
    from abaw.losses import eri_loss

    def loss(model):
        intensities, logits = model(batch)
        return eri_loss(intensities.float(), logits, batch["labels"], alpha=1.0, beta=0.01)

    loss.inputs = batch
    return loss


def eri_batch(b: int, t: int = 30, dims: dict[str, int] | None = None, device="cpu") -> dict:
    """A random ERI batch of the real layout (seeded: the same tensors on every call).

    Per modality: (b, t, width) features, zero past a random length in [t/2, t], and its
    mask; "labels": (b, 7) max-normalised. Used by bench_seed.py and gpu.py too.
    """
    import torch

    dims = dims or {"audio": 1024, "visual": 1536}
    g = torch.Generator().manual_seed(0)
    batch = {}
    for m, width in dims.items():
        lengths = torch.randint(t // 2, t + 1, (b,), generator=g)
        mask = torch.arange(t)[None, :] < lengths[:, None]
        batch[m] = torch.randn(b, t, width, generator=g) * mask[..., None]
        batch[f"{m}_mask"] = mask
    y = torch.rand(b, 7, generator=g)
    batch["labels"] = y / y.max(dim=1, keepdim=True).values
    return {k: v.to(device) for k, v in batch.items()}


def eri_fusion_case(d: int, b: int, t: int = 30, dims: dict[str, int] | None = None, device="cpu"):
    """The paper's fusion at width d, batch b: (model, loss, TrainConfig, items, unit)."""
    from abaw.eri.models import FusionConfig, build_model
    from abaw.train import TrainConfig

    dims = dims or {"audio": 1024, "visual": 1536}
    model = build_model("fusion", FusionConfig(embed_dim=d), dims=dims, seq_len=t).to(device)
    return model, _eri_loss(eri_batch(b, t, dims, device)), TrainConfig(), b, "samples"


def _eri_case(name: str, device="cpu"):
    """eri-paper, eri-cpu (the fusion at d 256 / batch 256 and d 64 / batch 64) or eri-lstm."""
    from abaw.eri.models import LstmConfig, build_model
    from abaw.train import TrainConfig

    if name != "eri-lstm":
        d, b = (256, 256) if name == "eri-paper" else (64, 64)
        return eri_fusion_case(d, b, device=device)
    dims = {"all": 2560}
    model = build_model("lstm", LstmConfig(), dims=dims, seq_len=30).to(device)
    return model, _eri_loss(eri_batch(256, 30, dims, device)), TrainConfig(), 256, "samples"


def _expr_case(device="cpu"):
    """The Expr fusion (3 backbones), 32 windows of 64 frames: (model, loss, cfg, items, unit)."""
    import torch

    from abaw.expr.models import FusionConfig, build_model
    from abaw.losses import focal_loss
    from abaw.train import TrainConfig

    g = torch.Generator().manual_seed(0)
    b, w, dims = 32, 64, [512, 512, 888]
    model = build_model("fusion", FusionConfig(), dims).to(device)
    x = torch.randn(b, w, sum(dims), generator=g).to(device)
    y = torch.randint(0, 8, (b * w,), generator=g).to(device)

    def loss(model):
        return focal_loss(model(x).reshape(-1, 8), y, gamma=2.0, label_smoothing=0.1)

    loss.inputs = {"x": x, "y": y}
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=1e-2, ema=False, clip_norm=0.1)
    return model, loss, cfg, b * w, "frames"


def trainer_step(model, loss, cfg, autocast=None):
    """The trainer's step (abaw.train._train_epoch) for `model`: forward + loss under
    `autocast` (a context factory; none on CPU), backward, clipping, the trainer's optimiser,
    EMA. Flushes denormals first, as the trainer does (where that version does)."""
    import contextlib

    import torch

    import abaw.train
    from abaw.ema import ModelEma
    from abaw.train import _optimizer

    getattr(abaw.train, "flush_denormals", lambda: None)()
    autocast = autocast or contextlib.nullcontext
    model.train()
    opt = _optimizer(model, cfg)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema else None
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        with autocast():
            value = loss(model)
        opt.zero_grad(set_to_none=True)
        value.backward()
        if cfg.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        opt.step()
        if ema is not None:
            ema.update(model)

    step.optimizer = opt
    return step


def _measure(name: str, steps: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model, loss, cfg, items, unit = _expr_case() if name == "expr" else _eri_case(name)
    step = trainer_step(model, loss, cfg)
    opt = step.optimizer

    counter = FlopCounterMode(display=False)
    with counter:
        loss(model).backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    for _ in range(2):  # warm-up: allocator, thread pools, optimiser state
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"flops": flops, "seconds": statistics.median(times), "items": items, "unit": unit}


def worker(cases: list[str], steps: int, threads: int) -> None:
    """Measure `cases` with the abaw importable here; one JSON line on stdout."""
    import torch

    torch.set_num_threads(threads)
    out = {c: _measure(c, steps) for c in cases}
    print(json.dumps(out))


# -- the driver -----------------------------------------------------------------------------


def _run(src: Path, cases: list[str], steps: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--only", ",".join(cases)]
    cmd += ["--steps", str(steps), "--threads", str(threads)]
    done = subprocess.run(cmd, env=env, cwd=src, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker for {src} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="abaw-ref-")) / "src"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev],
                   check=True, capture_output=True)  # fmt: skip
    # removed again when this script ends, so runs do not pile up worktrees in the checkout
    atexit.register(subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force",
                                     str(path)], capture_output=True, check=False)  # fmt: skip
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ref", metavar="REV", help="also time git revision REV, interleaved")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per case and round")
    p.add_argument("--only", default=",".join(CASES), help=f"cases, from {', '.join(CASES)}")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    cases = [c for c in a.only.split(",") if c]
    if a.worker:
        return worker(cases, a.steps, a.threads)
    import torch

    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    peak = matmul_rate()
    print(f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores, torch "
          f"{torch.__version__}, {a.threads} threads; fp32 matmul {peak:.0f} GFLOP/s "
          f"(2048^2 sgemm, best of 5); load average {load0[0]:.2f}")  # fmt: skip
    versions = {"current": REPO}
    if a.ref:
        versions = {f"ref {a.ref}": _worktree(a.ref), **versions}
    runs: dict[str, list[dict]] = {v: [] for v in versions}
    for r in range(a.rounds):
        for v, src in versions.items():
            runs[v].append(_run(src, cases, a.steps, a.threads))
        print(f"round {r + 1}/{a.rounds} done; load average {os.getloadavg()[0]:.2f}", flush=True)
    peak_end = matmul_rate()
    print(f"fp32 matmul at the end {peak_end:.0f} GFLOP/s; load average {os.getloadavg()[0]:.2f}")
    peak = max(peak, peak_end)
    head = f"{'case':10} {'version':14} {'GFLOP/step':>10} {'s/step':>8} {'items/s':>9} "
    print(head + f"{'GFLOP/s':>8} {'% of peak':>9}")
    for c in cases:
        # The share of peak counts the same work for every version: the least any version's
        # code was counted doing (the stock Conv1d computes the padded outputs it chomps).
        useful = min(runs[v][0][c]["flops"] for v in versions)
        secs = {}
        for v in versions:
            sec = statistics.median(run[c]["seconds"] for run in runs[v])
            m = runs[v][0][c]
            secs[v] = sec
            rate = useful / sec / 1e9
            print(f"{c:10} {v:14} {m['flops'] / 1e9:10.2f} {sec:8.4f} "
                  f"{m['items'] / sec:9.0f} {rate:8.1f} {100 * rate / peak:8.1f}%")  # fmt: skip
        if len(secs) == 2:
            ref, cur = secs.values()
            print(f"{c:10} speed-up {ref / cur:.2f}x")
    if len(versions) == 2:
        print("GFLOP/step: as counted on each version's code; GFLOP/s and % of peak divide the")
        print("smaller count (the same mathematics) by each version's time.")


if __name__ == "__main__":
    main()
