"""Expr quality on synthetic Aff-Wild2 (`write_expr(scale="small")`): fused vs single backbones.

Trains the [fixed] configuration of sweeps/expr-fusion.toml and of each single-backbone
sweep (same model and settings, one backbone) with the shared trainer, and reports
devel macro F1 against the generator's oracle (the latent-class predictor, oracle.json),
then the effect of temporal smoothing. Smoothing is chosen on devel and reported on the
held-out test labels the generator hides in `.oracle/` (read here only, never by loaders),
so the smoothing gain is not a number fitted to the set it is reported on.

    nice -n 10 python benchmarks/expr_quality.py --data /tmp/abaw-bench/expr-small

Targets: fused >= 80% of the oracle's devel macro F1; fused beats every single backbone;
smoothing helps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from abaw.expr.smoothing import smooth_predictions
from abaw.expr.synth import write_expr
from abaw.metrics import macro_f1
from abaw.sweep import build_configs, load_sweep, parse_overrides
from abaw.track import get_track
from abaw.train import fit, run_sections

SWEEPS = ["expr-fusion", "expr-vggface2", "expr-casia", "expr-regnet"]
ROOT = Path(__file__).resolve().parents[1]


def _test_f1(pred, root: Path) -> float:
    """Macro F1 of test predictions against the generator's hidden test labels."""
    labels = np.empty(len(pred), dtype=np.int64)
    for v in np.unique(pred.keys["video"]):
        sel = pred.keys["video"] == v
        path = root / ".oracle" / "test_labels" / f"{v}.npy"
        lab = np.load(path, allow_pickle=False)
        labels[sel] = lab[pred.keys["frame"][sel] - 1]
    return macro_f1(labels, pred.values.argmax(1)).value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/abaw-bench/expr-small", help="small synthetic data set")
    ap.add_argument("--epochs", type=int, default=12, help="max epochs per model (CPU budget)")
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweeps", default=",".join(SWEEPS))
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of every sweep, as `abaw train --set` (repeatable)",
    )
    args = ap.parse_args()
    root = Path(args.data)
    if not (root / "oracle.json").is_file():
        write_expr(root, scale="small", seed=args.seed)
    oracle = json.loads((root / "oracle.json").read_text())
    ceiling = oracle["splits"]["devel"]["macro_f1"]
    device = torch.device("cpu")
    rows, fused = [], None
    for name in args.sweeps.split(","):
        sweep = load_sweep(ROOT / "sweeps" / f"{name}.toml")
        track = get_track(sweep.track)
        flat = sweep.resolve(
            overrides={
                "train.epochs": args.epochs,
                "train.patience": args.patience,
                **parse_overrides(args.overrides),
            }
        )
        configs = build_configs(flat, run_sections(track, sweep.model), where=name)
        t0 = time.perf_counter()
        task = track.prepare(root, sweep.model, configs, device)
        res = fit(task, configs["train"], device=device, seed=args.seed)
        devel = task.predict(res.model, "devel")
        test = task.predict(res.model, "test")
        secs = time.perf_counter() - t0
        row = {
            "sweep": name,
            "backbones": "+".join(task.backbones),
            "devel": res.best_score,
            "test": _test_f1(test, root),
            "epoch": res.best_epoch,
            "epochs": len(res.history),
            "seconds": secs,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if name == "expr-fusion":
            fused = (devel, test)

    print(
        f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, CPU only. Data: write_expr(scale='small', seed={args.seed}); "
        f"max {args.epochs} epochs, patience {args.patience}.\n"
    )
    print(
        "| model (sweep) | backbones | devel macro F1 | % of oracle | test macro F1 | best epoch / run | seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| oracle (latent class) | - | {ceiling:.4f} | 100% | "
        f"{oracle['splits']['test']['macro_f1']:.4f} | - | - |"
    )
    for r in rows:
        print(
            f"| {r['sweep']} | {r['backbones']} | {r['devel']:.4f} | {100 * r['devel'] / ceiling:.0f}% | "
            f"{r['test']:.4f} | {r['epoch']} / {r['epochs']} | {r['seconds']:.0f} |"
        )
    if fused is None:
        return
    devel, test = fused
    print(
        "\nTemporal smoothing of the fused model's per-frame probabilities "
        "(width chosen on devel, then applied to test):\n"
    )
    print("| smoothing | width | devel macro F1 | test macro F1 |")
    print("|---|---|---|---|")
    best = ("none", 1, devel_score(devel))
    print(f"| none | 1 | {best[2]:.4f} | {_test_f1(test, root):.4f} |")
    for kind in ("moving", "gaussian"):
        for width in (5, 9, 15, 25, 41):
            s = devel_score(smooth_predictions(devel, kind=kind, width=width))
            t = _test_f1(smooth_predictions(test, kind=kind, width=width), root)
            print(f"| {kind} | {width} | {s:.4f} | {t:.4f} |")
            if s > best[2]:
                best = (kind, width, s)
    t = _test_f1(smooth_predictions(test, kind=best[0], width=best[1]), root)
    print(
        f"\nChosen on devel: {best[0]} width {best[1]} -> test macro F1 {t:.4f} "
        f"(unsmoothed {_test_f1(test, root):.4f})."
    )


def devel_score(pred) -> float:
    """Devel macro F1 of argmax predictions."""
    return macro_f1(pred.labels, pred.values.argmax(1)).value


if __name__ == "__main__":
    main()
