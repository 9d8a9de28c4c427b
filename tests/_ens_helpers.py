"""Tiny synthetic members and real Optuna studies for the ensemble / submit tests.

Studies are built with the real Optuna API exactly as abaw/trials.py documents: a journal-file
study, `ask()`, predictions `.npz` files uploaded as artifacts, the user attributes, `tell()`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
from optuna.artifacts import upload_artifact
from optuna.storages.journal import JournalFileBackend

from abaw import trials as T
from abaw.eri import EMOTIONS
from abaw.expr import CLASSES
from abaw.predictions import Predictions


def eri_labels(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = rng.random((n, 7)) ** 2
    return (y / y.max(axis=1, keepdims=True)).astype(np.float32)


def eri_member(seed: int, ids_dev, y_dev, ids_test, noise: float = 0.3):
    """Devel and test predictions: labels (or a hidden truth) plus member-specific noise."""
    rng = np.random.default_rng(1000 + seed)
    y_test = eri_labels(len(ids_test), 99)

    def pred(y):
        return np.clip(0.5 * y + noise * rng.standard_normal(y.shape) + 0.25, 0, 1)

    dev = Predictions("eri", "devel", {"id": ids_dev}, pred(y_dev), EMOTIONS, y_dev, {"seed": seed})
    test = Predictions("eri", "test", {"id": ids_test}, pred(y_test), EMOTIONS, None, {})
    return dev, test


def expr_labels(n_videos: int, length: int, seed: int):
    """(video, frame, labels) of a few videos with sticky class segments."""
    rng = np.random.default_rng(seed)
    video, frame, lab = [], [], []
    for v in range(n_videos):
        y = np.repeat(rng.integers(0, 8, size=length // 10 + 1), 10)[:length]
        y[rng.random(length) < 0.05] = -1
        video += [f"vid{v:02d}"] * length
        frame.append(np.arange(1, length + 1))
        lab.append(y)
    return np.array(video), np.concatenate(frame), np.concatenate(lab).astype(np.int64)


def expr_member(seed: int, video, frame, labels, noise: float = 1.6):
    rng = np.random.default_rng(2000 + seed)
    truth = np.where(labels >= 0, labels, 0)
    z = 1.5 * np.eye(8)[truth] + noise * rng.standard_normal((len(truth), 8))
    z[:, 0] += 0.5  # a bias towards Neutral the class offsets can remove
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    return Predictions("expr", "devel", {"video": video, "frame": frame}, p, CLASSES, labels, {})


def write_member(folder: Path, dev: Predictions, test: Predictions) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dev.save(folder / "predictions-devel.npz")
    test.save(folder / "predictions-test.npz")
    return folder


def make_study(
    runs: Path,
    name: str,
    track: str,
    members: list[tuple[Predictions, Predictions]],
    *,
    keep: int | None = None,
    metric: str | None = None,
) -> optuna.Study:
    """A journal-file study whose trials carry real predictions artifacts (trials.py contract)."""
    runs.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(runs / "optuna-journal.log")))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    art = T.default_artifacts_dir(runs)
    store = T.artifact_store(art)
    study.set_user_attr(T.STUDY_TRACK, track)
    study.set_user_attr(T.STUDY_MODEL, "toy")
    study.set_user_attr(
        T.STUDY_METRIC, metric or ("mean_pearson" if track == "eri" else "macro_f1")
    )
    study.set_user_attr(T.STUDY_ARTIFACTS, str(art.resolve()))
    from abaw.track import get_track

    keep = len(members) if keep is None else keep
    for i, (dev, test) in enumerate(members):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        tmp = runs / "tmp" / name / str(trial.number)
        tmp.mkdir(parents=True, exist_ok=True)
        value = get_track(track).score_values(dev.labels, dev.values).value
        if i < keep:
            for split, p in (("devel", dev), ("test", test)):
                path = p.save(tmp / f"predictions-{split}.npz")
                aid = upload_artifact(
                    artifact_store=store, file_path=str(path), study_or_trial=trial
                )
                trial.set_user_attr(T.predictions_attr(split), aid)
            ck = tmp / "checkpoint.pt"
            ck.write_bytes(b"weights")
            trial.set_user_attr(
                T.TRIAL_CHECKPOINT,
                upload_artifact(artifact_store=store, file_path=str(ck), study_or_trial=trial),
            )
            trial.set_user_attr(T.TRIAL_KEPT, True)
        trial.set_user_attr(T.TRIAL_BEST_EPOCH, 1)
        study.tell(trial, value)
    return study


def expr_pair(seed: int, dev_keys, test_keys, noise: float = 1.6):
    """Devel (labelled) and test predictions of one Expr member."""
    dev = expr_member(seed, *dev_keys, noise=noise)
    t = expr_member(seed + 500, *test_keys, noise=noise)
    test = Predictions("expr", "test", dict(t.keys), t.values, CLASSES, None, {})
    return dev, test
