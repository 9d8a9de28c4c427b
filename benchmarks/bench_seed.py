"""Our ERI fusion's training step against the seed's own implementation, side by side.

The seed is the ABAW5 ERI winner's public PyTorch Lightning code, github.com/cyinen/
CVPR2023-ABAW5-ERI. Its fusion model is `MutilModel` in `model/vitmodel.py` (TCN embeddings
`TEmbeddings` -> `model/basemodel_1D.TemporalConvNet` with weight-normed convolutions; per
modality a `model/transformer.ModalEncoder`, 2 heads of width 64, FF 512, pre-norm GELU; an
interaction `ModalEncoder` over both modalities, 8 heads of width 64; no padding mask; flatten
read-out). The repository's last commit (064dcb6, "Delete vitmodel.py") deleted that file
while `model/model_interface.py` still calls it, so it has to be restored from the commit
before (f449e2d). Get a checkout with the model file:

    git clone https://github.com/cyinen/CVPR2023-ABAW5-ERI /tmp/seed-eri
    git -C /tmp/seed-eri checkout f449e2d -- model/vitmodel.py

or export that commit from a bare mirror:
`mkdir /tmp/seed-eri && git --git-dir=MIRROR archive f449e2d | tar -x -C /tmp/seed-eri`.
Nothing of the seed is copied here: this script imports `model/vitmodel.py` (with its
siblings `transformer.py`, `basemodel_1D.py`) and `losses/loss.py` from that folder at run
time (`losses/loss.py` is stored with "\\r\\r\\n" line ends that current Python rejects; the
script normalises them in memory). It needs `einops` (imported by the seed's
`transformer.py`; `pip install einops`), and neither PyTorch Lightning nor anything else of
the seed's requirements: the model folder is imported as a bare package, so
`model/__init__.py` (-> Lightning) never runs.

One training step of each side, on the same random batch of the real shapes (T 30,
DeepSpectrum 1024 + PosterV2-ViT 1536 features, zero-padded past a random length, labels
max-normalised: `bench_step.eri_batch`):

- seed: what its `MInterface` (model/model_interface.py) does per step under Lightning with
  `run.sh`'s flags, fp32: `optimizer.zero_grad()`; `MutilModel([1024, 1536], d, 30)` forward on
  the list of feature tensors; loss = `WrappedMSELoss('mean')`(sigmoid intensities, labels)
  + `ClassLoss(0.01)` (cross-entropy of the class head against the one-hot of labels == 1);
  the EMA update of `update_model_ema(0.99)` (a Python loop of `mul_`/`add_` over the
  parameters, run inside training_step, i.e. before backward); backward;
  `clip_grad_norm_(0.1)` over the optimiser's parameters (`--gradient_clip_val 0.1`);
  `torch.optim.Adam(self.parameters(), lr=1e-4, weight_decay=1e-3)` step, where
  `self.parameters()` of the LightningModule also holds the EMA copy's parameters (they never
  get a gradient, so Adam and clipping skip them, as in the seed). Not reproduced (no
  Lightning here): Lightning's per-step bookkeeping (`self.log` of the loss on step and
  epoch, progress bar, callbacks, keeping each step's outputs for `training_epoch_end`), the
  data loader, and the per-epoch StepLR; all of that only adds to the seed's time, so the
  seed's figures are a lower bound (a conservative comparison for us).
- ours: `bench_step.eri_fusion_case(d, batch)` (`FusionConfig(embed_dim=d)`, `eri_loss`
  alpha 1 beta 0.01) and exactly `bench_step._measure`'s step, i.e. the trainer's
  `_train_epoch`: `abaw.train._optimizer` (Adam lr 1e-4, weight decay 1e-3, fused),
  `clip_grad_norm_(0.1)`, `ModelEma(0.99)`, denormals flushed as the trainer does.

Each (implementation, size, round) runs in its own subprocess (own thread pool and
allocator), CPU only (CUDA hidden: the seed's positional encoding would go to a visible GPU);
rounds are interleaved and the order within a size alternates round by round. Per step both
wall time and CPU time (`time.process_time`, all threads of the process) are taken; each
figure is the median over the steps of a round, then the median over the rounds. An epoch is
ceil(epoch size / batch) such steps (default 15,806: the Hume-Reaction train split; the
seed drops 13 of them, a 0.1% difference not applied). Ratio = seed / ours: > 1 means ours is
faster.

    python benchmarks/bench_seed.py --seed-repo /tmp/seed-eri [--rounds 3] [--steps 5]
    python benchmarks/bench_seed.py --seed-repo /tmp/seed-eri --quick   # tiny smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIZES = ((256, 256), (128, 256), (64, 32), (64, 64))  # (d, batch)
DIMS = {"audio": 1024, "visual": 1536}  # DeepSpectrum, PosterV2+ViT
QUICK_SIZES = ((16, 8), (32, 8))
QUICK_DIMS = {"audio": 24, "visual": 40}
SEED_COMMIT = "f449e2d"  # the last commit with model/vitmodel.py
IMPLS = ("seed", "ours")


# -- one implementation's steps (runs in a subprocess) -------------------------------------


def _load_seed(repo: Path):
    """The seed's `MutilModel`, `WrappedMSELoss` and `ClassLoss`, imported from `repo`."""
    import importlib
    import re
    import types

    model_dir, loss_file = repo / "model", repo / "losses" / "loss.py"
    if not (model_dir / "vitmodel.py").is_file():
        raise SystemExit(
            f"{model_dir / 'vitmodel.py'} is missing: the seed's last commit deleted it; "
            f"restore it with `git -C {repo} checkout {SEED_COMMIT} -- model/vitmodel.py`"
        )
    if not loss_file.is_file():
        raise SystemExit(f"{loss_file} not found: is {repo} a CVPR2023-ABAW5-ERI checkout?")
    # The model folder as a bare package: its relative imports (.transformer, .basemodel_1D)
    # resolve, and its __init__ (which pulls in Lightning through model_interface) never runs.
    pkg = types.ModuleType("seed_model")
    pkg.__path__ = [str(model_dir)]
    sys.modules["seed_model"] = pkg
    try:
        vitmodel = importlib.import_module("seed_model.vitmodel")
    except ModuleNotFoundError as e:
        raise SystemExit(
            f"importing the seed's model needs {e.name!r}: pip install {e.name}"
        ) from None
    # losses/loss.py is stored with "\r\r\n" line ends, which today's tokenizer reads as a
    # blank line after each backslash continuation (IndentationError): normalise them, run as is.
    source = re.sub(rb"\r+\n", b"\n", loss_file.read_bytes())
    losses = types.ModuleType("seed_losses")
    losses.__file__ = str(loss_file)
    exec(compile(source, str(loss_file), "exec"), losses.__dict__)
    return vitmodel.MutilModel, losses.WrappedMSELoss, losses.ClassLoss


def _seed_step(repo: Path, d: int, b: int, t: int, dims: dict[str, int]):
    import torch
    from bench_step import eri_batch
    from torch import nn

    mutil_model, mse_loss, class_loss = _load_seed(repo)
    torch.manual_seed(0)
    # Stands in for the LightningModule `MInterface`: the model and its EMA copy as children.
    module = nn.Module()
    module.model = mutil_model(list(dims.values()), d, t)
    module.model_ema = mutil_model(list(dims.values()), d, t)
    module.train()

    def update_model_ema(decay: float) -> None:  # MInterface.update_model_ema
        net = dict(module.model.named_parameters())
        ema = dict(module.model_ema.named_parameters())
        for k in ema:
            ema[k].data.mul_(decay).add_(net[k].data, alpha=1 - decay)

    update_model_ema(0)
    opt = torch.optim.Adam(module.parameters(), lr=1e-4, weight_decay=1e-3)
    clipped = [p for g in opt.param_groups for p in g["params"]]  # Lightning: optimiser's params
    loss_fn, cri_class = mse_loss(reduction="mean"), class_loss(0.01)
    batch = eri_batch(b, t, dims)
    features = [batch[m] for m in dims]
    feature_lens = batch[f"{next(iter(dims))}_mask"].sum(dim=1)
    labels = batch["labels"]

    def loss() -> torch.Tensor:
        preds, preds_class = module.model(features)
        total = loss_fn(preds.squeeze(-1), labels.squeeze(-1), feature_lens)
        return total + cri_class(preds_class, labels)

    def step() -> None:
        opt.zero_grad()
        value = loss()
        update_model_ema(0.99)  # inside training_step: before backward
        value.backward()
        nn.utils.clip_grad_norm_(clipped, 0.1)
        opt.step()

    return module.model, loss, step


def _our_step(d: int, b: int, t: int, dims: dict[str, int]):
    import torch
    from bench_step import eri_fusion_case, trainer_step

    torch.manual_seed(0)
    model, loss_of, cfg, _, _ = eri_fusion_case(d, b, t, dims)
    step = trainer_step(model, loss_of, cfg)  # bench_step._measure's = abaw.train's step
    return model, (lambda: loss_of(model)), step


def worker(a: argparse.Namespace) -> None:
    """Time one implementation at one size; one JSON line on stdout."""
    import torch

    torch.set_num_threads(a.threads)
    d, b = (int(v) for v in a.size.split(","))
    dims = dict(zip(DIMS, (int(v) for v in a.dims.split(",")), strict=True))
    if a.worker == "seed":
        model, loss, step = _seed_step(Path(a.seed_repo), d, b, a.t, dims)
    else:
        model, loss, step = _our_step(d, b, a.t, dims)
    out = {"params": sum(p.numel() for p in model.parameters())}
    if a.flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            loss().backward()
        model.zero_grad(set_to_none=True)
        out["flops"] = counter.get_total_flops()
    for _ in range(a.warmup):  # allocator, thread pools, optimiser state
        step()
    wall, cpu = [], []
    for _ in range(a.steps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    out.update(wall=statistics.median(wall), cpu=statistics.median(cpu))
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out))


# -- the driver -----------------------------------------------------------------------------


def _run(impl: str, size: tuple[int, int], a: argparse.Namespace, flops: bool) -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl]
    cmd += ["--seed-repo", str(a.seed_repo), "--size", f"{size[0]},{size[1]}", "--t", str(a.t)]
    cmd += ["--dims", a.dims, "--steps", str(a.steps), "--warmup", str(a.warmup)]
    cmd += ["--threads", str(a.threads)] + (["--flops"] if flops else [])
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{impl} worker at d {size[0]}, batch {size[1]} failed:\n"
                         f"{done.stderr[-3000:]}")  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed-repo", type=Path, required=True,
                   help="checkout/export of cyinen/CVPR2023-ABAW5-ERI with model/vitmodel.py")  # fmt: skip
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per size, side and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--epoch-size", type=int, default=15806, help="samples per epoch")
    p.add_argument("--sizes", default=None, help="d,batch;d,batch;... (default: the four sizes)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: tiny sizes, T 6, narrow features, 1 round, 2 steps, 1 thread")  # fmt: skip
    p.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--t", type=int, default=30, help=argparse.SUPPRESS)
    p.add_argument("--dims", default=",".join(map(str, DIMS.values())), help=argparse.SUPPRESS)
    p.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a)
    sizes = SIZES
    if a.quick:
        sizes, a.t, a.dims = QUICK_SIZES, 6, ",".join(map(str, QUICK_DIMS.values()))
        a.rounds, a.steps, a.warmup = 1, 2, 1
        a.threads = a.threads or 1
    if a.sizes:
        sizes = tuple(tuple(int(v) for v in s.split(",")) for s in a.sizes.split(";") if s)
    a.threads = a.threads or len(os.sched_getaffinity(0))
    a.seed_repo = a.seed_repo.resolve()

    import torch
    from bench_step import cpu_model, matmul_rate

    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    print(f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores, torch "
          f"{torch.__version__}, {a.threads} threads, CPU only")  # fmt: skip
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load0)}")
    if not a.quick:
        print(f"fp32 matmul {matmul_rate():.0f} GFLOP/s (2048^2 sgemm, best of 5)")
    print(f"seed: {a.seed_repo}; T {a.t}, features {a.dims}; {a.rounds} rounds x {a.steps} "
          f"steps (+{a.warmup} warm-up), one subprocess per side, size and round")  # fmt: skip
    runs = {(impl, s): [] for impl in IMPLS for s in sizes}
    for r in range(a.rounds):
        for i, size in enumerate(sizes):
            order = IMPLS if (r + i) % 2 == 0 else IMPLS[::-1]
            for impl in order:
                runs[impl, size].append(_run(impl, size, a, flops=r == 0))
        print(f"round {r + 1}/{a.rounds} done; load average {os.getloadavg()[0]:.2f}", flush=True)
    load1 = os.getloadavg()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in load1)}")

    def med(impl, size, key):
        return statistics.median(run[key] for run in runs[impl, size])

    print(f"\nepoch = ceil({a.epoch_size} / batch) steps; ratio = seed / ours (> 1: ours faster)")
    head = (f"{'d':>4} {'batch':>5} | {'seed s/step':>11} {'ours s/step':>11} {'ratio':>6} | "
            f"{'seed cpu/step':>13} {'ours cpu/step':>13} {'ratio':>6} | {'steps':>5} "
            f"{'seed s/epoch':>12} {'ours s/epoch':>12} {'seed cpu/ep':>11} {'ours cpu/ep':>11}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for size in sizes:
        d, b = size
        sw, ow = med("seed", size, "wall"), med("ours", size, "wall")
        sc, oc = med("seed", size, "cpu"), med("ours", size, "cpu")
        n = math.ceil(a.epoch_size / b)
        print(f"{d:>4} {b:>5} | {sw:11.4f} {ow:11.4f} {sw / ow:5.2f}x | {sc:13.4f} {oc:13.4f} "
              f"{sc / oc:5.2f}x | {n:>5} {sw * n:12.1f} {ow * n:12.1f} {sc * n:11.1f} "
              f"{oc * n:11.1f}")  # fmt: skip
    print("\nper size: parameters, GFLOP per step (fwd+bwd, FlopCounterMode), wall s/step by round")
    for size in sizes:
        for impl in IMPLS:
            first = runs[impl, size][0]
            rounds = " ".join(f"{run['wall']:.4f}" for run in runs[impl, size])
            print(f"  d {size[0]:>3} batch {size[1]:>3} {impl:4}: {first['params'] / 1e6:7.2f} M "
                  f"params, {first['flops'] / 1e9:8.2f} GFLOP/step; {rounds}")  # fmt: skip


if __name__ == "__main__":
    main()
