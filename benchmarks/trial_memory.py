"""Memory of one `abaw tune` trial at a sweep's largest settings: what `--jobs N` must fit.

For each ERI sweep, the largest settings of its `[space]` (numbers at their highest value;
every combination of the non-numeric choices, e.g. both read-outs) are built exactly as a
trial builds them (the sweep, `build_configs`, `Track.prepare`, `task.build_model`, the
trainer's optimiser and EMA), on a tiny synthetic data set, with one training batch of the
full `train.batch_size` at the largest `data.max_len`. What a trial holds on the device:

- weights, gradients, the optimiser's state (measured after one step), the EMA copy and the
  best-epoch copy (`state_dict` clones), counted tensor by tensor;
- the batch's inputs (gathered from the data on the device);
- the activations autograd saves for the backward pass, counted through
  `torch.autograd.graph.saved_tensors_hooks` (each storage once; weights and inputs left out);
- the data set on the device, separately: at most every sample's `max_len` steps of every
  feature (`--samples`, the real ERI split sizes by default); the full synthetic set, whose
  sequences are short, holds 1.3 GB (docs/benchmarks.md).

On CPU this is an estimate: float32 throughout (bf16 autocast on CUDA stores many activations
at half the size), and neither the caching allocator's rounding and fragmentation nor
cuBLAS/cuDNN workspaces nor the CUDA context (~0.5 GB per process, outside the allocator) are
counted. On CUDA the table adds the allocator's measured peak over two training steps
(`torch.cuda.max_memory_allocated`, the data left out), which is the figure to trust.

    python benchmarks/trial_memory.py [--sweeps sweeps/eri-fusion.toml,...] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ERI_SWEEPS = ("eri-fusion", "eri-fusion-mean", "eri-pooled", "eri-lstm")
MIB = 2**20


def largest_settings(sweep: Any, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The sweep's largest trials: numbers at their highest, every mix of the other choices."""
    top: dict[str, Any] = {}
    variants: list[dict[str, Any]] = [{}]
    for name, spec in sweep.searchable(overrides).items():
        if spec.type in ("float", "int"):
            top[name] = spec.high
            continue
        numeric = all(isinstance(c, int | float) and not isinstance(c, bool) for c in spec.choices)
        if numeric:
            top[name] = max(spec.choices)
        else:
            variants = [{**v, name: c} for v, c in itertools.product(variants, spec.choices)]
    return [{**top, **v} for v in variants]


def tiny_data(folder: Path, features: list[str]) -> Path:
    """A tiny synthetic ERI set with `features` (the shapes of a batch do not depend on size)."""
    from abaw.cli import main as cli_main

    root = folder / "eri-tiny"
    cmd = ["synth", "--track", "eri", "--out", str(root), "--scale", "tiny", "--force"]
    with contextlib.redirect_stdout(io.StringIO()):
        if cli_main([*cmd, "--features", ",".join(sorted(features))]) != 0:
            raise SystemExit(f"abaw synth failed for {root}")
    return root


def _bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _saved_activations(step_loss: Any, exclude: set[int]) -> tuple[Any, int]:
    """The loss, and the bytes of the storages autograd saves for backward (minus `exclude`)."""
    import torch

    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in exclude:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step_loss()
    return loss, sum(seen.values())


def trial_memory(
    sweep_path: str | Path,
    data: Path,
    device: Any,
    *,
    samples: int,
    overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per largest setting of the sweep: the bytes a trial holds (see the module doc)."""
    import torch

    from abaw.ema import ModelEma
    from abaw.sweep import build_configs, load_sweep
    from abaw.track import get_track
    from abaw.train import _autocast, _optimizer, run_sections

    device = torch.device(device)
    sweep = load_sweep(sweep_path)
    track = get_track(sweep.track)
    rows = []
    for params in largest_settings(sweep, overrides):
        configs = build_configs(
            sweep.resolve(params, overrides),
            run_sections(track, sweep.model),
            where=str(sweep_path),
        )
        cfg = configs["train"]
        task = track.prepare(Path(data), sweep.model, configs, device)
        if not hasattr(task, "batch"):
            raise SystemExit(f"{sweep_path}: its task cannot gather a batch of chosen samples")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        torch.manual_seed(0)
        model = task.build_model().to(device)
        model.train()
        opt = _optimizer(model, cfg)
        ema = ModelEma(model, cfg.ema_decay) if cfg.ema else None
        best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        pick = torch.randint(0, len(task.train_index), (cfg.batch_size,))
        batch = task.batch(task.train_index[pick.to(task.train_index.device)])
        inputs = [v for v in batch.values() if isinstance(v, torch.Tensor)]
        autocast = _autocast(cfg.amp and device.type == "cuda")
        exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *inputs]}
        saved = 0
        for _ in range(2):  # the first step creates the optimiser's state
            with autocast():
                loss, saved = _saved_activations(partial(task.loss, model, batch), exclude)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            if ema is not None:
                ema.update(model)
        params_b = _bytes(model.parameters())
        state_b = params_b + _bytes(model.buffers())
        opt_b = _bytes(
            v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)
        )
        ema_b = _bytes(ema.module.state_dict().values()) if ema is not None else 0
        persistent = state_b + params_b + opt_b + ema_b + _bytes(best.values())  # + grads
        batch_b = _bytes(inputs)
        per_step = sum(v.shape[2] * v.element_size() for v in batch.values() if v.dim() == 3)
        steps = next(v.shape[1] for v in batch.values() if v.dim() == 3)
        shown = {"batch_size": cfg.batch_size}
        shown.update({k.split(".", 1)[1]: v for k, v in params.items() if not isinstance(v, float)})
        if "max_len" not in shown and getattr(task, "max_len", None) is not None:
            chosen = sweep.resolve(params, overrides).get("data.max_len") is None
            shown["max_len"] = f"{task.max_len}" + (" (from the data: the tiny set's)" * chosen)
        else:
            chosen = False
        row = {
            "sweep": sweep.name,
            "settings": ", ".join(f"{k} {v}" for k, v in shown.items()),
            "parameters": sum(p.numel() for p in model.parameters()),
            "state_mib": persistent / MIB,
            "batch_mib": batch_b / MIB,
            "saved_mib": saved / MIB,
            "estimate_mib": (persistent + batch_b + saved) / MIB,
            "data_step_mib": samples * per_step / MIB,  # one step of every sample
            "data_bound_mib": None if chosen else samples * per_step * steps / MIB,
            "peak_mib": None,
        }
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            row["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / MIB
        rows.append(row)
        del model, opt, ema, best, batch, inputs, loss, task
    return rows


def full_scale_samples() -> int:
    """Samples of the real ERI splits (train + devel + test), as the full synthetic set has."""
    from abaw.eri.synth import SCALES

    full = SCALES["full"]
    return full.n_train + full.n_devel + full.n_test


def _data(row: dict[str, Any]) -> str:
    per = f"{row['data_step_mib']:,.0f} per step of max_len"
    return per if row["data_bound_mib"] is None else f"{row['data_bound_mib']:,.0f} ({per})"


def markdown(rows: list[dict[str, Any]], samples: int, device: str) -> str:
    """The rows as a markdown table (the measured column only where a GPU measured it)."""
    measured = any(r["peak_mib"] is not None for r in rows)
    head = (
        "| sweep | largest settings | parameters | weights, grads, Adam, EMA, best copy (MiB) "
        "| batch inputs (MiB) | saved activations (MiB) | trial estimate (MiB) "
        f"| data on the device, at most ({samples:,} samples, MiB) |"
    )
    head += " measured peak (MiB) |" if measured else ""
    lines = [head, "|" + "---|" * 2 + "---:|" * (6 + measured)]
    for r in rows:
        line = (
            f"| {r['sweep']} | {r['settings']} | {r['parameters']:,} | {r['state_mib']:.0f} "
            f"| {r['batch_mib']:.0f} | {r['saved_mib']:.0f} | **{r['estimate_mib']:.0f}** "
            f"| {_data(r)} |"
        )
        lines.append(line + (f" {r['peak_mib']:.0f} |" if measured else ""))
    kind = "measured on " + device if measured else "estimated on CPU in float32"
    return "\n".join(lines) + f"\n\n({kind}; see benchmarks/trial_memory.py for what is counted)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--sweeps",
        default=",".join(f"sweeps/{s}.toml" for s in ERI_SWEEPS),
        help="comma-separated ERI sweep files",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--samples", type=int, help="data-set size for the data bound (default: real)")
    p.add_argument("--all", action="store_true", help="every largest combination, not the top")
    a = p.parse_args()
    import torch

    from abaw.sweep import load_sweep

    sweeps = [REPO / s if not Path(s).is_absolute() else Path(s) for s in a.sweeps.split(",")]
    features = sorted({f for s in sweeps for f in load_sweep(s).resolve()["data.features"]})
    samples = a.samples or full_scale_samples()
    with tempfile.TemporaryDirectory(prefix="abaw-trial-memory-") as tmp:
        data = tiny_data(Path(tmp), features)
        rows = []
        for s in sweeps:
            found = trial_memory(s, data, a.device, samples=samples)
            key = "peak_mib" if found[0]["peak_mib"] is not None else "estimate_mib"
            rows += found if a.all else [max(found, key=lambda r: r[key])]
    dev = torch.cuda.get_device_name(torch.device(a.device)) if a.device != "cpu" else "cpu"
    print(markdown(rows, samples, f"{dev}, torch {torch.__version__}"))


if __name__ == "__main__":
    main()
