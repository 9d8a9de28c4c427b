"""Expr quality on synthetic Aff-Wild2: every abaw model vs logistic regression on the same frames.

For each data set given (`abaw synth --track expr --scale small`, and the harder
`--difficulty hard`) and each seed, this trains the [fixed] configuration of
sweeps/expr-fusion.toml and of each single-backbone sweep (same model and settings,
one backbone) with the shared trainer; and, in the same script on exactly the same
frames (the task's training loss frames, every devel frame, the same store rows and
columns), a scikit-learn logistic regression per frame on each backbone and on the
concatenation, C and class weighting chosen on devel, with and without the best
moving-average smoothing (width chosen on devel). The neural models are reported
raw and with the same smoothing choice. Devel macro F1, per-class F1, share of the
oracle, mean +- spread (max - min) / 2 over seeds, wall seconds (with the load
average: noisy on a shared machine). Test macro F1 uses the labels the generator
hides in `.oracle/` (read here only).

    OMP_NUM_THREADS=1 python benchmarks/expr_quality.py --data /tmp/expr-small /tmp/expr-hard \
        --seeds 0,1,2 --epochs 10 --json expr.json

Targets: each model (smoothed) >= logistic + smoothing of its backbones; fused above
every single backbone.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from abaw.expr import CLASSES
from abaw.expr.smoothing import smooth_predictions
from abaw.metrics import macro_f1
from abaw.predictions import Predictions
from abaw.sweep import build_configs, load_sweep, parse_overrides
from abaw.track import get_track
from abaw.train import fit, run_sections

SWEEPS = ["expr-fusion", "expr-vggface2", "expr-casia", "expr-regnet"]
ROOT = Path(__file__).resolve().parents[1]
WIDTHS = [1, 5, 9, 15, 25, 41]


def _test_labels(pred: Predictions, root: Path) -> np.ndarray:
    labels = np.empty(len(pred), dtype=np.int64)
    for v in np.unique(pred.keys["video"]):
        sel = pred.keys["video"] == v
        lab = np.load(root / ".oracle" / "test_labels" / f"{v}.npy", allow_pickle=False)
        f = pred.keys["frame"][sel] - 1
        # feature rows past the annotated length (the generator writes 1-2 extra) are not scored
        labels[sel] = np.where(f < len(lab), lab[np.minimum(f, len(lab) - 1)], -1)
    return labels


def _f1(labels, values) -> float:
    return macro_f1(labels, values.argmax(1)).value


def best_smoothing(devel: Predictions) -> tuple[int, float]:
    """Moving-average width (1 = none) with the best devel macro F1."""
    best = (1, _f1(devel.labels, devel.values))
    for w in WIDTHS[1:]:
        s = _f1(devel.labels, smooth_predictions(devel, kind="moving", width=w).values)
        if s > best[1]:
            best = (w, s)
    return best


def _smooth(p: Predictions, width: int) -> Predictions:
    return p if width <= 1 else smooth_predictions(p, kind="moving", width=width)


def _frames(task, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Store rows, video index, frame of `split` in store order (the task's own)."""
    vid, frame, rows = task._split_frames(split)
    return rows, vid, frame


def logistic_reference(task, root: Path, stride: int) -> dict:
    """Per-frame logistic regression on the task's backbones (class weight chosen on devel).

    Fit on every `stride`-th training loss frame (consecutive frames are near duplicates;
    the CPU budget), scored on every devel frame, the rows and columns the task reads.
    """
    data = task.data
    tr_rows, _, _ = _frames(task, "train")
    tr_rows = tr_rows[task._target[tr_rows] >= 0][::stride]  # frames the loss sees
    cols = np.concatenate(
        [np.arange(data.store.shape[1])[data.backbone_columns(b)] for b in task.backbones]
    )

    def read(rows):
        lo, hi = int(rows.min()), int(rows.max()) + 1
        return data.store.read(lo, hi)[rows - lo][:, cols]

    scaler = StandardScaler().fit(read(tr_rows))
    xtr, ytr = scaler.transform(read(tr_rows)), task._target[tr_rows]
    out = {}
    preds = {}
    for split in ("devel", "test"):
        rows, vid, frame = _frames(task, split)
        names = np.asarray(data.videos).astype(str)
        keys = {"video": names[vid], "frame": frame}
        labels = np.asarray(data.labels)[rows].astype(np.int64) if split == "devel" else None
        preds[split] = (scaler.transform(read(rows)), keys, labels)
    best = None
    t0 = time.perf_counter()
    for cw in (None, "balanced"):
        for c in (0.001, 0.01, 0.1):
            lr = LogisticRegression(C=c, class_weight=cw, max_iter=200, tol=1e-3).fit(xtr, ytr)
            probs = np.zeros((len(preds["devel"][0]), len(CLASSES)), np.float32)
            probs[:, lr.classes_] = lr.predict_proba(preds["devel"][0])
            s = _f1(preds["devel"][2], probs)
            if best is None or s > best[0]:
                best = (s, c, cw, lr, probs)
    s, c, cw, lr, probs = best
    devel = Predictions("expr", "devel", preds["devel"][1], probs, CLASSES, preds["devel"][2])
    tprobs = np.zeros((len(preds["test"][0]), len(CLASSES)), np.float32)
    tprobs[:, lr.classes_] = lr.predict_proba(preds["test"][0])
    test = Predictions("expr", "test", preds["test"][1], tprobs, CLASSES, None)
    width, ss = best_smoothing(devel)
    tl = _test_labels(test, root)
    out = {
        "C": c,
        "class_weight": cw or "none",
        "devel": s,
        "test": _f1(tl, tprobs),
        "smooth_width": width,
        "devel_smoothed": ss,
        "test_smoothed": _f1(tl, _smooth(test, width).values),
        "per_class_smoothed": macro_f1(
            devel.labels, _smooth(devel, width).values.argmax(1), columns=CLASSES
        ).per_column,
        "seconds": time.perf_counter() - t0,
        "train_frames": int(len(tr_rows)),
    }
    return out


def _summ(vals: list[float]) -> tuple[float, float]:
    return float(np.mean(vals)), float((max(vals) - min(vals)) / 2)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", nargs="+", required=True, help="abaw synth --track expr folders")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10, help="max epochs per model (CPU budget)")
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--sweeps", default=",".join(SWEEPS))
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of every sweep, as `abaw train --set` (repeatable)",
    )
    ap.add_argument("--lr-stride", type=int, default=4, help="logistic: every n-th train frame")
    ap.add_argument("--no-reference", action="store_true", help="skip the logistic regressions")
    ap.add_argument("--json", help="write every result here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    seeds = [int(s) for s in args.seeds.split(",")]
    report = {"settings": vars(args), "sets": {}}
    for root in map(Path, args.data):
        oracle = json.loads((root / "oracle.json").read_text())
        ceiling = oracle["splits"]["devel"]["macro_f1"]
        refs, res = {}, {}
        for name in args.sweeps.split(","):
            sweep = load_sweep(ROOT / "sweeps" / f"{name}.toml")
            track = get_track(sweep.track)
            over = {"train.epochs": args.epochs, "train.patience": args.patience}
            flat = sweep.resolve(overrides={**over, **parse_overrides(args.overrides)})
            configs = build_configs(flat, run_sections(track, sweep.model), where=name)
            task = track.prepare(root, sweep.model, configs, device)
            key = "+".join(task.backbones)
            if not args.no_reference and key not in refs:
                refs[key] = logistic_reference(task, root, args.lr_stride)
                print(f"{root.name} logistic {key} {json.dumps(refs[key])}", flush=True)
            for seed in seeds:
                t0 = time.perf_counter()
                task = track.prepare(root, sweep.model, configs, device)
                r = fit(task, configs["train"], device=device, seed=seed)
                devel = task.predict(r.model, "devel")
                test = task.predict(r.model, "test")
                secs = time.perf_counter() - t0
                width, ss = best_smoothing(devel)
                tl = _test_labels(test, root)
                row = {
                    "seed": seed,
                    "backbones": key,
                    "devel": r.best_score,
                    "test": _f1(tl, test.values),
                    "smooth_width": width,
                    "devel_smoothed": ss,
                    "test_smoothed": _f1(tl, _smooth(test, width).values),
                    "per_class": macro_f1(
                        devel.labels, devel.values.argmax(1), columns=CLASSES
                    ).per_column,
                    "best_epoch": r.best_epoch,
                    "epochs": len(r.history),
                    "seconds": secs,
                    "load": os.getloadavg()[0],
                }
                res.setdefault(name, []).append(row)
                print(f"{root.name} {name} {json.dumps(row)}", flush=True)
        report["sets"][str(root)] = {
            "oracle": ceiling,
            "oracle_test": oracle["splits"]["test"]["macro_f1"],
            "difficulty": oracle.get("difficulty", "normal"),
            "train_videos": oracle["splits"]["train"]["videos"],
            "logistic": refs,
            "results": res,
        }
        _table(root, ceiling, refs, res)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def _table(root: Path, ceiling: float, refs: dict, res: dict) -> None:
    print(f"\n{root} (oracle devel macro F1 {ceiling:.4f})\n")
    print(
        "| model | devel F1 | + smoothing | % of oracle (smoothed) | reference: logistic + smoothing | >= ref | test F1 (smoothed) | seconds (load) |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for key, r in refs.items():
        print(
            f"| logistic {key} (C {r['C']}, {r['class_weight']}) | {r['devel']:.4f} | {r['devel_smoothed']:.4f} (w {r['smooth_width']}) | "
            f"{100 * r['devel_smoothed'] / ceiling:.0f} % | - | - | {r['test_smoothed']:.4f} | {r['seconds']:.0f} |"
        )
    for name, rs in res.items():
        key = rs[0]["backbones"]
        m, sp = _summ([r["devel"] for r in rs])
        ms, sps = _summ([r["devel_smoothed"] for r in rs])
        mt, _ = _summ([r["test_smoothed"] for r in rs])
        ref = refs.get(key, {}).get("devel_smoothed")
        ok = "-" if ref is None else ("yes" if ms >= ref else "**no**")
        reft = "-" if ref is None else f"{ref:.4f}"
        secs = np.mean([r["seconds"] for r in rs])
        load = np.mean([r["load"] for r in rs])
        print(
            f"| {name} ({key}) | {m:.4f} ± {sp:.4f} | {ms:.4f} ± {sps:.4f} | {100 * ms / ceiling:.0f} % | {reft} | {ok} | {mt:.4f} | {secs:.0f} ({load:.1f}) |"
        )
    print("\nper-class devel F1 (unsmoothed, mean over seeds):\n")
    print("| model | " + " | ".join(CLASSES) + " |")
    print("|---|" + "---:|" * len(CLASSES))
    for name, rs in res.items():
        vals = [np.mean([r["per_class"][c] for r in rs]) for c in CLASSES]
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")


if __name__ == "__main__":
    main()
