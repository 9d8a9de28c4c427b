"""Synthetic Hume-Reaction data in both real ERI layouts, with a known ceiling.

Generative story (one sample = one short video reaction):

- a latent state per sample: shared traits `s` (3), visual-only `vo` (2),
  audio-only `ao` (1), a fusion pair `z`, `u` (visual sees z+u, audio sees z-u,
  so only the two together recover z), and a reaction `d` that switches on at
  a random onset during the clip (a sequence model can locate it);
- intensities = max-normalise(softplus(W @ [s, vo, ao, z, d] + b + label noise));
- each modality observes its part of the latent once per time step with
  per-step jitter (aggregating over time helps), audio noisier than visual;
  each feature set is a fixed random projection of its modality's observation,
  squashed, scaled and shifted per column (so standardisation matters).

`oracle.json` holds the mean Pearson of E[y | latent] (label noise integrated
out by Monte Carlo): the best any model can reach on devel and test.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from abaw.console import progress
from abaw.eri import EMOTIONS
from abaw.io import atomic_open, atomic_path
from abaw.metrics import mean_pearson

# Known feature sets: name -> (modality, width), as the real extracted ones.
FEATURE_SETS: dict[str, tuple[str, int]] = {
    "DeepSpectrum": ("audio", 1024),
    "eGeMAPS": ("audio", 88),
    "VGGFace2": ("visual", 512),
    "FAUs": ("visual", 20),
    "PosterV2-ViT": ("visual", 1536),
}
PAPER_FEATURES = ["DeepSpectrum", "PosterV2-ViT"]
CHUNK = 256  # samples per parallel writing task (fixed, so output does not depend on n_jobs)


@dataclass
class Scale:
    """Sizes of one scale."""

    n_train: int  # training samples
    n_devel: int  # validation samples
    n_test: int  # test samples (written without labels)
    audio_len: tuple[int, int]  # min, max time steps of an audio feature file
    visual_len: tuple[int, int]  # min, max time steps of a visual feature file
    features: tuple[str, ...]  # feature sets written by default
    n_missing_train: int  # train IDs with audio but no visual files (the paper found 13)
    n_missing_devel: int  # devel IDs with no visual files
    n_missing_test: int  # test IDs missing one modality (first: visual, second: audio, ...)


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        36, 12, 12, (4, 10), (3, 8), ("DeepSpectrum", "eGeMAPS", "PosterV2-ViT"), 2, 1, 2
    ),
    "small": Scale(1260, 370, 370, (4, 10), (3, 8), tuple(FEATURE_SETS), 4, 2, 2),
    # Full: the real split sizes; short sequences keep the two paper sets at ~3 GB of CSV.
    "full": Scale(15806, 4657, 4604, (4, 8), (3, 6), tuple(PAPER_FEATURES), 13, 2, 3),
}


# `difficulty="hard"`: fewer training samples, longer and more variable sequences (visual
# 12-60 steps, audio shorter, as the real set), weaker per-step signal, so a model that
# memorises shows it (the small set's sequences are 3-10 steps and its train set large).
HARD: dict[str, dict] = {
    "scale": {
        "n_train": 0.35,  # share of the scale's training samples kept
        "audio_len": (6, 40),
        "visual_len": (12, 60),
    },
    "params": {"visual_jitter": 1.6, "audio_jitter": 4.5, "column_noise": 0.5},
}
DIFFICULTIES = ("normal", "hard")


def resolve_difficulty(scale: str, difficulty: str) -> tuple[Scale, Params]:
    """The sizes and generator constants of `scale` at `difficulty`."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; choose from {list(DIFFICULTIES)}")
    sc, p = SCALES[scale], Params()
    if difficulty == "hard":
        h = HARD["scale"]
        sc = dataclasses.replace(
            sc,
            n_train=max(sc.n_missing_train + 8, int(sc.n_train * h["n_train"])),
            audio_len=h["audio_len"],
            visual_len=h["visual_len"],
        )
        p = dataclasses.replace(p, **HARD["params"])
    return sc, p


@dataclass
class Params:
    """Generator constants (written to oracle.json)."""

    label_noise: float = 1.1  # std of the noise added to the intensity logits
    u_std: float = 1.5  # std of the nuisance u that hides z from either modality alone
    visual_jitter: float = 0.5  # per-step noise on the visual observation of the latent
    audio_jitter: float = 2.0  # per-step noise on the audio observation (audio is weaker)
    column_noise: float = 0.3  # per-column noise of each feature set
    d_gain: float = 1.5  # reaction size once switched on
    oracle_draws: int = 256  # Monte Carlo draws to integrate label noise out


def _rng(seed: int, *keys: object) -> np.random.Generator:
    """Independent, reproducible stream per (seed, key...), stable across runs and processes."""
    words = [seed] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def _latents(n: int, seed: int, p: Params) -> dict[str, np.ndarray]:
    r = _rng(seed, "latent")
    return {
        "s": r.standard_normal((n, 3)),
        "vo": r.standard_normal((n, 2)),
        "ao": r.standard_normal((n, 1)),
        "z": r.standard_normal((n, 1)),
        "u": p.u_std * r.standard_normal((n, 1)),
        "d": p.d_gain * r.standard_normal((n, 1)),
        "onset": r.uniform(0.25, 0.75, n),
    }


def _label_logits(lat: dict[str, np.ndarray], seed: int) -> np.ndarray:
    r = _rng(seed, "labelmap")
    x = np.concatenate([lat["s"], lat["vo"], lat["ao"], lat["z"], lat["d"]], axis=1)
    w = r.standard_normal((x.shape[1], len(EMOTIONS))) * 0.6
    b = r.normal(-0.5, 0.3, len(EMOTIONS))
    return x @ w + b


def _maxnorm(raw: np.ndarray) -> np.ndarray:
    return raw / raw.max(axis=-1, keepdims=True)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _observation(
    lat: dict[str, np.ndarray], i: int, modality: str, length: int, p: Params, rng
) -> np.ndarray:
    """(length, k) per-step observation of sample i's latent by one modality."""
    tau = (np.arange(length) + 0.5) / length
    on = (tau > lat["onset"][i]).astype(np.float64)[:, None]
    if modality == "visual":
        base = np.concatenate([lat["s"][i], lat["vo"][i], lat["z"][i] + lat["u"][i]])
        jitter = p.visual_jitter
    else:
        base = np.concatenate([lat["s"][i], lat["ao"][i], lat["z"][i] - lat["u"][i]])
        jitter = p.audio_jitter
    obs = np.concatenate([np.broadcast_to(base, (length, base.size)), on * lat["d"][i]], axis=1)
    return obs + jitter * rng.standard_normal(obs.shape)


def _projection(
    name: str, k: int, dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = _rng(seed, "projection", name)
    m = r.standard_normal((k, dim)) / np.sqrt(k)
    scale = np.exp(r.uniform(np.log(0.3), np.log(2.5), dim))
    offset = r.uniform(-3.0, 3.0, dim)
    return m, scale, offset


def format_fixed7(x: np.ndarray) -> np.ndarray:
    """Format floats in (-10, 10) as 7 ASCII bytes each, in bulk (no per-cell Python).

    Positives as `d.ddddd`, negatives as `-d.dddd`; values outside are clipped.
    Returns a uint8 array of shape x.shape + (7,).
    """
    x = np.asarray(x, dtype=np.float64)
    neg = x < 0
    q = np.where(neg, np.rint(-x * 1e4) * 10, np.rint(x * 1e5))
    q = np.clip(q, 0, 999_999).astype(np.int64)
    digits = (q[..., None] // (10 ** np.arange(5, -1, -1))) % 10 + ord("0")
    out = np.empty(x.shape + (7,), dtype=np.uint8)
    out[..., 0] = digits[..., 0]
    out[..., 1] = ord(".")
    out[..., 2:] = digits[..., 1:]
    # negatives: '-', d, '.', dddd
    out[neg, 0] = ord("-")
    out[neg, 1] = digits[neg, 0]
    out[neg, 2] = ord(".")
    out[neg, 3:] = digits[neg, 1:5]
    return out


def _csv_bytes(file_id: str, values: np.ndarray, header: bytes) -> bytes:
    """One feature CSV: header, then `[id],timestamp,v1,...,vD` rows, built in bulk."""
    t, dim = values.shape
    cells = np.empty((t, dim, 8), dtype=np.uint8)
    cells[:, :, :7] = format_fixed7(values)
    cells[:, :, 7] = ord(",")
    cells[:, -1, 7] = ord("\n")
    body = cells.reshape(t, dim * 8)
    rows = [f"{file_id},{0.5 * j:.3f},".encode() + body[j].tobytes() for j in range(t)]
    return header + b"".join(rows)


def _write_chunk(
    out: Path,
    feat_dir: Path,
    start: int,
    stop: int,
    lat,
    lengths,
    present,
    features,
    seed,
    p,
    bracket,
) -> int:
    """Write every feature file of samples [start, stop); returns the bytes written."""
    written = 0
    for modality in ("audio", "visual"):
        names = [f for f in features if FEATURE_SETS[f][0] == modality]
        if not names:
            continue
        rng = _rng(seed, "obs", modality, start)
        obs = [
            _observation(lat, i, modality, int(lengths[modality][i]), p, rng)
            for i in range(start, stop)
        ]
        for name in names:
            dim = FEATURE_SETS[name][1]
            m, scale, offset = _projection(name, obs[0].shape[1], dim, seed)
            frng = _rng(seed, "colnoise", name, start)
            header = ("File_ID,timestamp," + ",".join(map(str, range(dim))) + "\n").encode()
            for j, i in enumerate(range(start, stop)):
                a = obs[j] @ m + p.column_noise * frng.standard_normal((obs[j].shape[0], dim))
                x = offset + scale * np.tanh(a / 2.5)
                if not present[modality][i]:
                    continue
                data = _csv_bytes(bracket(i), x, header)
                with atomic_path(feat_dir / name / f"{i:05d}.csv") as tmp:
                    tmp.write_bytes(data)
                written += len(data)
    return written


def _splits(sc: Scale) -> np.ndarray:
    return np.array(["train"] * sc.n_train + ["devel"] * sc.n_devel + ["test"] * sc.n_test)


def write_eri(
    out: str | Path,
    *,
    scale: str = "tiny",
    seed: int = 0,
    layout: str = "muse",
    features: list[str] | None = None,
    n_jobs: int = -1,
    show_progress: bool | None = None,
    difficulty: str = "normal",
) -> dict:
    """Write a synthetic ERI data set to `out`; returns the oracle dict (also in oracle.json).

    Args:
        out: folder to write into (created).
        scale: "tiny" (tests), "small" (CPU demo) or "full" (real challenge sizes).
        difficulty: "normal" or "hard" (fewer train samples, 12-60 step clips, noisier steps).
        seed: random seed; the output is identical for a seed, whatever n_jobs.
        layout: "muse" (feats/, labels.csv, partition.csv) or "abaw5" (data_info.csv, features/).
        features: feature sets to write (default: the scale's defaults).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {sorted(SCALES)}")
    if layout not in ("muse", "abaw5"):
        raise ValueError(f"unknown layout {layout!r}; choose 'muse' or 'abaw5'")
    sc, p = resolve_difficulty(scale, difficulty)
    names = list(features) if features else list(sc.features)
    unknown = [f for f in names if f not in FEATURE_SETS]
    if unknown:
        raise ValueError(f"unknown feature set(s) {unknown}; synth knows {sorted(FEATURE_SETS)}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    split = _splits(sc)
    lat = _latents(len(split), seed, p)
    lengths, present = _sample_shapes(sc, split, seed)
    y, expected = _labels(lat, seed, p)
    ids_bare = [f"{i:05d}" for i in range(len(split))]
    feat_dir = folder / ("feats" if layout == "muse" else "features")
    bracket = (lambda i: f"[{i:05d}]") if layout == "muse" else (lambda i: f"{i:05d}")
    for name in names:
        (feat_dir / name).mkdir(parents=True, exist_ok=True)
    _write_tables(folder, layout, ids_bare, split, y, seed)
    _write_hidden_test_labels(folder, layout, ids_bare, split, y)
    n = len(split)
    jobs = (
        delayed(_write_chunk)(
            folder, feat_dir, s, min(s + CHUNK, n), lat, lengths, present, names, seed, p, bracket
        )
        for s in range(0, n, CHUNK)
    )
    total = _run_chunks(jobs, n, f"synth ERI {scale}", n_jobs, show_progress)
    oracle = {
        "track": "eri",
        "seed": seed,
        "scale": scale,
        "difficulty": difficulty,
        "layout": layout,
        "features": names,
        **{s: _ceiling(y[split == s], expected[split == s]) for s in ("devel", "test")},
        "counts": {s: int((split == s).sum()) for s in ("train", "devel", "test")},
        "sequence_lengths": {"audio": list(sc.audio_len), "visual": list(sc.visual_len)},
        "missing": {m: [ids_bare[i] for i in np.flatnonzero(~present[m])] for m in present},
        "params": asdict(p),
        "bytes_written": total,
    }
    with atomic_open(folder / "oracle.json") as fh:
        json.dump(oracle, fh, indent=2)
    return oracle


def _run_chunks(
    jobs: Iterable[tuple], n: int, title: str, n_jobs: int, show_progress: bool | None
) -> int:
    """Run the chunk writers (CHUNK samples each) in parallel, with a progress bar; bytes written."""
    total = 0
    with progress(disable=None if show_progress is None else not show_progress) as bar:
        task = bar.add_task(title, total=n)
        runner = Parallel(n_jobs=n_jobs, return_as="generator")
        for s, nbytes in zip(range(0, n, CHUNK), runner(jobs), strict=True):
            total += nbytes
            bar.update(task, advance=min(CHUNK, n - s), info=f"{total / 1e9:.2f} GB")
    return total


def _ceiling(y: np.ndarray, expected: np.ndarray) -> dict:
    """The oracle's score on one split: mean Pearson of E[y | latent] against y."""
    score = mean_pearson(y, expected, EMOTIONS)
    return {"mean_pearson": score.value, "per_emotion": score.per_column}


def _sample_shapes(
    sc: Scale, split: np.ndarray, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Sequence length per sample and modality, and which samples miss a modality's files."""
    n = len(split)
    r = _rng(seed, "layout")
    lengths = {
        "audio": r.integers(sc.audio_len[0], sc.audio_len[1] + 1, n),
        "visual": r.integers(sc.visual_len[0], sc.visual_len[1] + 1, n),
    }
    present = {"audio": np.ones(n, bool), "visual": np.ones(n, bool)}
    idx = {s: np.flatnonzero(split == s) for s in ("train", "devel", "test")}
    present["visual"][r.choice(idx["train"], sc.n_missing_train, replace=False)] = False
    present["visual"][r.choice(idx["devel"], sc.n_missing_devel, replace=False)] = False
    test_missing = r.choice(idx["test"], sc.n_missing_test, replace=False)
    for k, i in enumerate(test_missing):
        present["visual" if k % 2 == 0 else "audio"][i] = False
    return lengths, present


def _labels(lat: dict[str, np.ndarray], seed: int, p: Params) -> tuple[np.ndarray, np.ndarray]:
    """(written labels, E[labels | latent]): the oracle scores the second against the first.

    Labels are rounded to what the CSV holds so the oracle scores the written file; the
    expectation integrates the label noise out by Monte Carlo.
    """
    logits = _label_logits(lat, seed)
    noise = p.label_noise * _rng(seed, "labelnoise").standard_normal(logits.shape)
    y = np.round(_maxnorm(_softplus(logits + noise)), 6)
    expected = np.zeros_like(y)
    mc = _rng(seed, "oracle")
    for _ in range(p.oracle_draws // 32):
        eps = p.label_noise * mc.standard_normal((32,) + logits.shape)
        expected += _maxnorm(_softplus(logits[None] + eps)).sum(0)
    expected /= p.oracle_draws // 32 * 32
    return y, expected


def _write_hidden_test_labels(
    out: Path, layout: str, ids: list[str], split: np.ndarray, y: np.ndarray
) -> None:
    """Test labels go to `.oracle/test_labels.csv`, where no loader looks (demo and benchmarks
    score test predictions against them; the data set itself has none, as the real one)."""
    spell = (lambda i: f"[{i}]") if layout == "muse" else (lambda i: i)
    with atomic_open(out / ".oracle" / "test_labels.csv") as fh:
        fh.write("File_ID," + ",".join(EMOTIONS) + "\n")
        for i, s, row in zip(ids, split, y, strict=True):
            if s == "test":
                fh.write(spell(i) + "," + ",".join(f"{v:.6f}" for v in row) + "\n")


def _write_tables(
    out: Path, layout: str, ids: list[str], split: np.ndarray, y: np.ndarray, seed: int
) -> None:
    labelled = split != "test"
    vals = [
        ",".join(f"{v:.6f}" for v in row) if lab else "," * (len(EMOTIONS) - 1)
        for row, lab in zip(y, labelled, strict=True)
    ]
    if layout == "muse":
        with atomic_open(out / "labels.csv") as fh:
            fh.write("File_ID," + ",".join(EMOTIONS) + "\n")
            fh.writelines(f"[{i}],{v}\n" for i, v in zip(ids, vals, strict=True))
        with atomic_open(out / "partition.csv") as fh:
            fh.write("Id,Partition\n")
            fh.writelines(f"[{i}],{s}\n" for i, s in zip(ids, split, strict=True))
        return
    r = _rng(seed, "meta")
    age = r.integers(18, 66, len(ids))
    country = np.where(r.random(len(ids)) < 0.6, "United States", "South Africa")
    name = {"train": "Train", "devel": "Val", "test": "Test"}
    with atomic_open(out / "data_info.csv") as fh:
        fh.write("File_ID,Split," + ",".join(EMOTIONS) + ",Age,Country\n")
        for i, s, v, a, c in zip(ids, split, vals, age, country, strict=True):
            fh.write(f"{i},{name[s]},{v},{a},{c}\n")


def describe_oracle(oracle: dict, out: Path) -> str:
    """One line for the user: what was written and the ceiling (`abaw synth --track eri`)."""
    hard = " hard" if oracle.get("difficulty") == "hard" else ""
    return (
        f"ERI {oracle['scale']}{hard} ({oracle['layout']}) written to {out}: "
        + ", ".join(f"{k} {v}" for k, v in oracle["counts"].items())
        + f"; oracle mean Pearson devel {oracle['devel']['mean_pearson']:.3f}, "
        f"test {oracle['test']['mean_pearson']:.3f}"
    )
