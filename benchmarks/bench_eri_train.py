"""ERI training throughput at full scale: the device-resident EriTask vs a plain DataLoader.

Both paths run the same trainer step (`abaw.train._train_epoch`: forward, loss,
backward, clipping, Adam, EMA) on the same fusion model (paper defaults: d=256,
max_len 30, DeepSpectrum 1024 + PosterV2-ViT 1536, batch 256). Only the data
path differs:

- ours: features on the device once, one gather per batch (`EriTask.batch`);
- baseline: `torch.utils.data.DataLoader` over per-sample ragged arrays with a
  per-sample collate (cut, pad, mask, stack, copy to the device).

Random arrays of the real shapes stand in for the data (a pool of `--pool`
distinct samples, ragged lengths 20-40 steps, so memory stays bounded); the
time of one full default run is estimated from the measured step time:
ceil(15,806 / 256) steps per epoch plus predicting 4,657 devel samples, for
100 epochs (the paper's maximum; early stopping usually ends sooner).

    python benchmarks/bench_eri_train.py [--device auto] [--steps 4] [--pool 2048]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

from abaw.ema import ModelEma
from abaw.eri.models import FusionConfig
from abaw.eri.track import EriDataConfig, EriLossConfig, EriTask
from abaw.train import TrainConfig, _train_epoch, resolve_device

N_TRAIN, N_DEVEL, DIMS = (
    15806,
    4657,
    {"DeepSpectrum": ("audio", 1024), "PosterV2-ViT": ("visual", 1536)},
)


def fake_data(pool: int, n_devel: int, seed: int = 0) -> SimpleNamespace:
    """Duck-typed EriData: ragged random features of the real widths."""
    rng = np.random.default_rng(seed)
    n = pool + n_devel
    feats = {}
    for name, (modality, dim) in DIMS.items():
        lengths = rng.integers(20, 41, size=n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = rng.standard_normal((offsets[-1], dim), dtype=np.float32)
        feats[name] = SimpleNamespace(
            name=name, modality=modality, dim=dim, values=values, offsets=offsets
        )
    labels = rng.random((n, 7), dtype=np.float32)
    labels /= labels.max(axis=1, keepdims=True)
    split = np.array(["train"] * pool + ["devel"] * n_devel)
    return SimpleNamespace(
        ids=np.array([f"{i:05d}" for i in range(n)]), split=split, labels=labels, features=feats
    )


class Limited:
    """A task view that yields at most `steps` training batches (bounded benchmark)."""

    def __init__(self, task, steps: int, batches=None) -> None:
        self.task, self.steps, self.batches = task, steps, batches

    def train_batches(self, *, epoch, generator):
        source = (
            self.batches()
            if self.batches
            else self.task.train_batches(epoch=epoch, generator=generator)
        )
        for i, b in enumerate(source):
            if i == self.steps:
                return
            yield b

    def loss(self, model, batch):
        return self.task.loss(model, batch)


def dataloader_batches(data, max_len: int, batch_size: int, device: torch.device):
    """The plain way: a map-style Dataset of ragged arrays and a per-sample collate."""
    train = np.flatnonzero(data.split == "train")
    feats = {m: data.features[n] for n, (m, _) in DIMS.items()}

    class Ragged(torch.utils.data.Dataset):
        def __len__(self):
            return len(train)

        def __getitem__(self, k):
            i = train[k]
            rows = {m: fs.values[fs.offsets[i] : fs.offsets[i + 1]] for m, fs in feats.items()}
            return rows, data.labels[i]

    def collate(items):
        out = {}
        for m, fs in feats.items():
            x = np.zeros((len(items), max_len, fs.dim), np.float32)
            mask = np.zeros((len(items), max_len), bool)
            for j, (rows, _) in enumerate(items):
                r = rows[m][:max_len]
                x[j, : len(r)] = r
                mask[j, : len(r)] = True
            out[m] = torch.from_numpy(x).to(device)
            out[f"{m}_mask"] = torch.from_numpy(mask).to(device)
        out["labels"] = torch.from_numpy(np.stack([y for _, y in items])).to(device)
        return out

    loader = torch.utils.data.DataLoader(
        Ragged(), batch_size=batch_size, shuffle=True, collate_fn=collate
    )
    return lambda: iter(loader)


def interleaved(views, models, cfg, steps, device) -> list[float]:
    """Median seconds per training step of each path, steps alternating between paths.

    Alternating (A, B, A, B, ...) makes both paths see the same machine load, which
    matters on a shared CPU; the first step of each path is a warm-up and not timed.
    """
    state = []
    for m in models:
        opt = torch.optim.Adam(m.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        state.append((m, opt, ModelEma(m, cfg.ema_decay)))
    gen = torch.Generator().manual_seed(0)
    times: list[list[float]] = [[] for _ in views]
    for step in range(steps + 1):
        for k, (view, (m, opt, ema)) in enumerate(zip(views, state, strict=True)):
            t0 = time.perf_counter()
            _train_epoch(view, m, opt, ema, cfg, step, gen, _autocast(device))  # one step, one sync
            if step:
                times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def _null():
    from contextlib import nullcontext

    return nullcontext()


def _autocast(device):
    return (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else _null
    )


def data_only(sources, n) -> list[float]:
    """Median seconds per batch of each batch source (alternating), data path only."""
    iters = [src() for src in sources]
    times: list[list[float]] = [[] for _ in sources]
    for _ in range(n):
        for k, it in enumerate(iters):
            t0 = time.perf_counter()
            b = next(it)
            b["labels"].sum().item()
            times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per path")
    ap.add_argument(
        "--pool", type=int, default=2048, help="distinct random training samples held in memory"
    )
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    device = resolve_device(args.device)
    cfg = TrainConfig(batch_size=args.batch_size)
    dc = EriDataConfig()
    data = fake_data(args.pool, 256)
    configs = {"data": dc, "model": FusionConfig(), "loss": EriLossConfig(), "train": cfg}
    t0 = time.perf_counter()
    task = EriTask(data, "fusion", configs, device)
    setup = time.perf_counter() - t0
    ours_batches = lambda: task.train_batches(epoch=0, generator=torch.Generator().manual_seed(0))  # noqa: E731
    base_batches = dataloader_batches(data, dc.max_len, cfg.batch_size, device)

    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(task.build_model().to(device))
    ours, base = interleaved(
        [Limited(task, 1), Limited(task, 1, base_batches)], models, cfg, args.steps, device
    )
    ours_data, base_data = data_only(
        [ours_batches, base_batches], min(20, args.pool // cfg.batch_size)
    )
    model = models[0]

    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad(), _autocast(device)():
        task.predict(model, "devel")
    if device.type == "cuda":
        torch.cuda.synchronize()
    predict_per_sample = (time.perf_counter() - t0) / 256
    epoch_s = math.ceil(N_TRAIN / cfg.batch_size) * ours + N_DEVEL * predict_per_sample
    bs = cfg.batch_size
    dev = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"\nERI fusion training throughput (d=256, max_len 30, batch {bs}) on {dev}, torch {torch.__version__}"
    )
    print(
        f"setup (features to device, gather index) for {args.pool} + 256 samples: {setup:.2f} s\n"
    )
    print("| path | s / step | train samples / s | data only: batches / s |")
    print("|---|---:|---:|---:|")
    print(
        f"| DataLoader + per-sample collate | {base:.3f} | {bs / base:.1f} | {1 / base_data:.1f} |"
    )
    print(
        f"| EriTask (device-resident gather) | {ours:.3f} | {bs / ours:.1f} | {1 / ours_data:.1f} |"
    )
    print(
        f"| ratio (ours / DataLoader) | | **{base / ours:.2f}x** | **{base_data / ours_data:.1f}x** |"
    )
    print(
        f"\nEstimated full default run ({N_TRAIN} train, {N_DEVEL} devel, 100 epochs, no early stop): "
        f"{epoch_s:.0f} s per epoch, {epoch_s * 100 / 3600:.1f} h"
    )


if __name__ == "__main__":
    main()
