"""`abaw report` on real Optuna studies (journal file, artifacts) and a Contract-B ensemble folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.artifacts import upload_artifact
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from abaw import trials as T
from abaw.eri import EMOTIONS
from abaw.errors import AbawError
from abaw.expr import CLASSES
from abaw.predictions import Predictions
from abaw.report import make_report

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _eri_predictions(rng: np.random.Generator, quality: float, n: int = 60) -> Predictions:
    labels = rng.uniform(0, 1, (n, len(EMOTIONS)))
    values = np.clip(quality * labels + (1 - quality) * rng.uniform(0, 1, labels.shape), 0, 1)
    ids = np.array([f"[{i:05d}]" for i in range(n)])
    return Predictions("eri", "devel", {"id": ids}, values, EMOTIONS, labels)


def _expr_predictions(rng: np.random.Generator, quality: float, n: int = 400) -> Predictions:
    labels = rng.integers(0, len(CLASSES), n)
    labels[:20] = -1
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), np.maximum(labels, 0)] += 4 * quality
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    keys = {"video": np.array(["v1"] * (n // 2) + ["v2"] * (n - n // 2)), "frame": np.arange(n) + 1}
    return Predictions("expr", "devel", keys, probs, CLASSES, labels)


def make_study(runs: Path, track: str, *, n_complete: int = 5, n_pruned: int = 3) -> str:
    """A study as `abaw tune` writes it (Contract A), built through the real Optuna API."""
    runs.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(runs / "optuna-journal.log")))
    name = f"{track}-demo"
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    art_root = T.default_artifacts_dir(runs).resolve()
    store = T.artifact_store(art_root)
    metric = "mean_pearson" if track == "eri" else "macro_f1"
    for key, value in {
        T.STUDY_TRACK: track,
        T.STUDY_MODEL: "fusion",
        T.STUDY_METRIC: metric,
        T.STUDY_SWEEP: str(ROOT / f"sweeps/{track}-fusion.toml"),
        T.STUDY_DATA: f"/data/{track}",
        T.STUDY_ARTIFACTS: str(art_root),
    }.items():
        study.set_user_attr(key, value)
    rng = np.random.default_rng(0)
    for i in range(n_complete + n_pruned + 1):
        trial = study.ask()
        lr = trial.suggest_float("train.lr", 1e-5, 1e-3, log=True)
        drop = trial.suggest_float("model.dropout", 0.1, 0.6, step=0.1)
        trial.suggest_categorical("model.embed_dim", [128, 256])
        quality = 0.2 + 0.6 * rng.uniform() * (1 - drop)
        curve = [quality * (1 - 0.5**e) + 0.01 * lr * 1e3 for e in range(1, 7)]
        if i == n_complete + n_pruned:  # one failed trial
            trial.set_user_attr(T.TRIAL_FAIL_REASON, "training loss became NaN at epoch 3")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        pruned = i >= n_complete
        epochs = 3 if pruned else 6
        for e in range(epochs):
            trial.report(curve[e] - (0.15 if pruned else 0.0), e + 1)
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        tmp = runs / "tmp" / str(trial.number)
        tmp.mkdir(parents=True)
        make = _eri_predictions if track == "eri" else _expr_predictions
        for split in T.SPLITS:
            pred = make(rng, quality)
            pred.split = split
            path = pred.save(tmp / f"predictions-{split}.npz")
            aid = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
            trial.set_user_attr(T.predictions_attr(split), aid)
        ck = tmp / "checkpoint.pt"
        ck.write_bytes(b"not used by the report")
        trial.set_user_attr(
            T.TRIAL_CHECKPOINT,
            upload_artifact(artifact_store=store, file_path=str(ck), study_or_trial=trial),
        )
        trial.set_user_attr(T.TRIAL_KEPT, True)
        trial.set_user_attr(T.TRIAL_BEST_EPOCH, epochs)
        trial.set_user_attr(T.TRIAL_EPOCHS_RUN, epochs)
        trial.set_user_attr(T.TRIAL_SECONDS, 1.5 + i)
        study.tell(trial, curve[-1])
    return name


def make_ensemble(runs: Path, track: str, name: str = "final") -> Path:
    """A hand-made `<runs>/ensembles/NAME/` folder per Contract B."""
    folder = runs / "ensembles" / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    make = _eri_predictions if track == "eri" else _expr_predictions
    for split in T.SPLITS:
        pred = make(rng, 0.7)
        pred.split = split
        pred.save(folder / f"predictions-{split}.npz")
    members = [
        {
            "source": "study",
            "study": f"{track}-fusion",
            "trial": t,
            "path": None,
            "params": {"train.lr": 1e-4 * (t + 1), "model.dropout": 0.3},
            "devel_score": 0.43 - 0.005 * t,
            "weight": w,
        }
        for t, w in [(3, 0.5), (7, 0.25), (1, 0.25)]
    ] + [
        {
            "source": "file",
            "study": None,
            "trial": None,
            "path": "/teammate/predictions-devel.npz",
            "params": {},
            "devel_score": 0.38,
            "weight": 0.0,
        }
    ]
    manifest = {
        "name": name,
        "track": track,
        "metric": "mean_pearson" if track == "eri" else "macro_f1",
        "method": "greedy",
        "abaw_version": "0.1.0",
        "created": "2026-12-01T12:00:00Z",
        "members": members,
        "postprocess": {} if track == "eri" else {"kind": "gaussian", "width": 21},
        "scores": {
            "ensemble_devel": 0.452,
            "best_single_devel": 0.43,
            "best_single_member": f"{track}-fusion#3",
            "honest_ensemble": 0.441,
            "honest_best_single": 0.425,
        },
        "per_column": {},
        "test_keys_sha256": "0" * 64,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


STUDY_FIGURES = {"history", "importances", "intermediate", "slice", "per_column"}
TRACK_FIGURES = {"eri": {"scatter"}, "expr": {"confusion"}}


def _check_outputs(rep, expected: set[str]) -> str:
    assert set(rep.figures) == expected
    assert rep.html.is_file() and rep.html.stat().st_size > 0
    text = rep.html.read_text(encoding="utf-8")
    for name, path in rep.figures.items():
        assert path.parent == rep.html.parent
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), path
        assert path.name in text and f'id="fig-{name}"' in text
    assert text.count("data:image/png;base64,") == len(expected)
    assert "<script" not in text and "http://" not in text and "https://" not in text
    return text


def _decode_pngs(rep) -> None:
    import matplotlib.image as mpimg

    for path in rep.figures.values():
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
        assert img[..., :3].std() > 0.01, f"{path} is blank"


@pytest.mark.parametrize("track", ["eri", "expr"])
def test_study_report(tmp_path, track):
    runs = tmp_path / "runs"
    name = make_study(runs, track)
    rep = make_report(study=name, runs=runs, out=tmp_path / "report")
    text = _check_outputs(rep, STUDY_FIGURES | TRACK_FIGURES[track])
    _decode_pngs(rep)
    assert rep.notes == []
    assert "Leaderboard" in text and "training loss became NaN" in text
    col = EMOTIONS[0] if track == "eri" else CLASSES[0]
    assert f"<td>{col}</td>" in text


def test_ensemble_report(tmp_path):
    runs = tmp_path / "runs"
    for track in ("eri", "expr"):
        make_ensemble(runs, track, name=f"final-{track}")
        rep = make_report(ensemble=f"final-{track}", runs=runs)
        assert rep.html.parent == runs / "reports" / f"final-{track}"
        text = _check_outputs(rep, {"weights", "scores", "per_column"} | TRACK_FIGURES[track])
        _decode_pngs(rep)
        assert "honest estimate" in text and f"{track}-fusion#3" in text
        assert "teammate/predictions-devel" in text  # the file member's label


def test_small_study_gets_notes_not_a_crash(tmp_path):
    runs = tmp_path / "runs"
    name = make_study(runs, "eri", n_complete=1, n_pruned=1)
    rep = make_report(study=name, runs=runs)
    assert "importances" not in rep.figures and "history" in rep.figures
    assert any("at least 3 completed trials" in n for n in rep.notes)
    assert rep.html.read_text().count('class="note"') == len(rep.notes)


def test_study_with_no_kept_trial(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    storage = JournalStorage(JournalFileBackend(str(runs / "optuna-journal.log")))
    study = optuna.create_study(study_name="bare", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    rep = make_report(study=study, runs=runs)  # an open Study works too (abaw demo)
    assert {"history", "importances", "slice"} <= set(rep.figures)
    assert "per_column" not in rep.figures
    assert any("No kept trial" in n for n in rep.notes)


def test_slice_plot_shows_the_most_important_parameters(tmp_path):
    """With more searched parameters than panels, the slice plot keeps the most important
    ones (by the importances figure's own fANOVA) and a note names the ones left out."""
    runs = tmp_path / "runs"
    runs.mkdir()
    storage = JournalStorage(JournalFileBackend(str(runs / "optuna-journal.log")))
    study = optuna.create_study(
        study_name="wide",
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    names = [f"p{i:02d}" for i in range(14)]  # alphabetical order puts p13 last

    def objective(trial: optuna.Trial) -> float:
        xs = {n: trial.suggest_float(n, 0.0, 1.0) for n in names}
        return 3.0 * xs["p13"] + 0.01 * xs["p00"]

    study.optimize(objective, n_trials=24)
    rep = make_report(study=study, runs=runs)
    assert "slice" in rep.figures
    (note,) = [n for n in rep.notes if "slice plot shows" in n]
    assert "12 of the 14" in note
    left_out = note.split("left out: ")[1].rstrip(".").split(", ")
    assert len(left_out) == 2 and "p13" not in left_out


def test_unknown_names_are_one_sentence(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(AbawError, match="no study storage at"):
        make_report(study="x", runs=runs)
    make_study(runs, "eri", n_complete=1, n_pruned=0)
    with pytest.raises(AbawError, match=r"no study 'x'.*studies there: eri-demo"):
        make_report(study="x", runs=runs)
    make_ensemble(runs, "eri", name="a")
    with pytest.raises(AbawError, match=r"no ensemble 'b'.*ensembles in .*: a"):
        make_report(ensemble="b", runs=runs)
    journal = str(runs / "optuna-journal.log")
    assert make_report(study="eri-demo", storage=journal, out=tmp_path / "r2").html.is_file()
    with pytest.raises(AbawError, match="exactly one"):
        make_report(runs=runs)


def test_cli(tmp_path):
    runs = tmp_path / "runs"
    name = make_study(runs, "expr", n_complete=3, n_pruned=1)
    out = tmp_path / "rep"
    cmd = [sys.executable, "-m", "abaw", "report", "--study", name, "--runs", str(runs)]
    r = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "report.html").is_file() and "confusion.png" in r.stdout
    journal = str(runs / "optuna-journal.log")  # --storage may name the journal file itself
    r = subprocess.run(
        [*cmd[:4], "--study", "nope", "--storage", journal],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "no study 'nope'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("low, high", [(2e-4, 9e-4), (1e-5, 1e-2), (3e-4, 3.3e-4)])
def test_log_slice_panels_label_their_ticks(tmp_path, monkeypatch, low, high):
    """A log-scaled parameter gets at least two labelled ticks inside its panel, also when
    the searched range lies within one decade (a LogLocator then has no power of ten)."""
    import abaw.report.figures as F

    seen: dict[str, list[str]] = {}
    keep = F.save_png

    def grab(fig, path, **kw):
        fig.canvas.draw()
        ax = fig.axes[0]
        lo, hi = sorted(ax.get_xlim())
        seen["labels"] = [
            t.get_text()
            for t, x in zip(ax.get_xticklabels(), ax.xaxis.get_majorticklocs(), strict=True)
            if t.get_text() and lo <= x <= hi
        ]
        return keep(fig, path, **kw)

    monkeypatch.setattr(F, "save_png", grab)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("train.lr", low, high, log=True), n_trials=8)
    F.plot_slices(study.trials, ["train.lr"], "macro F1", tmp_path / "slice.png")
    assert len(seen["labels"]) >= 2, seen
