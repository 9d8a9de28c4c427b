"""ERI quality on synthetic data: fusion vs the oracle, the modality ablation, the LSTM baseline.

On `abaw synth --scale small` data (1,260 train / 370 devel) this trains, with
the same trainer and settings for every row:

- fusion A, V, AV, AVI (paper Tables 1-2; target: AVI beats each single modality),
- the MuSe-2022 LSTM baseline on the visual and on the audio feature set,

and reports devel mean Pearson against `oracle.json` (the score of the ideal
predictor; target for fusion AVI: >= 80 % of it).

Defaults are the paper's (d=256, max_len 30, Adam 1e-4, wd 1e-3, StepLR 30,
batch 256, 100 epochs, patience 15, EMA 0.99, clip 0.1). On a small CPU use
the flags to shorten a run and say so when reporting (every flag is printed).

    python benchmarks/eri_quality.py --data /tmp/eri-small [--epochs 100] [--embed-dim 256] [--max-len 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from abaw.eri.data import load_eri
from abaw.eri.models import FusionConfig, LstmConfig
from abaw.eri.track import EriDataConfig, EriLossConfig, EriTask
from abaw.train import TrainConfig, fit, resolve_device

AUDIO, VISUAL = "DeepSpectrum", "PosterV2-ViT"
ROWS = [
    ("fusion A", "fusion", "A"),
    ("fusion V", "fusion", "V"),
    ("fusion AV", "fusion", "AV"),
    ("fusion AVI (paper)", "fusion", "AVI"),
    ("LSTM baseline, visual", "lstm", VISUAL),
    ("LSTM baseline, audio", "lstm", AUDIO),
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data", required=True, help="folder written by `abaw synth --track eri --scale small`"
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--embed-dim", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-4, help="fusion learning rate (paper 1e-4)")
    ap.add_argument(
        "--lstm-lr", type=float, default=1e-4, help="LSTM learning rate (baseline 1e-4)"
    )
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", help="comma-separated row numbers (1-based) to run; default all")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    device = resolve_device(args.device)
    root = Path(args.data)
    oracle = json.loads((root / "oracle.json").read_text())["devel"]["mean_pearson"]
    data = load_eri(root, {AUDIO: "audio", VISUAL: "visual"})
    rows = [ROWS[int(i) - 1] for i in args.rows.split(",")] if args.rows else ROWS
    results = []
    for label, model, what in rows:
        if model == "fusion":
            features = {AUDIO: "audio", VISUAL: "visual"}
            mcfg = FusionConfig(modalities=what, embed_dim=args.embed_dim)
            train = TrainConfig(
                lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, patience=args.patience
            )
            loss = EriLossConfig()
        else:
            features = {what: "audio" if what == AUDIO else "visual"}
            mcfg = LstmConfig()
            train = TrainConfig(
                lr=args.lstm_lr,
                weight_decay=0.0,
                scheduler="plateau",
                step_size=5,
                batch_size=args.batch_size,
                epochs=args.epochs,
                patience=args.patience,
                ema=False,
                clip_norm=0.0,
            )
            loss = EriLossConfig(beta=0.0)
        configs = {
            "data": EriDataConfig(features=features, max_len=args.max_len),
            "model": mcfg,
            "loss": loss,
            "train": train,
        }
        task = EriTask(data, model, configs, device)
        t0 = time.perf_counter()
        r = fit(task, train, device=device, seed=args.seed)
        secs = time.perf_counter() - t0
        results.append(
            {
                "row": label,
                "score": r.best_score,
                "best_epoch": r.best_epoch,
                "epochs": len(r.history),
                "seconds": secs,
            }
        )
        print(
            f"{label}: {r.best_score:.4f} (best epoch {r.best_epoch}/{len(r.history)}, {secs:.0f} s)",
            flush=True,
        )
    dev = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    print(f"\nERI quality on {root} (oracle devel mean Pearson {oracle:.4f}), {dev}")
    print(f"settings: {vars(args)}\n")
    print("| model | devel mean Pearson | % of oracle | best epoch / run | seconds |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['row']} | {r['score']:.4f} | {100 * r['score'] / oracle:.0f} % | {r['best_epoch']} / {r['epochs']} | {r['seconds']:.0f} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"oracle": oracle, "settings": vars(args), "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
