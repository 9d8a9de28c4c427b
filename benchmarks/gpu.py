"""One GPU benchmark: the whole product's speed on one device, in one table, in under 8 minutes.

    python benchmarks/gpu.py [--device cuda|cpu] [--quick] [--out FILE.md]

Rows (each says what it measured; every number is measured by this run):

- the device's matmul peak: a large bf16 matmul on CUDA (the precision training runs in),
  a 2048^2 fp32 sgemm on CPU (`bench_step.matmul_rate`; CPU training runs in float32);
- the ERI fusion's training step at the paper's shapes (bench_step's `eri-paper` case: d 256,
  T 30, batch 256, DeepSpectrum 1024 + PosterV2-ViT 1536, FusionConfig defaults; with
  --quick its `eri-cpu` case, d 64, batch 64): seconds per step, FLOPs per step
  (`torch.utils.flop_counter`, forward + backward), and their share of the peak. The step is
  the trainer's: bf16 autocast around forward and loss on CUDA (`abaw.train._autocast`),
  backward, clipping, the trainer's optimiser, EMA; the device is synchronised before each
  timer is read, once per timed run of steps, as the trainer syncs once per epoch;
- the memory of one `abaw tune` trial at eri-fusion's largest settings (benchmarks/
  trial_memory.py): the caching allocator's peak on CUDA, the CPU estimate on CPU;
- `abaw tune --jobs N` trials per hour for N = 1, 2, 4, 8 (--quick: 1, 2) on one device: the
  real CLI in a subprocess (journal storage in a temp folder), sweeps/eri-fusion.toml with
  `train.epochs` pinned small and no pruning, on a synthetic ERI set of the real split sizes
  (`abaw synth --scale full`; --quick: `--scale tiny`); completed trials / wall hours of the
  whole command (start-up, data, trials, the tail after the time budget);
- Expr fusion training and inference frames/s (bench_step's `expr` case: 3 backbones
  512 + 512 + 888, 64-frame windows, batch 32 windows; inference is a no-grad forward in
  eval mode, bf16 autocast on CUDA as `abaw.train.predict_split`);
- frames/s of ViT-B/16 (`torchvision:vit_b_16` through `abaw.extract`'s `load_backbone` and
  `pipeline.Model`, random weights, nothing downloaded; bf16 and channels-last on CUDA as
  `abaw extract` runs it), uint8 224 px images in, features out.

The header gives the device, torch and the load average at the start and the end: figures
taken while other work runs are noise. `--device cpu --quick` is the suite's smoke test
(tests/test_gpu_bench.py); a full run on CPU takes hours (the tune rows train at full size).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_step  # noqa: E402  (benchmarks/: the step cases and the CPU matmul rate)
import torch  # noqa: E402
import trial_memory  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

TUNE_SWEEP = REPO / "sweeps" / "eri-fusion.toml"
VIT = "torchvision:vit_b_16"


@dataclass
class Row:
    """One measurement: what, the number, its unit, and how it was taken."""

    what: str
    value: float
    unit: str
    how: str
    rate: float | None = None  # TFLOP/s the work ran at: "{share}" of the peak, filled in last


@dataclass
class Plan:
    """Sizes of a run: the full benchmark or the quick smoke test."""

    quick: bool
    step_case: str
    warmup: int
    steps: int
    rounds: int
    jobs: tuple[int, ...]
    scale: str
    epochs: int
    tune_seconds: float | None  # --timeout per N (full); None: --trials N (quick)
    vit_batch: int
    vit_batches: int
    memory_overrides: dict[str, Any]
    threads: int | None = None  # torch CPU threads (here and per tune worker); None: defaults


def plan_for(quick: bool, tune_seconds: float, epochs: int | None) -> Plan:
    """The full run's sizes, or the quick run's (seconds on a 2-core CPU)."""
    if quick:
        return Plan(True, "eri-cpu", 1, 2, 2, (1, 2), "tiny", epochs or 1, None, 2, 2,
                    {"train.batch_size": 16, "data.max_len": 20})  # fmt: skip
    return Plan(
        False, "eri-paper", 3, 10, 3, (1, 2, 4, 8), "full", epochs or 3, tune_seconds, 256, 8, {}
    )


# -- the device ------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    """Hand this process's cached device memory back before other processes need the card."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    """The card's name, or the CPU's model and cores."""
    if device.type == "cuda":
        cap = torch.cuda.get_device_properties(device)
        return (
            f"{torch.cuda.get_device_name(device)} ({device}, {cap.total_memory / 2**30:.0f} GiB)"
        )
    return f"{bench_step.cpu_model()} ({len(os.sched_getaffinity(0))} cores, CPU)"


def peak_rate(device: torch.device, quick: bool) -> Row:
    """The device's matmul rate: bf16 on CUDA (as training runs), fp32 on CPU."""
    if device.type != "cuda":
        rate = bench_step.matmul_rate(n=2048, repeats=2 if quick else 5) / 1e3
        how = (
            f"2048^2 fp32 matmul, best of {2 if quick else 5}, {torch.get_num_threads()} thread(s)"
        )
        return Row("matmul peak (fp32: CPU training runs in float32)", rate, "TFLOP/s", how)
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    torch.mm(a, b)
    sync(device)
    best = 0.0
    for _ in range(5):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.3:
            for _ in range(10):
                torch.mm(a, b)
            sync(device)
            reps += 10
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12)
    return Row("matmul peak (bf16)", best, "TFLOP/s", f"{n}^2 bf16 matmul, best of 5")


# -- training steps (bench_step's cases, on the device) -----------------------------------------


def _case(name: str, device: torch.device) -> tuple[Any, Callable, Any, int, str]:
    """bench_step's case `name` (model, loss, TrainConfig, items per step, unit) on `device`."""
    if name == "expr":
        return bench_step._expr_case(device)
    return bench_step._eri_case(name, device)


def _eri_shape(model: Any, loss: Callable) -> str:
    batch = loss.inputs
    b, t = next(v.shape[:2] for v in batch.values() if v.dim() == 3)
    widths = " + ".join(f"{k} {v.shape[2]}" for k, v in batch.items() if v.dim() == 3)
    cfg = getattr(model, "cfg", None)
    d = f"d {cfg.embed_dim}, " if hasattr(cfg, "embed_dim") else ""
    return f"{d}T {t}, batch {b}, {widths}"


def train_step(name: str, device: torch.device, plan: Plan) -> dict[str, Any]:
    """Seconds per training step (the trainer's step), FLOPs per step, items per step.

    bench_step's `_measure` times the same step on CPU; this one also places the case on the
    device, runs forward and loss under the trainer's autocast, and synchronises the device
    before reading a timer, so the CPU smoke test runs the code a GPU run will.
    """
    from abaw.train import _autocast

    torch.manual_seed(0)
    model, loss, cfg, items, unit = _case(name, device)
    amp = cfg.amp and device.type == "cuda"
    autocast = _autocast(amp)
    step = bench_step.trainer_step(model, loss, cfg, autocast)
    opt = step.optimizer

    counter = FlopCounterMode(display=False)
    with counter:
        with autocast():
            value = loss(model)
        value.backward()
    opt.zero_grad(set_to_none=True)
    for _ in range(plan.warmup):
        step()
    times = []
    for _ in range(plan.rounds):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(plan.steps):
            step()
        sync(device)
        times.append((time.perf_counter() - t0) / plan.steps)
    shape = _eri_shape(model, loss) if name != "expr" else f"{items} frames per step"
    return {
        "seconds": statistics.median(times),
        "flops": counter.get_total_flops(),
        "items": items,
        "unit": unit,
        "shape": shape,
        "precision": "bf16 autocast" if amp else "float32",
        "timing": f"median of {plan.rounds} runs of {plan.steps} steps after {plan.warmup} warm-up",
    }


def step_rows(device: torch.device, plan: Plan) -> list[Row]:
    """The ERI step: seconds, FLOPs and share of the peak; Expr training frames/s."""
    m = train_step(plan.step_case, device, plan)
    rate = m["flops"] / m["seconds"] / 1e12
    what = f"ERI fusion step ({m['shape']})"
    how = f"{m['precision']}; {m['timing']}; bench_step {plan.step_case}"
    rows = [
        Row(f"{what}: time", m["seconds"], "s/step", how),
        Row(f"{what}: FLOPs", m["flops"] / 1e9, "GFLOP/step", "torch.utils.flop_counter, fwd+bwd"),
        Row(f"{what}: share of peak", math.nan, "%",
            f"{rate:.3g} TFLOP/s of {{peak}}; {m['items'] / m['seconds']:,.0f} samples/s", rate),
    ]  # fmt: skip
    e = train_step("expr", device, plan)
    e_rate = e["flops"] / e["seconds"] / 1e12
    rows.append(
        Row(
            f"Expr fusion training ({e['shape']})",
            e["items"] / e["seconds"],
            "frames/s",
            f"{e['precision']}; {e['timing']}; {e['flops'] / 1e9:.3g} GFLOP/step, "
            "{share} % of peak",
            e_rate,
        )  # fmt: skip
    )
    return rows


def expr_inference(device: torch.device, plan: Plan) -> Row:
    """Expr fusion frames/s in eval mode without gradients (the trainer's predictions)."""
    from abaw.train import _autocast

    model, loss, cfg, items, _ = _case("expr", device)
    x = loss.inputs["x"]
    model.eval()
    amp = cfg.amp and device.type == "cuda"
    autocast = _autocast(amp)
    with torch.no_grad(), autocast():
        for _ in range(plan.warmup):
            model(x)
        times = []
        for _ in range(plan.rounds):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(plan.steps):
                model(x)
            sync(device)
            times.append((time.perf_counter() - t0) / plan.steps)
    sec = statistics.median(times)
    what = f"Expr fusion inference ({x.shape[0]} windows x {x.shape[1]} frames per forward)"
    how = f"{'bf16 autocast' if amp else 'float32'}, no_grad, eval; median of {plan.rounds} runs"
    return Row(what, items / sec, "frames/s", how)


def vit_rate(device: torch.device, plan: Plan) -> Row:
    """ViT-B/16 frames/s through the extraction code's model wrapper (random weights)."""
    from abaw.extract import pipeline
    from abaw.extract.backbones import load_backbone

    bb = load_backbone(VIT, None)  # random weights: built offline, nothing downloaded
    cuda = device.type == "cuda"
    model = pipeline.Model(bb, device, cuda, channels_last=cuda)
    s = bb.input_size
    counter = FlopCounterMode(display=False)
    with counter, torch.enable_grad():  # with grad, attention is not the fused path it misses
        bb.module(torch.zeros(1, 3, s, s, device=device))
    n = plan.vit_batch * plan.vit_batches
    images = torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8)
    pipeline.bare_forward_rate(model, images[: plan.vit_batch], plan.vit_batch)  # warm-up
    rate = pipeline.bare_forward_rate(model, images, plan.vit_batch)
    return Row(
        f"ViT-B/16 extraction forward ({VIT}, {s} px, batch {plan.vit_batch})",
        rate,
        "frames/s",
        f"{'bf16, channels-last' if cuda else 'float32'}; uint8 images in, features out "
        f"({n} frames, pipeline.bare_forward_rate); "
        f"{counter.get_total_flops() / 1e9:.3g} GFLOP/frame, {{share}} % of peak",
        counter.get_total_flops() * rate / 1e12,
    )


# -- memory of a trial and `abaw tune --jobs N` ------------------------------------------------


def memory_row(device: torch.device, plan: Plan, data: Path) -> Row:
    """One eri-fusion trial at its largest settings: the allocator's peak, or the CPU estimate."""
    rows = trial_memory.trial_memory(
        TUNE_SWEEP, data, device, samples=1, overrides=plan.memory_overrides
    )
    key = "peak_mib" if device.type == "cuda" else "estimate_mib"
    top = max(rows, key=lambda r: r[key])
    how = (
        "torch.cuda.max_memory_allocated over two steps, data excluded"
        if device.type == "cuda"
        else "CPU estimate, float32: weights, grads, Adam, EMA, best copy, batch, saved activations"
    )
    return Row(f"eri-fusion trial memory ({top['settings']})", top[key], "MiB", how)


def synth_eri(scale: str, out: Path) -> tuple[Path, float]:
    """A synthetic ERI set in the real layout (`abaw synth`), and the seconds it took."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "abaw", "synth", "--track", "eri", "--scale", scale]
    done = subprocess.run(
        [*cmd, "--out", str(out), "--seed", "0"],
        cwd=REPO, env=_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"abaw synth --scale {scale} failed:\n{done.stderr[-2000:]}")
    return out, time.perf_counter() - t0


def warm_data_cache(data: Path) -> float:
    """Read the set once as a tune's pre-flight does, so its parse is in no tune row's time."""
    from abaw.sweep import build_configs, load_sweep
    from abaw.track import get_track
    from abaw.train import run_sections

    t0 = time.perf_counter()
    sweep = load_sweep(TUNE_SWEEP)
    track = get_track(sweep.track)
    configs = build_configs(sweep.resolve(), run_sections(track, sweep.model))
    track.load_data(data, sweep.model, configs)
    return time.perf_counter() - t0


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


def tune_rate(jobs: int, data: Path, device: torch.device, plan: Plan, tmp: Path) -> Row:
    """`abaw tune --jobs N` as a user runs it: completed trials per hour of the command's wall."""
    from optuna.trial import TrialState

    from abaw import trials as T
    from abaw.tune import load_study

    runs, name = tmp / f"tune-j{jobs}", f"gpu-bench-j{jobs}"
    budget = (
        ["--timeout", f"{plan.tune_seconds:g}"]
        if plan.tune_seconds is not None
        else ["--trials", str(jobs)]
    )
    cmd = [
        sys.executable, "-m", "abaw", "tune", "--sweep", str(TUNE_SWEEP), "--data", str(data),
        "--runs", str(runs), "--storage", str(runs / "journal.log"), "--study", name,
        "--jobs", str(jobs), "--device", str(device), "--pruner", "none", "--seed", "0",
        "--set", f"train.epochs={plan.epochs}", *budget,
    ]  # fmt: skip
    if plan.threads is not None:
        cmd += ["--threads", str(plan.threads)]
    limit = 600 if plan.tune_seconds is None else plan.tune_seconds + 300
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"abaw tune --jobs {jobs} ran over {limit:g} s: {' '.join(cmd)}") from None
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(
            f"abaw tune --jobs {jobs} failed (exit {done.returncode}): {' '.join(cmd)}\n"
            f"{done.stderr[-3000:]}"
        )
    trials = load_study(name, storage=str(runs / "journal.log"), runs=runs).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [
        t.user_attrs.get(T.TRIAL_FAIL_REASON, "?") for t in trials if t.state == TrialState.FAIL
    ]
    per = (
        statistics.median(t.user_attrs.get(T.TRIAL_SECONDS, math.nan) for t in complete)
        if complete
        else math.nan
    )
    what = (
        f"abaw tune --jobs {jobs} (eri-fusion, {plan.epochs} epoch(s), {plan.scale} synthetic ERI)"
    )
    how = (
        f"{len(complete)} complete, {len(failed)} failed in {wall:.0f} s wall "
        f"({' '.join(budget)}, no pruning); median fit {per:.1f} s per trial"
        + (f"; first failure: {failed[0][:160]}" if failed else "")
    )
    return Row(what, len(complete) / (wall / 3600), "trials/h", how)


# -- the table ---------------------------------------------------------------------------------


def shares(rows: list[Row], peak: float) -> list[Row]:
    """The rows with their share of `peak` filled in (the "{share}" and "{peak}" in their text)."""
    out = []
    for r in rows:
        if r.rate is None:
            out.append(r)
            continue
        share = 100 * r.rate / peak
        how = r.how.replace("{share}", f"{share:.1f}").replace("{peak}", f"{peak:.3g}")
        out.append(replace(r, value=share if r.unit == "%" else r.value, how=how))
    return out


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a failure's text must not split the row


def table(rows: list[Row], header: list[str]) -> str:
    """The markdown table, the header lines above it."""
    lines = [*header, "", "| measurement | value | unit | how |", "|---|---:|---|---|"]
    lines += [f"| {_cell(r.what)} | {_number(r.value)} | {r.unit} | {_cell(r.how)} |" for r in rows]
    return "\n".join(lines) + "\n"


def _load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def run(device: torch.device, plan: Plan, data: Path | None, out: Path | None = None) -> str:
    """Every measurement in order; the table as text (also written to `out` after each row).

    A measurement that raises becomes a row with no number and the error, and the others still
    run: on a lent GPU one CUDA-only bug must not cost the whole loan. The caller exits 1.
    """
    from abaw.sweep import load_sweep

    started, load0 = datetime.datetime.now().isoformat(timespec="seconds"), _load()
    t_start = time.perf_counter()
    rows: list[Row] = []
    notes = {"data": "not reached", "load": math.nan}

    def text() -> str:
        header = [
            f"# abaw GPU benchmark on {device_name(device)}",
            "",
            f"- torch {torch.__version__}"
            + (f", CUDA {torch.version.cuda}" if device.type == "cuda" else "")
            + f", {torch.get_num_threads()} CPU thread(s); {'--quick' if plan.quick else 'full'}"
            f" run started {started}, {time.perf_counter() - t_start:.0f} s in all",
            f"- load average {load0} at the start, {_load()} at the end (1, 5, 15 min)",
            f"- ERI data for the tune rows: {notes['data']}; first read {notes['load']:.1f} s "
            "(not in the rows)",
            f"- command: python benchmarks/gpu.py {' '.join(sys.argv[1:])}",
        ]
        return table(shares(rows, peak.value), header)

    def measure(label: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            got = fn()
        except (Exception, SystemExit) as e:  # recorded as a row; the run goes on
            traceback.print_exc()
            reason = " ".join(str(e).split())[:300] or type(e).__name__
            got = Row(label, math.nan, "-", f"FAILED: {type(e).__name__}: {reason}")
        print(f"[gpu.py] {label}: {time.perf_counter() - t0:.1f} s (load {_load()})",
              file=sys.stderr, flush=True)  # fmt: skip
        if isinstance(got, Row | list):
            rows.extend(got if isinstance(got, list) else [got])
            if out is not None:
                out.write_text(text())
        return got

    peak = Row("matmul peak", math.nan, "TFLOP/s", "not measured yet")
    peak = measure("matmul peak", lambda: peak_rate(device, plan.quick))
    measure("ERI and Expr training steps", lambda: step_rows(device, plan))
    measure("Expr inference", lambda: expr_inference(device, plan))
    measure("ViT-B/16", lambda: vit_rate(device, plan))
    with tempfile.TemporaryDirectory(prefix="abaw-gpu-bench-") as tmp_name:
        tmp = Path(tmp_name)
        features = sorted(load_sweep(TUNE_SWEEP).resolve()["data.features"])
        tiny = trial_memory.tiny_data(tmp, features)
        measure("eri-fusion trial memory", lambda: memory_row(device, plan, tiny))

        def prepare() -> Path:
            if data is not None:
                notes["data"] = f"given with --data ({data})"
                ready = data
            elif plan.quick:
                notes["data"] = "`abaw synth --scale tiny` (the memory row's set)"
                ready = tiny
            else:
                ready, synth_s = synth_eri(plan.scale, tmp / f"eri-{plan.scale}")
                notes["data"] = f"`abaw synth --scale {plan.scale}` in {synth_s:.0f} s"
            notes["load"] = warm_data_cache(ready)
            return ready

        ready = measure("ERI data for the tune rows", prepare)
        release(device)  # the tune workers' shares are fractions of the whole card
        for jobs in plan.jobs if isinstance(ready, Path) else ():
            measure(
                f"abaw tune --jobs {jobs}", lambda j=jobs: tune_rate(j, ready, device, plan, tmp)
            )
    try:  # the machine's rate drifts with other work: the better of the two is the peak
        again = peak_rate(device, plan.quick).value
        peak.how += f"; best of the run's start and end ({peak.value:.3g}, {again:.3g})"
        peak.value = max(peak.value, again)
    except Exception as e:
        print(f"[gpu.py] matmul peak at the end failed: {e}", file=sys.stderr)
    final = text()
    if out is not None:
        out.write_text(final)
    return final


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes: the suite's smoke test")
    p.add_argument("--out", type=Path, help="also write the table to this markdown file")
    p.add_argument("--data", type=Path, help="an ERI data set for the tune rows (default: synth)")
    p.add_argument("--tune-seconds", type=float, default=40.0, help="--timeout per --jobs N")
    p.add_argument("--epochs", type=int, help="train.epochs per tune trial (default 3; quick 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads, here and per tune worker")
    a = p.parse_args()
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {a.device}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    plan = plan_for(a.quick, a.tune_seconds, a.epochs)
    plan.threads = a.threads
    text = run(device, plan, a.data, a.out)
    print(text, end="", flush=True)
    if "| FAILED: " in text:
        raise SystemExit("some measurements failed (their rows say why; tracebacks above)")


if __name__ == "__main__":
    main()
