"""One trainer for every model of both tracks, and the `abaw train` command.

The trainer owns the loop; the Task (built by a track's `prepare`) owns the data,
the model, the loss and the metric. The loop is the paper's recipe: Adam(W) with
an L2 penalty, an optional LR schedule, gradient clipping by L2 norm, an
exponential moving average of the weights (validation, early stopping and the
checkpoint use the averaged weights), early stopping on the validation metric
(always maximised), and bf16 autocast on CUDA. The same code runs on CPU.

On CUDA nothing in an epoch waits for the host: the epoch's loss is summed on
the device and read once per epoch; the task keeps its data on the device.

Speed (docs/benchmarks.md, issue #20): Adam(W) runs fused, and `fit` flushes denormals
on the CPU (`flush_denormals`); the models' fast forwards are in `abaw.layers`.

A run folder is complete when its `metrics.json` exists: `write_run` removes an
old one first and writes it last, after the checkpoint and predictions
(`is_complete`), so a later stage can tell a finished run from a killed one.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from abaw.checkpoint import load_checkpoint, rebuild_model, save_checkpoint
from abaw.console import console
from abaw.ema import ModelEma
from abaw.errors import AbawError, ConfigError
from abaw.io import atomic_open, ensure_dir, safe_name, writable_dir
from abaw.metrics import Score
from abaw.predictions import Predictions
from abaw.progress import StepProgress, TrainProgress, batch_items, stderr_is_terminal
from abaw.track import Task, Track

__all__ = [
    "FitResult",
    "TrainConfig",
    "TrainingDiverged",
    "fit",
    "is_complete",
    "load_checkpoint",
    "rebuild_model",
    "resolve_device",
    "run_sections",
    "train_sweep",
    "set_threads",
    "write_run",
]

COMPLETE_MARKER = "metrics.json"  # written last: its presence means the run folder is whole


@dataclass
class TrainConfig:
    """Optimisation settings shared by every model (the paper's values are the defaults)."""

    optimizer: Literal["adam", "adamw"] = (
        "adam"  # adam: L2 added to the gradient; adamw: decoupled decay
    )
    lr: float = 1e-4  # peak learning rate
    weight_decay: float = 1e-3  # the L2 penalty of the paper's ablation; 0 = off
    scheduler: Literal["none", "step", "cosine", "plateau"] = (
        "step"  # LR schedule, stepped per epoch
    )
    step_size: int = 30  # step: epochs between LR drops; plateau: epochs without improvement
    gamma: float = 0.5  # step / plateau: LR multiplier at each drop
    batch_size: int = 256  # training samples (ERI) or windows (Expr) per optimiser step
    epochs: int = 100  # maximum number of epochs
    patience: int = 15  # stop after this many epochs without a better validation metric; 0 = never
    ema: bool = True  # evaluate and checkpoint an exponential moving average of the weights
    ema_decay: float = 0.99  # EMA weight of the old average per optimiser step
    clip_norm: float = 0.1  # clip the gradients' global L2 norm to this; 0 = off
    amp: bool = True  # bf16 autocast (CUDA only; CPU always runs float32)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.clip_norm < 0:
            raise ValueError("train.weight_decay and train.clip_norm must be >= 0")
        if self.batch_size < 1 or self.epochs < 1 or self.patience < 0 or self.step_size < 1:
            raise ValueError("train.batch_size, epochs and step_size must be >= 1; patience >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class FitResult:
    """What one training run produced."""

    best_epoch: int  # 1-based epoch whose (EMA) weights scored best on devel
    best_score: float  # the validation metric at best_epoch
    score: Score  # devel breakdown (per column) at best_epoch
    history: list[dict]  # one dict per epoch: epoch, train_loss, score, lr, seconds
    model: nn.Module  # best (EMA) weights, eval mode, on the training device
    devel: Predictions | None = None  # devel predictions of best_epoch (labelled)
    seconds: float = 0.0  # wall time of the training loop
    amp: bool = False  # whether bf16 autocast was on (later predictions use the same)
    checkpoint: Path | None = None  # checkpoint.pt when out_dir was given
    predictions: dict[str, Path] = field(default_factory=dict)  # split -> predictions-<split>.npz


class TrainingDiverged(AbawError):
    """The training loss became NaN or infinite."""


def run_sections(track: Track, model: str) -> dict[str, type]:
    """Config sections of a run: the track's sections plus the trainer's own `train`."""
    return {**track.sections(model), "train": TrainConfig}


def cpu_count() -> int:
    """CPU cores this process may use (its affinity mask, e.g. a Slurm or container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(*, jobs: int = 1, threads: int | None = None) -> int:
    """Give this process a fair share of the CPU for torch's intra-op threads.

    `threads` wins; else `ABAW_THREADS`; else `OMP_NUM_THREADS` if the user set it;
    else cores // jobs (at least 1). Without this, N processes with torch's default
    (all cores each) oversubscribe the CPU and small models run many times slower.
    """
    if threads is None:
        env = os.environ.get("ABAW_THREADS") or os.environ.get("OMP_NUM_THREADS")
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ConfigError(
                    f"ABAW_THREADS / OMP_NUM_THREADS must be an integer, found {env!r}"
                ) from None
    if threads is None:
        threads = max(1, cpu_count() // max(1, jobs))
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` -> CUDA when present, else CPU; anything else is checked before a run starts."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {spec!r}: CUDA is not available on this machine; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) found"
            )
    elif device.type != "cpu":
        raise ConfigError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")
    return device


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's `malloc_trim`; a no-op elsewhere).

    Each epoch frees its activations and devel prediction buffers, but glibc keeps them in
    its arenas: on the demo's ERI data a fusion model at width 256 sat 650 MB above what it
    used per process after three epochs (docs/benchmarks.md). Trimming costs milliseconds.
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def flush_denormals() -> bool:
    """Treat denormal floats as zero on this CPU (x86 with SSE3); True when it took effect.

    Adam's squared-gradient averages and the EMA drift into the denormal range (below
    1.2e-38) late in training, and x86 cores compute on denormals up to ~100x slower: the
    optimiser step of the ERI fusion took 0.17 s instead of 0.01 s (docs/benchmarks.md). A
    value that small is zero to every later product. Process-wide; the trainer sets it.
    """
    return torch.set_flush_denormal(True)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam(W) with the fused kernel: one pass over all parameters instead of ~10 foreach ops."""
    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    try:
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except RuntimeError:  # a device or dtype without the fused kernel (CPU before torch 2.4)
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=cfg.gamma, patience=cfg.step_size
        )
    return None


def _train_epoch(task, model, opt, ema, cfg, epoch, generator, autocast, shown) -> float:
    model.train()
    total = None
    steps = 0
    for batch in task.train_batches(epoch=epoch, generator=generator):
        with autocast():
            loss = task.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()
        if ema is not None:
            ema.update(model)
        total = loss.detach().float() if total is None else total + loss.detach().float()
        steps += 1
        shown.step(batch_items(batch))
    if steps == 0:
        raise AbawError("the task produced no training batches (is the train split empty?)")
    return float((total / steps).item())  # the one host sync of the epoch


class _Best:
    """The best epoch so far: its score, predictions and a copy of its (EMA) weights.

    The copy is made once and then overwritten in place, so a large model does not allocate
    (and fragment) a fresh state dict at every improvement.
    """

    def __init__(self) -> None:
        self.score, self.epoch, self.pred, self.breakdown = -math.inf, 0, None, None
        self.state: dict[str, torch.Tensor] | None = None
        self.stale = 0

    def update(self, epoch: int, score: Score, pred: Predictions, model: nn.Module) -> None:
        if not (math.isfinite(score.value) and score.value > self.score):
            self.stale += 1
            return
        self.score, self.epoch, self.pred, self.breakdown = score.value, epoch, pred, score
        self.stale = 0
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            for k, v in model.state_dict().items():
                self.state[k].copy_(v.detach())


def _autocast(use_amp: bool) -> Callable[[], Any]:
    """bf16 autocast on CUDA when asked, else a no-op context (CPU runs float32)."""
    return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext


def _shown(
    task: Task,
    cfg: TrainConfig,
    show_progress: bool | None,
    log_epochs: bool | None,
    on_progress: Callable[[StepProgress], None] | None,
) -> TrainProgress:
    """The bar (a terminal, or forced), the log lines (a log by default) and the sink."""
    bar = stderr_is_terminal() if show_progress is None else show_progress
    if log_epochs is None:
        log_epochs = show_progress is None and not bar
    steps = getattr(task, "steps_per_epoch", None)
    return TrainProgress(
        f"train {task.track}",
        cfg.epochs,
        steps=steps() if callable(steps) else None,
        bar=bar,
        log=log_epochs,
        sink=on_progress,
        unit=getattr(task, "batch_unit", "samples"),
    )


def fit(
    task: Task,
    cfg: TrainConfig,
    *,
    device: torch.device,
    seed: int = 0,
    out_dir: Path | None = None,
    callback: Callable[[int, float], None] | None = None,
    show_progress: bool | None = None,
    config: dict | None = None,
    predict_test: bool = True,
    log_epochs: bool | None = None,
    on_progress: Callable[[StepProgress], None] | None = None,
) -> FitResult:
    """Train `task`'s model and keep the epoch whose (EMA) weights score best on devel.

    Args:
        task: data, model, loss and metric of the run (from `Track.prepare`).
        cfg: optimisation settings.
        device: where the model runs (the task's data must already be there).
        seed: seeds torch, NumPy, Python and the batch-order generator; on CPU the
            same seed gives identical weights.
        out_dir: when given, write the run folder there (`write_run`: checkpoint.pt,
            config.json, predictions-devel.npz / predictions-test.npz, metrics.json last).
        callback: called as callback(epoch, score) after each validation; may raise
            (e.g. optuna.TrialPruned), which propagates with nothing written.
        show_progress: force the progress bar on/off (default: when stderr is a terminal).
        config: plain JSON-able settings stored in the checkpoint and config.json.
        predict_test: with out_dir, also predict the test split (the tuner predicts it
            later, only for trials it keeps, with `write_run`).
        log_epochs: print one plain line per epoch, and a progress line every 30 s inside
            a long epoch (default: when the bar is off because stderr is not a terminal).
        on_progress: called with an `abaw.progress.StepProgress` at most once a second
            inside each epoch (the tuner's live table shows it).

    Raises:
        TrainingDiverged: when the training loss is not finite.
    """
    seed_everything(seed)
    flush_denormals()
    generator = torch.Generator().manual_seed(seed)  # batch order; CPU generator on every device
    model = task.build_model().to(device)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema else None
    eval_model = ema.module if ema is not None else model
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    autocast = _autocast(use_amp)
    history: list[dict] = []
    best = _Best()
    start = time.perf_counter()
    with _shown(task, cfg, show_progress, log_epochs, on_progress) as shown:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            shown.start_epoch(epoch)
            train_loss = _train_epoch(task, model, opt, ema, cfg, epoch, generator, autocast, shown)
            if not math.isfinite(train_loss):
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch} (mean loss {train_loss}); "
                    f"try a lower train.lr (now {cfg.lr:g}) or train.clip_norm > 0"
                )
            eval_model.eval()
            with torch.no_grad(), autocast():
                pred = task.predict(eval_model, "devel")
            score = task.score(pred)
            lr = opt.param_groups[0]["lr"]
            seconds = time.perf_counter() - t0
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "score": score.value,
                    "lr": lr,
                    "seconds": seconds,
                }
            )
            best.update(epoch, score, pred, eval_model)
            shown.end_epoch(
                f"loss {train_loss:.4f}  {task.metric} {score.value:.4f}  "
                f"best {best.score:.4f} @{best.epoch}"
            )
            release_freed_memory()
            if callback is not None:
                callback(epoch, score.value)
            if sched is not None:
                sched.step(score.value) if cfg.scheduler == "plateau" else sched.step()
            if cfg.patience and best.stale >= cfg.patience:
                break
    if best.state is None:
        raise TrainingDiverged(
            f"the validation {task.metric} was never finite in {len(history)} epoch(s)"
        )
    eval_model.load_state_dict(best.state)
    eval_model.eval()
    result = FitResult(
        best.epoch,
        best.score,
        best.breakdown,
        history,
        eval_model,
        devel=best.pred,
        seconds=time.perf_counter() - start,
        amp=use_amp,
    )
    if out_dir is not None:
        write_run(task, result, Path(out_dir), config=config, seed=seed, test=predict_test)
    return result


def predict_split(task: Task, model: nn.Module, split: str, *, amp: bool = False) -> Predictions:
    """`task.predict` in eval mode, without gradients (bf16 autocast on CUDA when `amp`)."""
    model.eval()
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
    with torch.no_grad(), ctx:
        return task.predict(model, split)


def is_complete(run_dir: str | Path) -> bool:
    """True when `run_dir` holds a finished run (its metrics.json, written last, exists)."""
    return (Path(run_dir) / COMPLETE_MARKER).is_file()


def run_metrics(task: Task, result: FitResult, seed: int = 0) -> dict[str, Any]:
    """The content of a run's metrics.json (plain JSON values)."""
    return {
        "metric": task.metric,
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
        "per_column": result.score.per_column,
        "notes": result.score.notes,
        "epochs_run": len(result.history),
        "seconds": result.seconds,
        "seed": seed,
        "history": result.history,
    }


def write_run(
    task: Task,
    result: FitResult,
    out_dir: Path,
    *,
    config: dict | None = None,
    seed: int = 0,
    test: bool = True,
) -> None:
    """Write the run folder; every file atomically and metrics.json last (the complete marker).

    Test predictions come from the best weights, and only when `test` is true.
    """
    out_dir = ensure_dir(out_dir, "run folder")
    (out_dir / COMPLETE_MARKER).unlink(missing_ok=True)  # a rerun into the folder: not complete
    config = json.loads(json.dumps(config or {}, default=str))  # plain JSON types only
    meta = {
        "metric": task.metric,
        "best_epoch": result.best_epoch,
        "score": result.best_score,
        "seed": seed,
    }
    devel_pred = result.devel
    if devel_pred is None:
        devel_pred = predict_split(task, result.model, "devel", amp=result.amp)
    preds = {"devel": devel_pred}
    if test:
        preds["test"] = predict_split(task, result.model, "test", amp=result.amp)
    metrics = run_metrics(task, result, seed)
    for split, pred in preds.items():
        pred.meta.update(meta)
        result.predictions[split] = pred.save(out_dir / f"predictions-{split}.npz")
    with atomic_open(out_dir / "config.json") as fh:
        json.dump(config, fh, indent=2)
    result.checkpoint = save_checkpoint(
        out_dir / "checkpoint.pt",
        result.model,
        track=task.track,
        model_spec=task.model_spec,
        config=config,
        metrics={k: v for k, v in metrics.items() if k != "history"},
    )
    with atomic_open(out_dir / COMPLETE_MARKER) as fh:  # last: marks the folder complete
        json.dump(metrics, fh, indent=2)


def train_sweep(
    sweep: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    overrides: dict[str, Any] | list[str] | None = None,
    device: str = "auto",
    threads: int | None = None,
    seed: int = 0,
    runs: str | os.PathLike[str] = "runs",
    name: str | None = None,
) -> tuple[Task, FitResult, Path]:
    """`abaw train`: train the [fixed] configuration of one sweep file (plus overrides).

    Writes `<runs>/train/<name>/` (checkpoint, predictions, config, metrics); returns
    (task, result, run folder). `name` defaults to the sweep's name and the time.
    """
    from abaw.sweep import build_configs, config_to_dict, load_sweep, parse_overrides
    from abaw.track import get_track

    sw = load_sweep(sweep)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    overrides = dict(overrides or {})
    track = get_track(sw.track)
    configs = build_configs(
        sw.resolve(overrides=overrides),
        run_sections(track, sw.model),
        where=str(sw.path),
        overridden=overrides,
    )
    dev = resolve_device(device)
    if dev.type == "cpu":
        set_threads(threads=threads)
    name = name or f"{sw.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        safe_name(name, what="--name")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    out_dir = Path(runs) / "train" / name
    writable_dir(out_dir.parent, "run folder (--runs)")  # now, not after the training
    task = track.prepare(Path(data), sw.model, configs, dev)
    for note in task.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    console.print(f"training {sw.track}/{sw.model} on {dev} -> {out_dir}")
    config = {
        "track": sw.track,
        "model": sw.model,
        "sweep": str(sw.path),
        "seed": seed,
        "overrides": overrides,
        "settings": config_to_dict(configs),
    }
    result = fit(task, configs["train"], device=dev, seed=seed, out_dir=out_dir, config=config)
    return task, result, out_dir
