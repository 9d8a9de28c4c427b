"""The shared trainer, on a tiny track-agnostic regression task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from abaw.checkpoint import load_checkpoint
from abaw.ema import ModelEma
from abaw.errors import ConfigError, DataError
from abaw.metrics import Score, mean_pearson
from abaw.predictions import Predictions
from abaw.train import FitResult, TrainConfig, TrainingDiverged, fit, resolve_device

CPU = torch.device("cpu")


class ToyTask:
    """y = X w + noise; score = Pearson on devel, or a scripted sequence of scores."""

    track = "toy"
    metric = "pearson"

    def __init__(self, scripted: list[float] | None = None, lr_blowup: bool = False) -> None:
        g = np.random.default_rng(0)
        self.x = {
            s: torch.from_numpy(g.normal(size=(n, 4)).astype(np.float32))
            for s, n in (("train", 64), ("devel", 32), ("test", 8))
        }
        w = torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
        self.y = {
            s: x @ w + 0.1 * torch.from_numpy(g.normal(size=(len(x), 1)).astype(np.float32))
            for s, x in self.x.items()
        }
        self.scripted = list(scripted) if scripted is not None else None
        self.calls = 0
        self.lr_blowup = lr_blowup
        self.model_spec = None
        self.notes: list[str] = []

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))

    def train_batches(self, *, epoch, generator):
        order = torch.randperm(64, generator=generator)
        for s in range(0, 64, 16):
            i = order[s : s + 16]
            yield {"x": self.x["train"][i], "y": self.y["train"][i]}

    def loss(self, model, batch):
        loss = nn.functional.mse_loss(model(batch["x"]), batch["y"])
        return loss * float("inf") if self.lr_blowup else loss

    def predict(self, model, split):
        v = model(self.x[split]).numpy()
        n = len(v)
        return Predictions(
            "toy",
            split,
            {"id": np.arange(n)},
            v,
            ("y",),
            self.y[split].numpy() if split == "devel" else None,
        )

    def summary(self, p):
        return []

    def score(self, p):
        if self.scripted is not None:
            self.calls += 1
            v = self.scripted[self.calls - 1]
            return Score(v, {"y": v})
        return mean_pearson(p.labels, p.values, ["y"])


def _cfg(**kw) -> TrainConfig:
    base = dict(lr=1e-2, epochs=8, batch_size=16, patience=0, ema=False, scheduler="none")
    base.update(kw)
    return TrainConfig(**base)


def test_fit_learns_and_returns_best_epoch():
    r = fit(ToyTask(), _cfg(epochs=20), device=CPU, show_progress=False)
    assert isinstance(r, FitResult)
    assert r.history[-1]["score"] > r.history[0]["score"] and r.best_score > 0.9
    assert r.best_score == max(h["score"] for h in r.history)
    assert r.history[r.best_epoch - 1]["score"] == r.best_score
    assert not r.model.training


def test_early_stopping_after_patience_with_scripted_metric():
    scores = [0.1, 0.5, 0.4, 0.5, 0.3, 0.9, 0.95, 0.99]
    r = fit(ToyTask(scripted=scores), _cfg(patience=3), device=CPU, show_progress=False)
    # Best at epoch 2; epochs 3, 4, 5 do not beat it (a tie is no improvement) -> stop after 5.
    assert len(r.history) == 5 and r.best_epoch == 2 and r.best_score == 0.5
    r = fit(ToyTask(scripted=scores), _cfg(patience=0), device=CPU, show_progress=False)
    assert len(r.history) == 8 and r.best_epoch == 8


def test_best_epoch_weights_are_restored():
    task = ToyTask(scripted=[0.9] + [0.1] * 5)
    r = fit(task, _cfg(epochs=6), device=CPU, show_progress=False)
    # Re-run only one epoch with the same seed: identical weights to what fit kept.
    one = fit(ToyTask(scripted=[0.9]), _cfg(epochs=1), device=CPU, show_progress=False)
    for a, b in zip(r.model.state_dict().values(), one.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_same_seed_identical_weights_other_seed_differs():
    runs = [
        fit(ToyTask(), _cfg(epochs=3, ema=True), device=CPU, seed=s, show_progress=False)
        for s in (1, 1, 2)
    ]
    w = [torch.cat([p.flatten() for p in r.model.state_dict().values()]) for r in runs]
    assert torch.equal(w[0], w[1])
    assert not torch.equal(w[0], w[2])


def test_ema_update_matches_hand_computation():
    model = nn.Linear(2, 1, bias=True)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.fill_(0.0)
    ema = ModelEma(model, decay=0.9)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, -2.0]]))
        model.bias.fill_(1.0)
    ema.update(model)  # 0.9 * old + 0.1 * new
    torch.testing.assert_close(ema.module.weight, torch.tensor([[1.2, 1.6]]))
    torch.testing.assert_close(ema.module.bias, torch.tensor([0.1]))
    ema.update(model)  # 0.9 * [1.2, 1.6] + 0.1 * [3, -2] = [1.38, 1.24]
    torch.testing.assert_close(ema.module.weight, torch.tensor([[1.38, 1.24]]))
    assert not ema.module.weight.requires_grad
    with pytest.raises(ValueError):
        ModelEma(model, decay=1.0)


def test_ema_model_is_what_gets_evaluated():
    """With EMA on, the returned weights are the average, not the last raw weights."""
    r_ema = fit(
        ToyTask(scripted=[0.0] * 3 + [1.0]),
        _cfg(epochs=4, ema=True, ema_decay=0.5),
        device=CPU,
        show_progress=False,
    )
    r_raw = fit(
        ToyTask(scripted=[0.0] * 3 + [1.0]),
        _cfg(epochs=4, ema=False),
        device=CPU,
        show_progress=False,
    )
    a = torch.cat([p.flatten() for p in r_ema.model.parameters()])
    b = torch.cat([p.flatten() for p in r_raw.model.parameters()])
    assert not torch.allclose(a, b)


def test_step_scheduler_halves_lr():
    r = fit(
        ToyTask(),
        _cfg(epochs=5, scheduler="step", step_size=2, gamma=0.5),
        device=CPU,
        show_progress=False,
    )
    assert [h["lr"] for h in r.history] == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3])


def test_callback_sees_each_epoch_and_its_exception_propagates(tmp_path):
    seen = []

    class Prune(Exception):
        pass

    def cb(epoch, value):
        seen.append((epoch, value))
        if epoch == 2:
            raise Prune

    with pytest.raises(Prune):
        fit(
            ToyTask(),
            _cfg(),
            device=CPU,
            callback=cb,
            out_dir=tmp_path / "run",
            show_progress=False,
        )
    assert [e for e, _ in seen] == [1, 2]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_divergence_is_a_clear_error():
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        fit(ToyTask(lr_blowup=True), _cfg(), device=CPU, show_progress=False)


def test_run_folder_files(tmp_path):
    r = fit(
        ToyTask(),
        _cfg(epochs=3),
        device=CPU,
        out_dir=tmp_path,
        config={"note": "x"},
        show_progress=False,
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "checkpoint.pt",
        "config.json",
        "metrics.json",
        "predictions-devel.npz",
        "predictions-test.npz",
    ]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best_epoch"] == r.best_epoch and len(metrics["history"]) == 3
    assert json.loads((tmp_path / "config.json").read_text()) == {"note": "x"}
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["track"] == "toy" and ckpt["config"] == {"note": "x"}
    for k, v in r.model.state_dict().items():
        torch.testing.assert_close(ckpt["state_dict"][k], v)
    devel = Predictions.load(r.predictions["devel"])
    assert devel.meta["best_epoch"] == r.best_epoch and devel.labels is not None
    assert len(Predictions.load(r.predictions["test"])) == 8


def test_load_checkpoint_rejects_foreign_files(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="x.pt"):
        load_checkpoint(bad)
    torch.save({"weights": torch.zeros(1)}, bad)
    with pytest.raises(DataError, match="not an abaw checkpoint"):
        load_checkpoint(bad)


def test_config_and_device_errors():
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="--device 'tpu9'"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_never_finite_metric_is_a_clear_error():
    with pytest.raises(TrainingDiverged, match="never finite"):
        fit(ToyTask(scripted=[float("nan")] * 2), _cfg(epochs=2), device=CPU, show_progress=False)
    r = fit(
        ToyTask(scripted=[float("nan"), 0.2, 0.1]), _cfg(epochs=3), device=CPU, show_progress=False
    )
    assert r.best_epoch == 2


def test_plain_line_per_epoch_when_not_a_terminal(capsys):
    fit(ToyTask(), _cfg(epochs=3), device=CPU)  # pytest's captured stderr is not a terminal
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/3", "2/3", "3/3"]
    assert all(
        "loss " in ln and "pearson " in ln and "best " in ln and ln.endswith(" s") for ln in lines
    )
    fit(ToyTask(), _cfg(epochs=2), device=CPU, show_progress=False)
    assert "epoch 1/2" not in capsys.readouterr().out  # an explicit choice turns the lines off


def test_metrics_json_is_written_last_and_marks_the_run_complete(tmp_path, monkeypatch):
    import abaw.train as train

    fit(ToyTask(), _cfg(epochs=2), device=CPU, out_dir=tmp_path / "ok", show_progress=False)
    assert train.is_complete(tmp_path / "ok")

    def killed(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(train, "save_checkpoint", killed)
    with pytest.raises(OSError):
        fit(ToyTask(), _cfg(epochs=2), device=CPU, out_dir=tmp_path / "ok", show_progress=False)
    assert not train.is_complete(tmp_path / "ok"), "a rerun that died must not look complete"


def test_test_predictions_are_optional(tmp_path):
    r = fit(
        ToyTask(),
        _cfg(epochs=2),
        device=CPU,
        out_dir=tmp_path,
        predict_test=False,
        show_progress=False,
    )
    assert sorted(r.predictions) == ["devel"] and not (tmp_path / "predictions-test.npz").exists()
    assert r.devel is not None and r.devel.labels is not None


def test_set_threads_fair_share(monkeypatch):
    from abaw.train import cpu_count, set_threads

    monkeypatch.delenv("ABAW_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert set_threads(jobs=10**6) == 1
        assert set_threads(jobs=1) == cpu_count()
        assert set_threads(threads=1) == 1
        monkeypatch.setenv("ABAW_THREADS", "1")
        assert set_threads(jobs=1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("ABAW_THREADS", "two")
        with pytest.raises(ConfigError, match="ABAW_THREADS"):
            set_threads()
    finally:
        torch.set_num_threads(before)


def test_set_error_names_only_the_faulting_key(tmp_path):
    from abaw.eri.track import TRACK
    from abaw.sweep import build_configs, load_sweep
    from abaw.train import run_sections

    sweep = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "eri-fusion.toml")
    overrides = {"train.lr": 3e-4, "model.embed_dims": 128, "train.epochs": 5}
    with pytest.raises(ConfigError) as e:
        build_configs(
            sweep.resolve(overrides=overrides),
            run_sections(TRACK, "fusion"),
            where=str(sweep.path),
            overridden=overrides,
        )
    msg = str(e.value)
    assert "(with --set model.embed_dims): unknown key 'model.embed_dims'" in msg
    assert "train.lr" not in msg and "train.epochs" not in msg
