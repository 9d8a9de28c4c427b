"""One trainer for every model of both tracks, and the `abaw train` command.

The trainer owns the loop; the Task (built by a track's `prepare`) owns the data,
the model, the loss and the metric. The loop is the paper's recipe: Adam(W) with
an L2 penalty, an optional LR schedule, gradient clipping by L2 norm, an
exponential moving average of the weights (validation, early stopping and the
checkpoint use the averaged weights), early stopping on the validation metric
(always maximised), and bf16 autocast on CUDA. The same code runs on CPU.

On CUDA nothing in an epoch waits for the host: the epoch's loss is summed on
the device and read once per epoch; the task keeps its data on the device.
"""

from __future__ import annotations

import argparse
import json
import math
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
from abaw.console import console, progress
from abaw.ema import ModelEma
from abaw.errors import AbawError, ConfigError
from abaw.io import atomic_open, safe_name
from abaw.metrics import Score
from abaw.predictions import Predictions
from abaw.track import Task

__all__ = [
    "FitResult",
    "TrainConfig",
    "TrainingDiverged",
    "fit",
    "load_checkpoint",
    "main",
    "rebuild_model",
    "resolve_device",
]


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
    checkpoint: Path | None = None  # checkpoint.pt when out_dir was given
    predictions: dict[str, Path] = field(default_factory=dict)  # split -> predictions-<split>.npz


class TrainingDiverged(AbawError):
    """The training loss became NaN or infinite."""


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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
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


def _train_epoch(task, model, opt, ema, cfg, epoch, generator, autocast) -> float:
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
    if steps == 0:
        raise AbawError("the task produced no training batches (is the train split empty?)")
    return float((total / steps).item())  # the one host sync of the epoch


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
) -> FitResult:
    """Train `task`'s model and keep the epoch whose (EMA) weights score best on devel.

    Args:
        task: data, model, loss and metric of the run (from `Track.prepare`).
        cfg: optimisation settings.
        device: where the model runs (the task's data must already be there).
        seed: seeds torch, NumPy, Python and the batch-order generator; on CPU the
            same seed gives identical weights.
        out_dir: when given, write checkpoint.pt, config.json, metrics.json and
            predictions-devel.npz / predictions-test.npz there (atomically).
        callback: called as callback(epoch, score) after each validation; may raise
            (e.g. optuna.TrialPruned), which propagates with nothing written.
        show_progress: force the progress bar on/off (default: when stderr is a terminal).
        config: plain JSON-able settings stored in the checkpoint and config.json.

    Raises:
        TrainingDiverged: when the training loss is not finite.
    """
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)  # batch order; CPU generator on every device
    model = task.build_model().to(device)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema else None
    eval_model = ema.module if ema is not None else model
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg)
    use_amp = cfg.amp and device.type == "cuda"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext()

    history: list[dict] = []
    best_score, best_epoch, best_state, best_pred, best_breakdown = -math.inf, 0, None, None, None
    stale = 0
    start = time.perf_counter()
    with progress(disable=None if show_progress is None else not show_progress) as bar:
        job = bar.add_task(f"train {task.track}", total=cfg.epochs, info="")
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            train_loss = _train_epoch(task, model, opt, ema, cfg, epoch, generator, autocast)
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
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "score": score.value,
                    "lr": lr,
                    "seconds": time.perf_counter() - t0,
                }
            )
            if math.isfinite(score.value) and score.value > best_score:
                best_score, best_epoch, best_pred, best_breakdown = score.value, epoch, pred, score
                best_state = {k: v.detach().clone() for k, v in eval_model.state_dict().items()}
                stale = 0
            else:
                stale += 1
            bar.update(
                job,
                advance=1,
                info=f"loss {train_loss:.4f}  {task.metric} {score.value:.4f}  best {best_score:.4f} @{best_epoch}",
            )
            if callback is not None:
                callback(epoch, score.value)
            if sched is not None:
                sched.step(score.value) if cfg.scheduler == "plateau" else sched.step()
            if cfg.patience and stale >= cfg.patience:
                break
    if best_state is None:
        raise TrainingDiverged(
            f"the validation {task.metric} was never finite in {len(history)} epoch(s)"
        )
    eval_model.load_state_dict(best_state)
    eval_model.eval()
    result = FitResult(best_epoch, best_score, best_breakdown, history, eval_model)
    if out_dir is not None:
        _write_run(
            task,
            result,
            best_pred,
            Path(out_dir),
            config,
            seed,
            time.perf_counter() - start,
            autocast,
        )
    return result


def _write_run(
    task, result: FitResult, devel_pred, out_dir: Path, config, seed, seconds, autocast
) -> None:
    """Write the run folder: every file atomically, test predictions from the best weights."""
    config = json.loads(json.dumps(config or {}, default=str))  # plain JSON types only
    meta = {
        "metric": task.metric,
        "best_epoch": result.best_epoch,
        "score": result.best_score,
        "seed": seed,
    }
    with torch.no_grad(), autocast():
        test_pred = task.predict(result.model, "test")
    metrics = {
        "metric": task.metric,
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
        "per_column": result.score.per_column,
        "notes": result.score.notes,
        "epochs_run": len(result.history),
        "seconds": seconds,
        "seed": seed,
        "history": result.history,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, pred in (("devel", devel_pred), ("test", test_pred)):
        pred.meta.update(meta)
        result.predictions[split] = pred.save(out_dir / f"predictions-{split}.npz")
    with atomic_open(out_dir / "config.json") as fh:
        json.dump(config, fh, indent=2)
    with atomic_open(out_dir / "metrics.json") as fh:
        json.dump(metrics, fh, indent=2)
    result.checkpoint = save_checkpoint(
        out_dir / "checkpoint.pt",
        result.model,
        track=task.track,
        model_spec=task.model_spec,
        config=config,
        metrics={k: v for k, v in metrics.items() if k != "history"},
    )


def main(args: argparse.Namespace) -> int:
    """`abaw train`: train the [fixed] configuration of one sweep file (plus --set overrides)."""
    from abaw.sweep import build_configs, config_to_dict, load_sweep, parse_overrides
    from abaw.track import get_track

    sweep = load_sweep(args.sweep)
    overrides = parse_overrides(args.overrides)
    track = get_track(sweep.track)
    where = str(sweep.path) + (f" (with --set {', '.join(overrides)})" if overrides else "")
    configs = build_configs(
        sweep.resolve(overrides=overrides), track.sections(sweep.model), where=where
    )
    device = resolve_device(args.device)
    name = args.name or f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        safe_name(name, what="--name")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    out_dir = Path(args.runs) / "train" / name
    task = track.prepare(Path(args.data), sweep.model, configs, device)
    for note in task.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    console.print(f"training {sweep.track}/{sweep.model} on {device} -> {out_dir}")
    config = {
        "track": sweep.track,
        "model": sweep.model,
        "sweep": str(sweep.path),
        "seed": args.seed,
        "overrides": overrides,
        "settings": config_to_dict(configs),
    }
    result = fit(
        task, configs["train"], device=device, seed=args.seed, out_dir=out_dir, config=config
    )
    for table in task.summary(Predictions.load(result.predictions["devel"])):
        console.print(table)
    console.print(
        f"best devel {task.metric} {result.best_score:.4f} at epoch {result.best_epoch} "
        f"of {len(result.history)}; run folder {out_dir}"
    )
    return 0
