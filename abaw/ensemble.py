"""Ensembles of tuned trials (and teammates' prediction files), with an honest estimate of the gain.

Members come from the kept trials of one or more Optuna studies (abaw/trials.py) or from
prediction files in the one format (abaw/predictions.py). They are aligned by key (ERI:
sample ID; Expr: video and frame) and combined with per-member, per-column weights:

- `mean`: every member weight 1/M.
- `greedy`: Caruana et al. (2004) ensemble selection with replacement on devel, initialised
  with the best few members; the best prefix of the trajectory is kept; weights = counts.
- `stack` (ERI): per emotion, non-negative linear weights (plus an intercept) fitted on devel
  with scikit-learn; used only when its cross-validated score beats greedy's, else greedy.

Expr then gets post-processing chosen on devel: temporal smoothing (kind, width) and per-class
log-probability offsets tuned for macro F1. Every choice above is a "recipe" fitted by one
function, so the honest estimate refits the whole recipe on one half of devel and scores it on
the other half, both ways (ERI halves by sample, Expr by video).

Memory: devel arrays of all members are held (devel is small); the test side is streamed,
one member's test predictions in memory at a time, added to a running weighted sum.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abaw import __version__
from abaw.errors import AbawError, ConfigError, DataError
from abaw.metrics import EXPR_NUM_CLASSES, macro_f1, mean_pearson
from abaw.predictions import Predictions

METHODS = ("mean", "greedy", "stack")
TRACK_METRIC = {"eri": "mean_pearson", "expr": "macro_f1"}
SMOOTH_GRID: tuple[tuple[str, int], ...] = (("none", 1),) + tuple(
    (k, w) for k in ("moving", "gaussian") for w in (5, 9, 15, 25, 41)
)
OFFSET_GRID = np.linspace(-3.0, 3.0, 25)
EPS = 1e-7


# ---------------------------------------------------------------- storage (Contract A)


def _track_keys(track: str) -> tuple[str, ...]:
    """The key columns of `track`'s predictions, from the track registry."""
    from abaw.track import get_track

    return tuple(get_track(track).keys)


def _open_storage(storage: str | None, runs: str | os.PathLike[str]):
    """The storage of `--storage` (None = `<runs>/optuna-journal.log`), never created here."""
    from abaw.tune import open_storage

    return open_storage(storage, runs=runs, create=False)


def _find_study(name: str, storages: Sequence[str | None], runs: Path):
    import optuna

    seen: list[str] = []
    for url in storages:
        st = _open_storage(url, runs)
        names = optuna.study.get_all_study_names(storage=st)
        if name in names:
            return optuna.load_study(study_name=name, storage=st)
        seen += names
    where = ", ".join(str(u) if u else f"{runs}/optuna-journal.log" for u in storages)
    raise AbawError(
        f"no study named {name!r} in {where}; studies there: {', '.join(sorted(seen)) or 'none'}"
    )


# ---------------------------------------------------------------- row alignment


def _codes(cols: Sequence[np.ndarray], ref_cols: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """One int64 code per row of `cols` and of `ref_cols`, equal iff the key tuples are equal.

    Values absent from the reference get code -1 (never equal to a reference code).
    """
    code = np.zeros(len(cols[0]), np.int64)
    ref = np.zeros(len(ref_cols[0]), np.int64)
    ok = np.ones(len(cols[0]), bool)
    for c, r in zip(cols, ref_cols, strict=True):
        if c.dtype.kind in "US" or r.dtype.kind in "US":
            c, r = c.astype(str), r.astype(str)
        u = np.unique(r)
        pos = np.searchsorted(u, c).clip(0, max(len(u) - 1, 0))
        ok &= (u[pos] == c) if len(u) else np.zeros(len(c), bool)
        code = code * (len(u) + 1) + pos
        ref = ref * (len(u) + 1) + np.searchsorted(u, r)
    return np.where(ok, code, -1), ref


def _describe(keys: dict[str, np.ndarray], i: int) -> str:
    return "/".join(str(keys[k][i]) for k in keys)


def align_to(pred: Predictions, ref_keys: dict[str, np.ndarray], what: str) -> Predictions:
    """`pred` re-ordered to the rows of `ref_keys`; one clear sentence if the row sets differ."""
    if tuple(pred.keys) != tuple(ref_keys):
        raise AbawError(
            f"{what}: key columns {list(pred.keys)} differ from the first member's {list(ref_keys)}"
        )
    if all(np.array_equal(pred.keys[k], ref_keys[k]) for k in ref_keys):
        return pred
    code, ref = _codes([pred.keys[k] for k in ref_keys], [ref_keys[k] for k in ref_keys])
    order_ref = np.argsort(ref, kind="stable")
    if len(ref) > 1 and (np.diff(ref[order_ref]) == 0).any():
        i = int(order_ref[np.flatnonzero(np.diff(ref[order_ref]) == 0)[0]])
        raise AbawError(f"the first member lists row {_describe(ref_keys, i)} twice")
    pos = np.searchsorted(ref[order_ref], code).clip(0, max(len(ref) - 1, 0))
    hit = (code >= 0) & (ref[order_ref][pos] == code) if len(ref) else np.zeros(len(code), bool)
    if not hit.all():
        i = int(np.flatnonzero(~hit)[0])
        raise AbawError(
            f"{what}: row {_describe(pred.keys, i)} is not among the first member's rows "
            f"({int((~hit).sum())} such rows); members must predict the same rows"
        )
    where = order_ref[pos]
    if len(np.unique(where)) != len(where):
        dup = np.setdiff1d(np.arange(len(where)), np.unique(where, return_index=True)[1])[0]
        raise AbawError(f"{what}: row {_describe(pred.keys, int(dup))} appears twice")
    if len(pred) != len(ref):
        missing = np.setdiff1d(np.arange(len(ref)), where)
        raise AbawError(
            f"{what}: {len(ref) - len(pred)} of the first member's rows are missing "
            f"(first: {_describe(ref_keys, int(missing[0]))}); members must predict the same rows"
        )
    take = np.empty(len(where), np.int64)
    take[where] = np.arange(len(where))
    return Predictions(
        pred.track,
        pred.split,
        {k: v[take] for k, v in pred.keys.items()},
        pred.values[take],
        pred.columns,
        None if pred.labels is None else pred.labels[take],
        pred.meta,
    )


def keys_sha256(keys: dict[str, np.ndarray], chunk: int = 1 << 16) -> str:
    """sha256 over each key column: its name, NUL, its values as text joined by newlines, NUL.

    Hashed in chunks of rows, so no million-string list is ever built.
    """
    h = hashlib.sha256()
    for k, v in keys.items():
        h.update(k.encode() + b"\0")
        for a in range(0, len(v), chunk):
            part = "\n".join(map(str, v[a : a + chunk].tolist()))
            h.update((part + ("\n" if a + chunk < len(v) else "")).encode())
        h.update(b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------- scoring and post-processing


def score_values(track: str, labels: np.ndarray, values: np.ndarray, columns=None):
    """The challenge metric (a `Score`): mean Pearson (ERI) or macro F1 of the argmax (Expr)."""
    if track == "eri":
        return mean_pearson(labels, values, columns)
    return macro_f1(labels, values.argmax(axis=1), columns=columns)


def _f1_fast(labels: np.ndarray, pred: np.ndarray) -> float:
    cm = np.bincount(labels * EXPR_NUM_CLASSES + pred, minlength=EXPR_NUM_CLASSES**2).reshape(
        EXPR_NUM_CLASSES, EXPR_NUM_CLASSES
    )
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)
    return float(np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0).mean())


def _segments(video: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(row order or None, segment cuts): each segment one video's frames in frame order.

    When every video's rows are already contiguous and in frame order (the test frame list,
    devel in store order) no sort and no copy of the names is made (order None).
    """
    n = len(video)
    change = np.flatnonzero(video[1:] != video[:-1]) + 1
    cuts = np.concatenate([[0], change, [n]])
    starts = video[cuts[:-1]]
    inside = np.ones(n, bool)
    inside[cuts[:-1]] = False
    if len(np.unique(starts)) == len(starts) and (np.diff(frame)[inside[1:]] > 0).all():
        return None, cuts
    order = np.lexsort((frame.astype(np.int64), video))
    v = video[order]
    return order, np.concatenate([[0], np.flatnonzero(v[1:] != v[:-1]) + 1, [n]])


def smooth_by_video(
    values: np.ndarray, video: np.ndarray, frame: np.ndarray, kind: str, width: int
) -> np.ndarray:
    """Temporal smoothing within each video, one video at a time (memory: one video's frames)."""
    from abaw.expr.smoothing import smooth_probs

    if kind == "none" or width <= 1 or len(values) == 0:
        return values
    order, cuts = _segments(video, frame)
    out = np.empty_like(values)
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        rows = slice(a, b) if order is None else order[a:b]
        out[rows] = smooth_probs(values[rows], np.array([0, b - a]), kind=kind, width=width)
    return out


def apply_offsets(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """softmax(log p + offsets): class probabilities whose argmax is the offset decision."""
    z = np.log(np.maximum(values, EPS)) + np.asarray(offsets, np.float32)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32, copy=False)


def fit_offsets(values: np.ndarray, labels: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Per-class log-probability offsets maximising macro F1 (coordinate ascent on a grid)."""
    keep = labels >= 0
    lp = np.log(np.maximum(values[keep], EPS)).astype(np.float64)
    y = labels[keep].astype(np.int64)
    b = np.zeros(values.shape[1])
    if len(y) == 0:
        return b
    best = _f1_fast(y, (lp + b).argmax(1))
    for _ in range(rounds):
        improved = False
        for c in range(values.shape[1]):
            others = lp + b
            others[:, c] = -np.inf
            arg_o, max_o = others.argmax(1), others.max(1)
            for d in OFFSET_GRID:
                pred = np.where(lp[:, c] + d > max_o, c, arg_o)
                s = _f1_fast(y, pred)
                if s > best + 1e-12:
                    best, b[c], improved = s, d, True
        if not improved:
            break
    return b


# ---------------------------------------------------------------- recipes


@dataclass
class Recipe:
    """How members are combined: values = intercept + sum_m weights[m] * member_m, then post."""

    method: str  # the method actually used ("mean" | "greedy" | "stack")
    weights: np.ndarray  # (M, C) per member and column
    intercept: np.ndarray  # (C,)
    counts: np.ndarray | None = None  # greedy selection counts
    smoothing: tuple[str, int] = ("none", 1)
    offsets: np.ndarray | None = None  # Expr class offsets
    notes: list[str] = field(default_factory=list)


def combine(recipe: Recipe, xs: Sequence[np.ndarray]) -> np.ndarray:
    """Weighted sum of member arrays (no post-processing)."""
    out = np.tile(recipe.intercept.astype(np.float64), (len(xs[0]), 1))
    for w, x in zip(recipe.weights, xs, strict=True):
        if w.any():
            out += w * x
    return out.astype(np.float32)


def postprocess(
    track: str, recipe: Recipe, values: np.ndarray, video=None, frame=None
) -> np.ndarray:
    """ERI: clip to [0, 1]. Expr: smoothing then class offsets."""
    if track == "eri":
        return np.clip(values, 0.0, 1.0)
    kind, width = recipe.smoothing
    values = smooth_by_video(values, video, frame, kind, width)
    if recipe.offsets is not None and np.any(recipe.offsets):
        values = apply_offsets(values, recipe.offsets)
    return values


def greedy_counts(
    xs: Sequence[np.ndarray], score: Callable[[np.ndarray], float], n_init: int, steps: int
) -> np.ndarray:
    """Caruana ensemble selection with replacement; returns counts of the best prefix."""
    m = len(xs)
    single = np.array([score(x) for x in xs])
    order = np.argsort(-single, kind="stable")
    picks: list[int] = []
    total = np.zeros_like(xs[0], dtype=np.float64)
    traj: list[float] = []
    for i in order[: max(1, min(n_init, m))]:
        picks.append(int(i))
        total += xs[i]
        traj.append(score(total / len(picks)))
    for _ in range(steps):
        k = len(picks) + 1
        cand = [score((total + x) / k) for x in xs]
        j = int(np.argmax(cand))
        picks.append(j)
        total += xs[j]
        traj.append(cand[j])
    best = int(np.argmax(traj))  # first maximum: the shortest best prefix
    return np.bincount(picks[: best + 1], minlength=m).astype(np.float64)


def fit_recipe(
    track: str,
    method: str,
    xs: Sequence[np.ndarray],
    labels: np.ndarray,
    *,
    video=None,
    frame=None,
    post: bool = True,
    n_init: int = 3,
    steps: int | None = None,
    seed: int = 0,
) -> Recipe:
    """Fit member weights (and Expr post-processing) on the rows given."""
    m, c = len(xs), xs[0].shape[1]
    steps = 2 * m if steps is None else steps

    def score(v: np.ndarray) -> float:
        if track == "eri":
            return mean_pearson(labels, v).value
        keep = labels >= 0
        return _f1_fast(labels[keep].astype(np.int64), v[keep].argmax(1))

    notes: list[str] = []
    if method == "mean":
        rec = Recipe("mean", np.full((m, c), 1.0 / m), np.zeros(c))
    elif method in ("greedy", "stack"):
        counts = greedy_counts(xs, score, n_init, steps)
        rec = Recipe("greedy", np.repeat((counts / counts.sum())[:, None], c, 1), np.zeros(c))
        rec.counts = counts
        if method == "stack":
            if track != "eri":
                raise ConfigError("--method stack is for ERI; use greedy or mean for Expr")
            stacked = _stack_or_none(xs, labels, score, n_init, steps, seed, notes)
            if stacked is not None:
                rec = stacked
    else:
        raise ConfigError(f"unknown method {method!r}; choose from {METHODS}")
    rec.notes += notes
    if track == "expr" and post:
        base = combine(rec, xs)
        best = (score(base), ("none", 1))
        for kind, width in SMOOTH_GRID[1:]:
            s = score(smooth_by_video(base, video, frame, kind, width))
            if s > best[0] + 1e-12:
                best = (s, (kind, width))
        rec.smoothing = best[1]
        smoothed = smooth_by_video(base, video, frame, *best[1])
        rec.offsets = _checked_offsets(smoothed, labels, video, seed, rec.notes)
    return rec


def _checked_offsets(
    values: np.ndarray, labels: np.ndarray, video, seed: int, notes: list[str]
) -> np.ndarray:
    """Class offsets fitted on all rows, kept only if they help on videos they were not fitted on.

    Offsets tuned for macro F1 on a dozen videos can fit those videos' class mix rather than
    the task (measured: -0.03 honest F1 on the small demo set). Two folds by video: fit on
    one, score on the other, both ways; the offsets stay only when the mean held-out gain is
    positive, as `stack` stays only when it beats greedy on held-out folds.
    """
    offsets = fit_offsets(values, labels)
    if not np.any(offsets) or video is None:
        return offsets
    names = np.unique(video)
    if len(names) < 4:
        notes.append("class offsets off: fewer than 4 devel videos to check them on")
        return np.zeros_like(offsets)
    fold_of = dict(
        zip(np.random.default_rng(seed).permutation(names), range(len(names)), strict=True)
    )
    fold = np.fromiter((fold_of[v] % 2 for v in video), dtype=np.int64, count=len(video))
    keep = labels >= 0
    gains = []
    for f in (0, 1):
        fit_rows, held = fold != f, (fold == f) & keep
        if not held.any():
            continue
        b = fit_offsets(values[fit_rows], labels[fit_rows])
        y = labels[held].astype(np.int64)
        plain = _f1_fast(y, values[held].argmax(1))
        gains.append(_f1_fast(y, apply_offsets(values[held], b).argmax(1)) - plain)
    if not gains or float(np.mean(gains)) <= 0:
        notes.append(
            "class offsets off: they did not raise macro F1 on held-out videos "
            f"(mean gain {np.mean(gains) if gains else 0:+.4f})"
        )
        return np.zeros_like(offsets)
    notes.append(f"class offsets on: held-out macro F1 gain {np.mean(gains):+.4f}")
    return offsets


def _stack_fit(xs, labels, rows) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LinearRegression

    m, c = len(xs), xs[0].shape[1]
    w, b = np.zeros((m, c)), np.zeros(c)
    for j in range(c):
        a = np.stack([x[rows, j] for x in xs], axis=1)
        reg = LinearRegression(positive=True).fit(a, labels[rows, j])
        w[:, j], b[j] = reg.coef_, reg.intercept_
    return w, b


def _stack_or_none(xs, labels, score, n_init, steps, seed, notes) -> Recipe | None:
    """Stacking if it beats greedy on out-of-fold predictions (5-fold CV), else None."""
    from sklearn.model_selection import KFold

    n = len(labels)
    if n < 20:
        notes.append("stack: too few devel rows for cross-validation; used greedy")
        return None
    oof_s = np.zeros_like(xs[0], dtype=np.float64)
    oof_g = np.zeros_like(xs[0], dtype=np.float64)
    for tr, te in KFold(5, shuffle=True, random_state=seed).split(np.arange(n)):
        w, b = _stack_fit(xs, labels, tr)
        oof_s[te] = b + sum(w[i] * xs[i][te] for i in range(len(xs)))
        counts = greedy_counts(
            [x[tr] for x in xs], lambda v, tr=tr: mean_pearson(labels[tr], v).value, n_init, steps
        )
        oof_g[te] = sum(counts[i] / counts.sum() * xs[i][te] for i in range(len(xs)))
    s_stack = mean_pearson(labels, np.clip(oof_s, 0, 1)).value
    s_greedy = mean_pearson(labels, oof_g).value
    if s_stack <= s_greedy:
        notes.append(
            f"stack: cross-validated {s_stack:.4f} <= greedy {s_greedy:.4f}; fell back to greedy"
        )
        return None
    w, b = _stack_fit(xs, labels, np.arange(n))
    notes.append(f"stack: cross-validated {s_stack:.4f} > greedy {s_greedy:.4f}")
    return Recipe("stack", w, b)


def devel_halves(track: str, keys: dict[str, np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Two disjoint row sets of devel: random samples (ERI) or whole videos, about half the frames each (Expr)."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(keys.values())))
    if track == "eri":
        perm = rng.permutation(n)
        return [np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])]
    vids, inv, counts = np.unique(keys["video"], return_inverse=True, return_counts=True)
    if len(vids) < 2:
        raise AbawError("the honest estimate needs at least 2 devel videos")
    side = np.zeros(len(vids), np.int64)
    load = [0, 0]
    for v in rng.permutation(len(vids)):
        s = int(load[1] < load[0])
        side[v] = s
        load[s] += int(counts[v])
    return [np.flatnonzero(side[inv] == s) for s in (0, 1)]


# ---------------------------------------------------------------- members


@dataclass
class Member:
    """One ensemble member: where it came from, its devel predictions, and how to read its test ones."""

    name: str
    source: str  # "study" | "file"
    devel: Predictions
    load_test: Callable[[], Predictions]
    study: str | None = None
    trial: int | None = None
    path: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    devel_score: float = float("nan")
    value: float | None = None  # the study's recorded objective value (study members)


def prediction_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(devel, test) files of a teammate's member.

    PATH is either a folder holding predictions-devel.npz and predictions-test.npz (an
    `abaw train` run folder has exactly these), or a devel file whose name contains "devel":
    its test file is the same name with the last "devel" replaced by "test", in the same folder.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(
            p, "member predictions not found", expected="a folder or a *devel*.npz file"
        )
    if p.is_dir():
        dev, test = p / "predictions-devel.npz", p / "predictions-test.npz"
    else:
        if "devel" not in p.name:
            raise AbawError(
                f"{p}: a member file must be a devel file with 'devel' in its name (its test file "
                "is the same name with 'test'), or a folder holding predictions-devel.npz and "
                "predictions-test.npz"
            )
        head, _, tail = p.name.rpartition("devel")
        dev, test = p, p.with_name(head + "test" + tail)
    for f in (dev, test):
        if not f.is_file():
            raise DataError(f, "member predictions file not found", expected=f"{f.name}")
    return dev, test


def _check_member(pred: Predictions, track: str, split: str, what: str) -> None:
    if pred.track != track:
        raise AbawError(f"{what}: predictions are for track {pred.track!r}, not {track!r}")
    if pred.split != split:
        raise AbawError(f"{what}: the {split} file holds {pred.split!r} predictions")
    expected = _track_keys(track)
    if tuple(pred.keys) != expected:
        raise AbawError(f"{what}: key columns {list(pred.keys)}, expected {list(expected)}")
    if not np.isfinite(pred.values).all():
        raise AbawError(f"{what}: {split} predictions contain NaN or inf")


def attach(first: Member, mem: Member) -> None:
    """Align `mem`'s devel rows to `first`'s and share one copy of the keys and labels.

    Refuses (one sentence) when the columns, the rows or the labels disagree.
    """
    ref = first.devel
    if mem.devel.columns != ref.columns:
        raise AbawError(
            f"{mem.name}: columns {list(mem.devel.columns)} differ from "
            f"{first.name}'s {list(ref.columns)}"
        )
    if mem.devel.keys is ref.keys:
        return
    dev = align_to(mem.devel, ref.keys, f"{mem.name} (devel)")
    if ref.labels is None:
        ref.labels = dev.labels
    elif dev.labels is not None and not np.array_equal(
        np.nan_to_num(dev.labels), np.nan_to_num(ref.labels)
    ):
        raise AbawError(f"{mem.name}: devel labels differ from {first.name}'s (another data set?)")
    dev.keys, dev.labels = ref.keys, ref.labels
    mem.devel = dev


def collect_members(
    track: str,
    studies: Sequence[str] = (),
    *,
    top_k: int = 5,
    storages: Sequence[str | None] = (None,),
    runs: str | os.PathLike[str] = "runs",
    artifacts: str | os.PathLike[str] | None = None,
    files: Sequence[str | os.PathLike[str]] = (),
) -> list[Member]:
    """Members from studies' kept trials (best first) and from prediction files."""
    from abaw.trials import (
        STUDY_TRACK,
        download_trial_file,
        kept_trials,
        predictions_attr,
        trial_predictions,
    )

    runs = Path(runs)
    members: list[Member] = []
    for name in studies:
        study = _find_study(name, list(storages) or [None], runs)
        st_track = study.user_attrs.get(STUDY_TRACK)
        if st_track and st_track != track:
            raise AbawError(f"study {name!r} is for track {st_track!r}, not {track!r}")
        trials = kept_trials(study, top_k)
        if not trials:
            raise AbawError(f"study {name!r} has no completed trial with kept predictions")
        for t in trials:
            what = f"study {name!r}, trial {t.number}"
            if not t.user_attrs.get(predictions_attr("test")):
                raise AbawError(f"{what}: no test predictions are recorded (kept without them?)")
            dev = trial_predictions(study, t, "devel", artifacts=artifacts)
            _check_member(dev, track, "devel", what)

            def load(study=study, t=t, what=what) -> Predictions:
                tmp = tempfile.mkdtemp(prefix="abaw-member-")
                try:
                    path = download_trial_file(
                        study,
                        t,
                        predictions_attr("test"),
                        Path(tmp) / "predictions-test.npz",
                        artifacts=artifacts,
                    )
                    p = load_lean(path)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)  # a mapped file stays readable
                _check_member(p, track, "test", what)
                p.meta.setdefault("study", study.study_name)
                p.meta.setdefault("trial", t.number)
                return p

            _append(
                members,
                Member(
                    f"{name}#{t.number}",
                    "study",
                    dev,
                    load,
                    study=name,
                    trial=t.number,
                    params=dict(t.params),
                    value=float(t.value),
                ),
            )
    for f in files:
        dev_path, test_path = prediction_files(f)
        dev = Predictions.load(dev_path)
        _check_member(dev, track, "devel", str(dev_path))

        def load(test_path=test_path) -> Predictions:
            p = load_lean(test_path)
            _check_member(p, track, "test", str(test_path))
            return p

        _append(
            members,
            Member(
                str(f),
                "file",
                dev,
                load,
                path=str(Path(f).resolve()),
                params=dict(dev.meta.get("params", {})),
            ),
        )
    if not members:
        raise AbawError("no members: name --studies and/or --predictions")
    return members


def _append(members: list[Member], mem: Member) -> None:
    """Add a member, aligned to the first at once (so only one copy of the devel keys is held)."""
    if members:
        attach(members[0], mem)
    members.append(mem)


# ---------------------------------------------------------------- the ensemble


@dataclass
class EnsembleResult:
    """What `build_ensemble` made: the manifest, ensembled predictions, and where they are."""

    manifest: dict[str, Any]
    devel: Predictions
    test: Predictions | None
    members: list[Member]
    recipe: Recipe
    out_dir: Path | None = None


def _ensemble_dir(runs: Path, name: str) -> Path:
    from abaw.io import safe_name

    try:
        safe_name(name, what="ensemble name")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return runs / "ensembles" / name


def build_ensemble(
    track: str,
    *,
    name: str,
    studies: Sequence[str] = (),
    predictions: Sequence[str | os.PathLike[str]] = (),
    top_k: int = 5,
    method: str = "greedy",
    storages: Sequence[str | None] = (None,),
    runs: str | os.PathLike[str] = "runs",
    artifacts: str | os.PathLike[str] | None = None,
    force: bool = False,
    post: bool = True,
    seed: int = 0,
    members: list[Member] | None = None,
    write: bool = True,
) -> EnsembleResult:
    """Collect members, fit the recipe on devel, estimate the honest gain, stream the test side.

    Writes `<runs>/ensembles/<name>/` (predictions-devel.npz, predictions-test.npz,
    manifest.json) atomically unless `write` is False; refuses to replace it without `force`.
    """
    _track_keys(track)  # an unknown track is a ConfigError naming the registered ones
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "stack" and track != "eri":
        raise ConfigError("--method stack is for ERI; use greedy or mean for Expr")
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    runs = Path(runs)
    out_dir = _ensemble_dir(runs, name)
    if write and out_dir.exists() and not force:
        raise AbawError(f"{out_dir} exists; choose another --name or pass --force to replace it")
    if members is None:
        members = collect_members(
            track,
            studies,
            top_k=top_k,
            storages=storages,
            runs=runs,
            artifacts=artifacts,
            files=predictions,
        )
    for mem in members[1:]:
        attach(members[0], mem)
    ref = members[0].devel
    labels = ref.labels
    if labels is None:
        raise AbawError("no member's devel predictions carry labels; the ensemble cannot be scored")
    if track == "expr":
        labels = labels.astype(np.int64)
    xs = [m.devel.values for m in members]
    video = ref.keys.get("video")
    frame = ref.keys.get("frame")
    cols = ref.columns
    for mem in members:
        mem.devel_score = score_values(track, labels, mem.devel.values, cols).value

    def rows_kw(rows):
        return {"video": video[rows], "frame": frame[rows]} if track == "expr" else {}

    recipe = fit_recipe(track, method, xs, labels, video=video, frame=frame, post=post, seed=seed)
    dev_values = postprocess(track, recipe, combine(recipe, xs), video, frame)
    ens_score = score_values(track, labels, dev_values, cols)

    # Honest estimate: the whole recipe (selection, weights, post-processing) refitted on one
    # half of devel and scored on the other, both ways; the best single is chosen the same way.
    halves = devel_halves(track, ref.keys, seed)
    honest_ens, honest_single = [], []
    for fit_rows, eval_rows in (halves, halves[::-1]):
        sub = [x[fit_rows] for x in xs]
        rec = fit_recipe(
            track,
            method,
            sub,
            labels[fit_rows],
            post=post,
            seed=seed,
            **rows_kw(fit_rows),
        )
        ev = [x[eval_rows] for x in xs]
        kw = rows_kw(eval_rows)
        v = postprocess(track, rec, combine(rec, ev), kw.get("video"), kw.get("frame"))
        honest_ens.append(score_values(track, labels[eval_rows], v).value)
        # The best single member gets the same post-processing, fitted on the same half, so
        # the gain shown is the ensemble's, not the smoothing's.
        best_i = int(np.argmax([score_values(track, labels[fit_rows], s).value for s in sub]))
        one = fit_recipe(
            track,
            "mean",
            [sub[best_i]],
            labels[fit_rows],
            post=post,
            seed=seed,
            **rows_kw(fit_rows),
        )
        v1 = postprocess(track, one, ev[best_i], kw.get("video"), kw.get("frame"))
        honest_single.append(score_values(track, labels[eval_rows], v1).value)

    single = np.array([m.devel_score for m in members])
    best = int(np.argmax(single))
    share = recipe.weights.sum(axis=1)
    share = share / share.sum() if share.sum() > 0 else share
    manifest: dict[str, Any] = {
        "name": name,
        "track": track,
        "metric": TRACK_METRIC[track],
        "method": method,
        "method_used": recipe.method,
        "abaw_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "members": [],
        "postprocess": {},
        "scores": {
            "ensemble_devel": ens_score.value,
            "best_single_devel": float(single[best]),
            "best_single_member": members[best].name,
            "honest_ensemble": float(np.mean(honest_ens)),
            "honest_best_single": float(np.mean(honest_single)),
            "honest_halves": {
                "split_by": "sample" if track == "eri" else "video",
                "rows": [int(len(h)) for h in halves],
                "ensemble": [float(s) for s in honest_ens],
                "best_single": [float(s) for s in honest_single],
                "seed": seed,
            },
        },
        "per_column": ens_score.per_column,
        "devel_rows": len(ref),
        "notes": list(recipe.notes),
    }
    if recipe.method == "stack":
        manifest["intercept"] = dict(zip(cols, map(float, recipe.intercept), strict=True))
    for i, mem in enumerate(members):
        entry = {
            "source": mem.source,
            "study": mem.study,
            "trial": mem.trial,
            "path": mem.path,
            "params": mem.params,
            "devel_score": mem.devel_score,
            "weight": float(share[i]),
        }
        if mem.value is not None:
            entry["trial_value"] = mem.value
        if recipe.counts is not None and recipe.method == "greedy":
            entry["count"] = int(recipe.counts[i])
        if recipe.method == "stack":
            entry["column_weights"] = dict(zip(cols, map(float, recipe.weights[i]), strict=True))
        manifest["members"].append(entry)
    if track == "expr":
        manifest["postprocess"] = {
            "smoothing": {"kind": recipe.smoothing[0], "width": int(recipe.smoothing[1])},
            "class_offsets": dict(
                zip(
                    cols,
                    map(float, recipe.offsets if recipe.offsets is not None else np.zeros(8)),
                    strict=True,
                )
            ),
        }
    meta = {"ensemble": name, "method": recipe.method}
    devel = Predictions(track, "devel", dict(ref.keys), dev_values, cols, labels, meta)
    result = EnsembleResult(manifest, devel, None, members, recipe)
    if write:
        result.out_dir = _write(result, out_dir, force)
    return result


def load_lean(path: str | os.PathLike[str], *, min_bytes: int = 1 << 20) -> Predictions:
    """`Predictions.load`, but large arrays of an uncompressed `.npz` are memory-mapped (read-only).

    np.savez stores arrays uncompressed, so each large array is a plain .npy inside the zip
    and can be mapped where it lies: nothing is copied into anonymous memory, and an array
    dropped after use (a member's keys once compared) leaves memory at once. Anything
    unusual (compressed, damaged, small) falls back to `Predictions.load`.
    """
    import struct
    import zipfile

    path = Path(path)
    try:
        mapped: dict[str, np.ndarray] = {}
        with zipfile.ZipFile(path) as z, open(path, "rb") as fh:
            for info in z.infolist():
                if info.compress_type != zipfile.ZIP_STORED or info.file_size < min_bytes:
                    continue
                fh.seek(info.header_offset)
                local = fh.read(30)
                n, m = struct.unpack("<HH", local[26:30])
                fh.seek(info.header_offset + 30 + n + m)
                version = np.lib.format.read_magic(fh)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read(fh)
                if dtype.hasobject or not shape:
                    continue
                mapped[info.filename.removesuffix(".npy")] = np.memmap(
                    path, dtype, "r", offset=fh.tell(), shape=shape, order="F" if fortran else "C"
                )
        if not mapped:
            return Predictions.load(path)
        with np.load(path, allow_pickle=False) as zf:

            def get(k: str) -> np.ndarray:
                return mapped[k] if k in mapped else zf[k]

            header = json.loads(str(zf["header"]))
            return Predictions(
                header["track"],
                header["split"],
                {k: get(f"key_{k}") for k in header["keys"]},
                get("values"),
                tuple(zf["columns"].tolist()),
                get("labels") if "labels" in zf.files else None,
                header.get("meta", {}),
            )
    except (OSError, ValueError, KeyError, struct.error, zipfile.BadZipFile):
        return Predictions.load(path)


def stream_test(track: str, members: Sequence[Member], recipe: Recipe) -> Predictions:
    """Test predictions of the ensemble, reading one member's test file at a time.

    Memory: the running sum, one scratch buffer of the same size, the first member's keys,
    and the member being added (its keys are released as soon as they are compared).
    """
    total: np.ndarray | None = None
    buf: np.ndarray | None = None
    ref_keys: dict[str, np.ndarray] | None = None
    cols: tuple[str, ...] = ()
    for i, mem in enumerate(members):
        w = recipe.weights[i]
        if not w.any():
            continue
        p = mem.load_test()
        if ref_keys is None:
            if len(p) == 0:
                raise AbawError(f"{mem.name}: the test predictions are empty (no test rows)")
            ref_keys, cols = p.keys, p.columns
            total = np.empty(p.values.shape, np.float32)
            total[:] = recipe.intercept.astype(np.float32)
            buf = np.empty_like(total)
        else:
            if p.columns != cols:
                raise AbawError(f"{mem.name}: test columns {list(p.columns)} differ")
            p = align_to(p, ref_keys, f"{mem.name} (test)")
            p.keys = ref_keys  # release this member's own key arrays before reading its values
        np.multiply(p.values, w.astype(np.float32), out=buf)
        total += buf
        del p
    if total is None or ref_keys is None:
        raise AbawError("no member has a non-zero weight")
    values = postprocess(track, recipe, total, ref_keys.get("video"), ref_keys.get("frame"))
    return Predictions(track, "test", dict(ref_keys), values, cols, None, {})


def _write(result: EnsembleResult, out_dir: Path, force: bool) -> Path:
    """Everything into a temporary sibling folder, then one rename (the old one replaced only with force)."""
    m = result.manifest
    test = stream_test(m["track"], result.members, result.recipe)
    test.meta = dict(result.devel.meta)
    result.test = test
    m["test_rows"] = len(test)
    m["test_keys_sha256"] = keys_sha256(test.keys)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists() and not force:
        raise AbawError(f"{out_dir} exists; pass --force to replace it")
    from abaw.io import atomic_dir

    with atomic_dir(out_dir) as tmp:
        result.devel.save(tmp / "predictions-devel.npz")
        test.save(tmp / "predictions-test.npz")
        (tmp / "manifest.json").write_text(json.dumps(m, indent=2) + "\n", encoding="utf-8")
    return out_dir


def load_ensemble(
    name: str, runs: str | os.PathLike[str] = "runs"
) -> tuple[dict[str, Any], Predictions, Predictions]:
    """(manifest, devel predictions, test predictions) of `<runs>/ensembles/<name>/`."""
    d = _ensemble_dir(Path(runs), name)
    mpath = d / "manifest.json"
    if not mpath.is_file():
        there = sorted(p.name for p in d.parent.glob("*") if not p.name.startswith("."))
        raise AbawError(
            f"no ensemble {name!r} in {d.parent} (found: {', '.join(there) or 'none'}); "
            "make one with `abaw ensemble`"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(mpath, "not a readable manifest", found=str(e)) from None
    return (
        manifest,
        Predictions.load(d / "predictions-devel.npz"),
        Predictions.load(d / "predictions-test.npz"),
    )
