"""Synthetic Aff-Wild2-style Expr data in the real layout, with a known ceiling (oracle.json).

Each annotation-level video (a `_left`/`_right` pair counts as two, as the real set does) has
a latent per-frame state: a class that persists over segments of tens to hundreds of frames
(a sticky chain drawn from an Aff-Wild2-like imbalanced prior) and a smooth intensity. The
annotator writes the latent class, or with a probability that grows as intensity falls, a
"confuser" (Neutral/Other). Each backbone sees the latent class through its own per-class
visibility (so some class pairs separate well in one backbone and poorly in another), plus a
per-person identity offset, slow temporal noise and per-frame noise, projected to its width.
Fusing backbones therefore beats each one, and temporal aggregation helps.

The oracle predicts the latent class; its macro F1 on devel and test is the ceiling. Test
labels go to `<out>/.oracle/test_labels/<video>.npy` where no loader looks.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from abaw.console import progress
from abaw.errors import ConfigError
from abaw.expr.layout import (
    ANNOTATION_DIRS,
    CLASSES,
    FEATURES_DIR,
    HEADER,
    ORACLE_DIR,
    SPLIT_DIRS,
    TEST_FRAME_HEADER,
    TEST_FRAME_LIST,
    TEST_VIDEO_LIST,
)
from abaw.io import atomic_open, atomic_path
from abaw.metrics import macro_f1

# The paper's three backbones and their feature widths.
BACKBONES: dict[str, int] = {"IRv1-VGGFace2": 512, "IRv1-CASIA": 512, "RegNetY-1.6GF": 888}
# How well each backbone sees each class (scales the class prototype): each one is good on a
# different subset, so no single backbone separates all pairs.
VISIBILITY: dict[str, tuple[float, ...]] = {
    #                  Neu  Ang  Dis  Fea  Hap  Sad  Sur  Oth
    "IRv1-VGGFace2": (1.0, 1.0, 0.3, 0.3, 1.0, 0.9, 0.4, 0.6),
    "IRv1-CASIA": (1.0, 0.4, 0.4, 1.0, 0.6, 0.3, 1.0, 0.7),
    "RegNetY-1.6GF": (1.0, 0.3, 1.0, 0.4, 0.8, 0.6, 0.5, 1.0),
}
# Aff-Wild2-like class weights (formats.md); the prior is their inverse, normalised.
_WEIGHTS = np.array([0.43, 5.8, 6.7, 4.2, 1.0, 1.4, 2.9, 0.33])
PRIOR = (1 / _WEIGHTS) / (1 / _WEIGHTS).sum()


@dataclass(frozen=True)
class ScaleSpec:
    """Sizes of one scale."""

    videos: tuple[int, int, int]  # annotation-level videos in train, devel, test
    pairs: tuple[int, int, int]  # left/right pairs among them, per split
    frames: int  # median frames per video
    test_frames: int | None  # exact total test frames (the real ABAW5 count at full scale)
    jobs: int  # parallel writers


SCALES: dict[str, ScaleSpec] = {
    "tiny": ScaleSpec((6, 3, 3), (1, 1, 1), 200, None, 1),
    "small": ScaleSpec((36, 12, 12), (2, 1, 1), 2500, None, 1),
    "full": ScaleSpec((248, 72, 228), (8, 3, 6), 4750, 1_022_656, 2),
}


@dataclass(frozen=True)
class GenParams:
    """Generator parameters (written to oracle.json)."""

    latent_dim: int = 24  # per-backbone latent space the class prototypes live in
    segment_median: float = 70.0  # median frames a latent class persists
    prior_concentration: float = 6.0  # Dirichlet concentration of per-video class mixtures
    identity_sd: float = 0.1  # per-person offset in latent space (per dim)
    slow_noise_sd: float = 0.1  # temporally smooth noise (per dim)
    slow_noise_frames: int = 25  # its smoothing window
    frame_noise_sd: float = 0.38  # independent per-frame noise in latent space (per dim)
    feature_noise_sd: float = 0.3  # independent noise in the full feature width
    label_noise_low: float = 0.35  # P(annotator writes a confuser) at zero intensity
    label_noise_high: float = 0.05  # ... and at full intensity
    face_gap_every: int = 600  # one no-face gap per this many frames, on average
    unannotated_every: int = 1500  # one -1 gap per this many frames, on average


# `difficulty="hard"`: a third of the training videos, more variable video lengths, weaker
# per-frame class signal and more label noise, so memorising the train set shows.
HARD = {
    "train_share": 1 / 3,
    "length_sigma": 0.8,  # lognormal sigma of frames per video (normal: 0.45)
    "params": {"frame_noise_sd": 0.6, "feature_noise_sd": 0.45, "label_noise_low": 0.45},
}
DIFFICULTIES = ("normal", "hard")


def _names(rng: np.random.Generator, n: int, pairs: int, start: int) -> list[str]:
    """Aff-Wild2-looking names; `pairs` bases become `<base>_left` and `<base>_right`."""
    res = [(1920, 1080), (1280, 720), (640, 360), (640, 480), (480, 360)]
    bases = []
    for i in range(n - pairs):
        k = start + i
        if k % 7 == 3:
            bases.append(f"video{k}")
        else:
            w, h = res[rng.integers(len(res))]
            bases.append(f"{k}-{int(rng.choice([24, 25, 30]))}-{w}x{h}")
    names = []
    for i, b in enumerate(bases):
        if i < pairs:
            names += [f"{b}_left", f"{b}_right"]
        else:
            names.append(b)
    return names


def _base(name: str) -> str:
    return name.removesuffix("_left").removesuffix("_right")


def _frame_counts(
    rng: np.random.Generator, spec: ScaleSpec, names: list[list[str]], sigma: float = 0.45
) -> list[int]:
    """Frames per video (pairs share their video's count); test total exact when asked."""
    counts: list[int] = []
    for split, vids in enumerate(names):
        c = {}
        for name in vids:
            base = _base(name)
            if base not in c:
                n = rng.lognormal(np.log(spec.frames), sigma)
                c[base] = int(np.clip(n, spec.frames // 3, spec.frames * 4))
        if split == 2 and spec.test_frames is not None:
            # Scale to the exact total: each base counts once per annotation file that uses it.
            mult = {b: sum(_base(v) == b for v in vids) for b in c}
            tot = sum(c[b] * mult[b] for b in c)
            for b in c:
                c[b] = max(50, int(c[b] * spec.test_frames / tot))
            rest = spec.test_frames - sum(c[b] * mult[b] for b in c)
            single = [b for b in c if mult[b] == 1]
            c[single[0]] += rest
        counts += [c[_base(v)] for v in vids]
    return counts


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along axis 0 rescaled to unit variance (vectorised, via cumsum)."""
    c = np.cumsum(np.pad(x, ((width, 0), (0, 0))), axis=0)
    return (c[width:] - c[:-width]) / np.sqrt(width)


def _latent(seed: int, v: int, n: int, p: GenParams) -> dict[str, np.ndarray]:
    """Latent class, intensity, annotator label and face mask of one video."""
    rng = np.random.default_rng([seed, 0, v])
    mix = rng.dirichlet(PRIOR * p.prior_concentration * len(PRIOR) + 0.05)
    lengths = np.maximum(5, rng.lognormal(np.log(p.segment_median), 0.8, size=n // 5 + 2))
    lengths = lengths.astype(np.int64)
    seg_class = rng.choice(len(PRIOR), size=len(lengths), p=mix)
    z = np.repeat(seg_class, lengths)[:n]
    seg_int = rng.beta(2.0, 2.0, size=len(lengths))
    wiggle = _smooth(rng.normal(size=(n, 1)), 40)[:, 0] * 0.1
    a = np.clip(np.repeat(seg_int, lengths)[:n] + wiggle, 0.0, 1.0)
    # Annotator: the latent class, or a confuser more often at low intensity.
    p_conf = p.label_noise_low + (p.label_noise_high - p.label_noise_low) * a
    conf = rng.random(n) < p_conf
    confuser = np.where(rng.random(n) < 0.5, 0, 7)
    confuser = np.where(z == 0, 7, np.where(z == 7, 0, confuser))
    y = np.where(conf, confuser, z).astype(np.int8)
    # Frames nobody annotated: sometimes a leading run, plus a few gaps.
    if rng.random() < 0.5:
        y[: rng.integers(10, 100)] = -1
    for _ in range(rng.poisson(n / p.unannotated_every)):
        s = rng.integers(n)
        y[s : s + rng.integers(20, 150)] = -1
    # Frames where face detection failed (same for every backbone).
    face = np.ones(n, bool)
    for _ in range(rng.poisson(n / p.face_gap_every) + 1):
        s = rng.integers(n)
        face[s : s + rng.integers(5, 60)] = False
    # Feature files: sometimes short (trailing frames without a face), sometimes 1-2 rows long.
    u = rng.random()
    n_feat = (
        n - int(rng.integers(1, 30)) if u < 0.2 else n + int(rng.integers(1, 3)) if u > 0.9 else n
    )
    return {"z": z, "a": a, "y": y, "face": face, "n_feat": np.int64(n_feat)}


def _features(seed: int, v: int, b: int, name: str, lat: dict, p: GenParams) -> np.ndarray:
    """float32 (n_feat, D) features of backbone `name`; NaN rows where there is no face."""
    width, k = BACKBONES[name], p.latent_dim
    shared = np.random.default_rng([seed, 1, b])  # the backbone itself, same for every video
    proto = shared.normal(size=(len(CLASSES), k))
    proto /= np.linalg.norm(proto, axis=1, keepdims=True)
    proto[0] *= 0.25  # a neutral face is close to "no expression"
    proj = shared.normal(size=(k, width)) / np.sqrt(k)
    col_scale = shared.lognormal(0.0, 0.5, size=width)
    col_mean = shared.normal(0.5, 1.0, size=width)
    rng = np.random.default_rng([seed, 2, v, b])
    n, n_feat = len(lat["z"]), int(lat["n_feat"])
    z = np.concatenate([lat["z"], np.full(max(0, n_feat - n), lat["z"][-1])])[:n_feat]
    a = np.concatenate([lat["a"], np.full(max(0, n_feat - n), lat["a"][-1])])[:n_feat]
    vis = np.asarray(VISIBILITY.get(name, (0.7,) * len(CLASSES)))
    sig = (0.3 + 1.2 * a)[:, None] * vis[z][:, None] * proto[z]
    sig += rng.normal(0, p.identity_sd, size=k)
    sig += _smooth(rng.normal(0, p.slow_noise_sd, size=(n_feat, k)), p.slow_noise_frames)
    sig += rng.normal(0, p.frame_noise_sd, size=(n_feat, k))
    x = sig @ proj + rng.normal(0, p.feature_noise_sd, size=(n_feat, width))
    x += rng.normal(0, 0.3, size=width)  # appearance offset of this person in the full width
    x = (x * col_scale + col_mean).astype(np.float32)
    face = np.concatenate([lat["face"], np.ones(max(0, n_feat - n), bool)])[:n_feat]
    x[~face] = np.nan
    return x


def _write_video(
    out: Path,
    seed: int,
    v: int,
    name: str,
    split: str,
    n: int,
    backbones: list[str],
    fmt: str,
    p: GenParams,
) -> dict:
    """Write one video's annotation (or hidden test labels) and feature files."""
    lat = _latent(seed, v, n, p)
    y = lat["y"]
    if split == "test":
        with (
            atomic_path(out / ORACLE_DIR / "test_labels" / f"{name}.npy") as tmp,
            open(tmp, "wb") as fh,
        ):
            np.save(fh, y)  # a file object: np.save would append ".npy" to the temporary name
    else:
        path = out / ANNOTATION_DIRS[0] / SPLIT_DIRS[split] / f"{name}.txt"
        with atomic_open(path) as fh:
            fh.write(HEADER + "\n" + "\n".join(map(str, y.tolist())) + "\n")
    for b, bb in enumerate(backbones):
        x = _features(
            seed, v, list(BACKBONES).index(bb) if bb in BACKBONES else 100 + b, bb, lat, p
        )
        folder = out / FEATURES_DIR / bb
        if fmt == "npy":
            with atomic_path(folder / f"{name}.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, x)
        else:
            keep = ~np.isnan(x).any(axis=1)
            frames = np.flatnonzero(keep) + 1
            with atomic_open(folder / f"{name}.csv") as fh:
                fh.write("frame," + ",".join(f"f{i}" for i in range(x.shape[1])) + "\n")
                np.savetxt(
                    fh,
                    np.column_stack([frames, x[keep]]),
                    fmt=["%d"] + ["%.6g"] * x.shape[1],
                    delimiter=",",
                )
    return {
        "name": name,
        "split": split,
        "y": y,
        "z": lat["z"].astype(np.int8),
        "no_face": int((~lat["face"]).sum()),
    }


def write_expr(
    out: str | Path,
    *,
    scale: str = "tiny",
    seed: int = 0,
    backbones: list[str] | None = None,
    feature_format: str = "npy",
    show_progress: bool | None = None,
    difficulty: str = "normal",
) -> dict:
    """Write a synthetic Expr data set under `out`; returns the oracle dict (also oracle.json).

    Args:
        out: destination folder (created).
        scale: "tiny" (tests), "small" (CPU demo), "full" (real challenge sizes, ~20 GB).
        seed: the data set is a function of the seed (and is the same for any backbone subset).
        backbones: backbone names (default: all of BACKBONES); unknown names get width 512.
        feature_format: "npy" or "csv".
        difficulty: "normal" or "hard" (a third of the train videos, noisier frames and labels).
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    if feature_format not in ("npy", "csv"):
        raise ConfigError(f"feature format must be 'npy' or 'csv', got {feature_format!r}")
    backbones = list(backbones or BACKBONES)
    for bb in backbones:
        if bb not in BACKBONES:
            raise ConfigError(f"unknown backbone {bb!r}; synth knows {', '.join(BACKBONES)}")
    if difficulty not in DIFFICULTIES:
        raise ConfigError(f"unknown difficulty {difficulty!r}; choose one of {list(DIFFICULTIES)}")
    out, spec = Path(out), SCALES[scale]
    # Tiny videos are short: shorter segments so every class still shows up.
    p = GenParams(segment_median=25.0) if scale == "tiny" else GenParams()
    sigma = 0.45
    if difficulty == "hard":
        n_train = max(2 * spec.pairs[0] + 1, round(spec.videos[0] * HARD["train_share"]))
        spec = ScaleSpec(
            (n_train, *spec.videos[1:]), spec.pairs, spec.frames, spec.test_frames, spec.jobs
        )
        p = dataclasses.replace(p, **HARD["params"])
        sigma = HARD["length_sigma"]
    rng = np.random.default_rng([seed, 9])
    names, start = [], 1
    for n_vid, pairs in zip(spec.videos, spec.pairs, strict=True):
        names.append(_names(rng, n_vid, pairs, start))
        start += n_vid
    counts = _frame_counts(rng, spec, names, sigma)
    jobs = [
        (name, split)
        for split, vids in zip(("train", "devel", "test"), names, strict=True)
        for name in vids
    ]
    results = []
    with progress(disable=None if show_progress is None else not show_progress) as bar:
        task = bar.add_task(f"synth expr {scale}", total=len(jobs))
        par = Parallel(n_jobs=spec.jobs, return_as="generator")
        calls = (
            delayed(_write_video)(out, seed, v, nm, sp, counts[v], backbones, feature_format, p)
            for v, (nm, sp) in enumerate(jobs)
        )
        for r in par(calls):
            results.append(r)
            bar.advance(task)
    test = [r for r in results if r["split"] == "test"]
    with atomic_open(out / TEST_VIDEO_LIST) as fh:
        fh.write("".join(f"{r['name']}\n" for r in test))
    with atomic_open(out / TEST_FRAME_LIST) as fh:
        fh.write(TEST_FRAME_HEADER + "\n")
        for r in test:
            fh.write("".join(f"{r['name']}/{i:05d}.jpg,\n" for i in range(1, len(r["y"]) + 1)))
    oracle = _oracle(results, scale, seed, backbones, feature_format, p)
    oracle["difficulty"] = difficulty
    with atomic_open(out / "oracle.json") as fh:
        json.dump(oracle, fh, indent=2)
    return oracle


def _oracle(
    results: list[dict], scale: str, seed: int, backbones: list[str], fmt: str, p: GenParams
) -> dict:
    """Macro F1 of the latent-class predictor per split, class frequencies, parameters."""
    splits = {}
    for split in ("train", "devel", "test"):
        rs = [r for r in results if r["split"] == split]
        y = np.concatenate([r["y"] for r in rs])
        z = np.concatenate([r["z"] for r in rs])
        counts = np.bincount(y[y >= 0], minlength=len(CLASSES))
        entry = {
            "videos": len(rs),
            "frames": int(len(y)),
            "annotated": int((y >= 0).sum()),
            "no_face_frames": int(sum(r["no_face"] for r in rs)),
            "class_counts": dict(zip(CLASSES, counts.tolist(), strict=True)),
        }
        if split != "train":
            s = macro_f1(y, z, columns=CLASSES)
            entry["macro_f1"] = s.value
            entry["per_class_f1"] = s.per_column
        splits[split] = entry
    return {
        "track": "expr",
        "metric": "macro_f1",
        "scale": scale,
        "seed": seed,
        "feature_format": fmt,
        "backbones": {b: BACKBONES[b] for b in backbones},
        "oracle": "predicts the latent class of every frame; its macro F1 is the ceiling",
        "splits": splits,
        "test_labels": f"{ORACLE_DIR}/test_labels/<video>.npy (int8, row i-1 = frame i; never read by loaders)",
        "generator": {
            **asdict(p),
            "prior": PRIOR.round(4).tolist(),
            "visibility": {b: list(VISIBILITY[b]) for b in backbones},
        },
    }


def describe_oracle(oracle: dict, out: Path) -> str:
    """One line for the user: what was written and the ceiling (`abaw synth --track expr`)."""
    s = oracle["splits"]
    hard = " hard" if oracle.get("difficulty") == "hard" else ""
    return (
        f"Wrote Expr {oracle['scale']}{hard} data to {out}: "
        + ", ".join(f"{k} {v['videos']} videos / {v['frames']} frames" for k, v in s.items())
        + f". Oracle macro F1: devel {s['devel']['macro_f1']:.3f}, test {s['test']['macro_f1']:.3f}."
    )
