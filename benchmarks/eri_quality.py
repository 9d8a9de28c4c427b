"""ERI quality on synthetic data: every abaw variant vs a ridge reference on the same inputs.

For each data set given (`abaw synth --track eri --scale small`, and the harder
`--difficulty hard`) and each seed, this trains, with the shared trainer:

- fusion A, V, AV, AVI at the recommended settings (sweeps/eri-fusion-mean.toml:
  masked-mean read-out), and fusion AVI at the paper's (sweeps/eri-fusion.toml),
- the pooled-statistics MLP (sweeps/eri-pooled.toml),
- the MuSe-2022 LSTM on the visual and on the audio set (sweeps/eri-lstm.toml),

and, in the same script on exactly the inputs the models see (the same features,
max_len, cut, standardisation, train samples and devel samples), a scikit-learn
ridge regression on per-modality masked-mean-pooled features for A, V and A+V,
alpha chosen on devel. Targets: each model >= the ridge of its own inputs, fused
models above single-modality ones. Devel mean Pearson, share of the oracle,
mean +- spread (max - min) / 2 over seeds, wall seconds per model (with the load
average: noisy on a shared machine).

    OMP_NUM_THREADS=1 python benchmarks/eri_quality.py --data /tmp/eri-small /tmp/eri-hard \
        --seeds 0,1,2 --epochs 40 --embed-dim 64 --json eri.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import Ridge

from abaw.eri import EMOTIONS
from abaw.eri.data import load_eri
from abaw.eri.track import TRACK, EriTask
from abaw.metrics import mean_pearson
from abaw.sweep import build_configs, load_sweep
from abaw.train import fit, run_sections

ROOT = Path(__file__).resolve().parents[1]
AUDIO, VISUAL = "DeepSpectrum", "PosterV2-ViT"
AV = {AUDIO: "audio", VISUAL: "visual"}
# label, sweep, overrides, reference (ridge of the same inputs)
ROWS = [
    ("fusion A", "eri-fusion-mean", {"model.modalities": "A"}, "A"),
    ("fusion V", "eri-fusion-mean", {"model.modalities": "V"}, "V"),
    ("fusion AV", "eri-fusion-mean", {"model.modalities": "AV"}, "AV"),
    ("fusion AVI", "eri-fusion-mean", {"model.modalities": "AVI"}, "AV"),
    ("fusion AVI (paper)", "eri-fusion", {"model.modalities": "AVI"}, "AV"),
    ("pooled AV", "eri-pooled", {}, "AV"),
    ("lstm V", "eri-lstm", {"data.features": {VISUAL: "visual"}}, "V"),
    ("lstm A", "eri-lstm", {"data.features": {AUDIO: "audio"}}, "A"),
]
ALPHAS = [0.1, 1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0]


def _configs(sweep: str, overrides: dict, args) -> tuple[str, dict]:
    s = load_sweep(ROOT / "sweeps" / f"{sweep}.toml")
    o = {"train.epochs": args.epochs, "train.patience": args.patience, **overrides}
    if s.model == "fusion":
        o["model.embed_dim"] = args.embed_dim
    if sweep == "eri-fusion":  # the paper's batch 256 is 2 steps per epoch on a small set
        o["train.batch_size"] = args.paper_batch
    if args.max_len:
        o["data.max_len"] = args.max_len
    flat = s.resolve(overrides=o)
    return s.model, build_configs(flat, run_sections(TRACK, s.model), where=sweep)


def ridge_reference(task: EriTask) -> dict[str, dict]:
    """Ridge on masked-mean-pooled features of the task's own inputs, per modality set."""
    idx = {s: torch.from_numpy(task.split_index[s]) for s in ("devel",)}
    train = task.train_index
    pooled = {}
    for split, index in (("train", train), ("devel", idx["devel"])):
        b = task.batch(index)
        pooled[split] = {}
        for m in ("audio", "visual"):
            x, mask = b[m].numpy(), b[f"{m}_mask"].numpy()[..., None]
            n = np.maximum(mask.sum(1), 1)
            pooled[split][m] = np.concatenate([(x * mask).sum(1) / n, mask.any(1)], axis=1)
    y_tr = task.labels[task.train_index.numpy()]
    y_dev = task.labels[task.split_index["devel"]]
    out = {}
    for name, mods in (("A", ["audio"]), ("V", ["visual"]), ("AV", ["audio", "visual"])):
        xtr = np.concatenate([pooled["train"][m] for m in mods], axis=1)
        xdv = np.concatenate([pooled["devel"][m] for m in mods], axis=1)
        best = None
        for a in ALPHAS:
            p = Ridge(alpha=a).fit(xtr, y_tr).predict(xdv)
            s = mean_pearson(y_dev, p, EMOTIONS).value
            if best is None or s > best[0]:
                best = (s, a)
        out[name] = {"score": best[0], "alpha": best[1]}
    return out


def _done(logs: list[str]) -> dict[tuple[str, str, int], dict]:
    """Per-run result lines (`<set> <model> {json}`) of earlier logs, by (set, model, seed)."""
    out = {}
    labels = sorted((r[0] for r in ROWS), key=len, reverse=True)
    for log in logs:
        for line in Path(log).read_text().splitlines():
            head, _, rest = line.partition(" ")
            label = next((lab for lab in labels if rest.startswith(lab + " {")), None)
            if label is None:
                continue
            row = json.loads(rest[len(label) + 1 :].split(" (from --resume)")[0])
            out[(head, label, row["seed"])] = row
    return out


def _summ(vals: list[float]) -> tuple[float, float]:
    return float(np.mean(vals)), float((max(vals) - min(vals)) / 2)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", nargs="+", required=True, help="abaw synth --track eri folders")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--embed-dim", type=int, default=64, help="fusion width (paper 256; CPU 64)")
    ap.add_argument("--paper-batch", type=int, default=32, help="batch of the paper row")
    ap.add_argument("--max-len", type=int, default=0, help="0 = the sweeps' (auto from the data)")
    ap.add_argument("--rows", help="comma-separated labels (or 1-based numbers); default all")
    ap.add_argument("--json", help="write every result here")
    ap.add_argument(
        "--resume",
        nargs="*",
        default=[],
        metavar="LOG",
        help="logs of earlier runs of this script: (set, model, seed) found there are not rerun",
    )
    ap.add_argument(
        "--report-only", action="store_true", help="with --resume: tables of what the logs hold"
    )
    args = ap.parse_args()
    done = _done(args.resume)
    torch.set_num_threads(1)
    device = torch.device("cpu")
    rows = ROWS
    if args.rows:
        keys = [k.strip() for k in args.rows.split(",")]
        rows = [r for i, r in enumerate(ROWS) if r[0] in keys or str(i + 1) in keys]
    seeds = [int(s) for s in args.seeds.split(",")]
    report = {"settings": vars(args), "sets": {}}
    for root in map(Path, args.data):
        oracle = json.loads((root / "oracle.json").read_text())
        ceiling = oracle["devel"]["mean_pearson"]
        data = load_eri(root, AV)
        res: dict[str, list[dict]] = {}
        model, cfg = _configs("eri-fusion-mean", {"model.modalities": "AV"}, args)
        ref_task = EriTask(data, model, cfg, device)
        ref = ridge_reference(ref_task)
        print(f"{root}: oracle {ceiling:.4f}; notes: {ref_task.notes}", flush=True)
        print(f"ridge: {json.dumps(ref)}", flush=True)
        for label, sweep, over, _ in rows:
            for seed in seeds:
                prev = done.get((root.name, label, seed))
                if prev is not None:
                    res.setdefault(label, []).append(prev)
                    print(f"{root.name} {label} {json.dumps(prev)} (from --resume)", flush=True)
                    continue
                if args.report_only:
                    continue
                model, cfg = _configs(sweep, over, args)
                task = EriTask(data, model, cfg, device)
                t0 = time.perf_counter()
                r = fit(task, cfg["train"], device=device, seed=seed)
                secs = time.perf_counter() - t0
                hist = r.history
                row = {
                    "seed": seed,
                    "score": r.best_score,
                    "best_epoch": r.best_epoch,
                    "epochs": len(hist),
                    "train_loss_first_last": [hist[0]["train_loss"], hist[-1]["train_loss"]],
                    "seconds": secs,
                    "load": os.getloadavg()[0],
                    "max_len": task.max_len,
                    "params": sum(p.numel() for p in task.build_model().parameters()),
                }
                res.setdefault(label, []).append(row)
                print(f"{root.name} {label} {json.dumps(row)}", flush=True)
        report["sets"][str(root)] = {
            "oracle": ceiling,
            "difficulty": oracle.get("difficulty", "normal"),
            "counts": oracle["counts"],
            "ridge": ref,
            "max_len": ref_task.max_len,
            "results": res,
        }
        _table(root, ceiling, ref, rows, res)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def _table(root: Path, ceiling: float, ref: dict, rows, res: dict) -> None:
    print(f"\n{root} (oracle devel mean Pearson {ceiling:.4f})\n")
    print(
        "| model | devel mean Pearson | % of oracle | reference (ridge) | >= ref | best epoch / run | seconds (load) |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    for name in ("A", "V", "AV"):
        r = ref[name]
        print(
            f"| ridge {name} (alpha {r['alpha']:g}) | {r['score']:.4f} | {100 * r['score'] / ceiling:.0f} % | - | - | - | - |"
        )
    for label, _, _, refname in rows:
        rs = res.get(label)
        if not rs:
            continue
        m, sp = _summ([r["score"] for r in rs])
        ok = "yes" if m >= ref[refname]["score"] else "**no**"
        if len(rs) < 3:
            ok += f" ({len(rs)} seed{'s' if len(rs) > 1 else ''})"
        ep = "/".join(f"{r['best_epoch']}:{r['epochs']}" for r in rs)
        secs = np.mean([r["seconds"] for r in rs])
        load = np.mean([r["load"] for r in rs])
        print(
            f"| {label} | {m:.4f} ± {sp:.4f} | {100 * m / ceiling:.0f} % | ridge {refname} {ref[refname]['score']:.4f} | {ok} | {ep} | {secs:.0f} ({load:.1f}) |"
        )


if __name__ == "__main__":
    main()
