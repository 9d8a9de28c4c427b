"""The ERI track end to end on tiny synthetic data: task, loss, training, checkpoints, `abaw train`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from abaw.checkpoint import load_checkpoint, rebuild_model
from abaw.cli import main as cli_main
from abaw.eri import EMOTIONS
from abaw.eri.data import load_eri
from abaw.eri.models import FusionConfig, LstmConfig
from abaw.eri.synth import write_eri
from abaw.eri.track import TRACK, EriDataConfig, EriLossConfig, EriTask, gather_index
from abaw.errors import ConfigError
from abaw.predictions import Predictions
from abaw.track import get_track
from abaw.train import TrainConfig, fit, run_sections

CPU = torch.device("cpu")
PAPER = {"DeepSpectrum": "audio", "PosterV2-ViT": "visual"}
SMALL = {"eGeMAPS": "audio", "FAUs": "visual"}  # narrow feature sets: tiny data is learnable
SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eri-tiny")
    write_eri(out, scale="tiny", seed=0, layout="muse", features=[*PAPER, *SMALL])
    return out


@pytest.fixture(scope="module")
def data(root):
    return load_eri(root, {**PAPER, **SMALL}, n_jobs=1)


def _configs(
    model="fusion",
    *,
    modalities="AVI",
    train=None,
    loss=None,
    max_len=8,
    features=PAPER,
    embed_dim=16,
):
    if model == "fusion":
        mc = FusionConfig(modalities=modalities, embed_dim=embed_dim, tcn_levels=2)
    else:
        mc = LstmConfig(hidden=16)
    return {
        "data": EriDataConfig(features=dict(features), max_len=max_len),
        "model": mc,
        "loss": loss or EriLossConfig(),
        "train": train or TrainConfig(lr=1e-3, batch_size=16, epochs=3, ema_decay=0.9),
    }


def test_track_contract():
    assert get_track("eri") is TRACK
    assert TRACK.columns == EMOTIONS and TRACK.metric == "mean_pearson"
    assert TRACK.models() == ["fusion", "lstm", "pooled"]
    assert TRACK.sections("lstm")["model"] is LstmConfig
    with pytest.raises(ConfigError, match="unknown ERI model 'gru'"):
        TRACK.sections("gru")


def test_gather_index_first_and_even():
    offsets = np.array([0, 2, 8, 8])  # lengths 2, 6, 0
    index, valid = gather_index(offsets, 4, "first")
    assert index.tolist() == [[0, 1, -1, -1], [2, 3, 4, 5], [-1, -1, -1, -1]]
    assert valid.sum(1).tolist() == [2, 4, 0]
    index, _ = gather_index(offsets, 4, "even")
    assert index[1].tolist() == [2, 3, 5, 6]  # steps 0, 1, 3, 4 of 6: spread over the clip


def test_missing_modality_policy(data):
    task = EriTask(data, "fusion", _configs(), CPU)
    train_ids = set(task.ids[task.train_index.numpy()])
    lacking_visual = set(data.ids[data.missing("visual")])
    assert len(task.train_index) == len(data.indices("train")) - len(
        lacking_visual & set(data.ids[data.indices("train")])
    )
    assert not train_ids & lacking_visual and any("left out of training" in n for n in task.notes)
    # Audio-only: samples without video stay in training.
    audio_only = EriTask(data, "fusion", _configs(modalities="A"), CPU)
    assert len(audio_only.train_index) == len(data.indices("train"))
    # Every devel/test ID gets a finite prediction, including those missing a modality.
    model = task.build_model().eval()
    with torch.no_grad():
        for split in ("devel", "test"):
            p = task.predict(model, split)
            assert p.keys["id"].tolist() == data.ids[data.indices(split)].tolist()
            assert np.isfinite(p.values).all() and p.columns == EMOTIONS
    assert p.labels is None and task.predict(model, "devel").labels.shape == (
        len(data.indices("devel")),
        7,
    )


def test_batches_are_padded_and_masked(data):
    task = EriTask(data, "fusion", _configs(max_len=30), CPU)
    b = task.batch(torch.arange(4))
    assert b["audio"].shape == (4, 30, 1024) and b["visual"].shape == (4, 30, 1536)
    lengths = data.features["DeepSpectrum"].lengths[:4]
    assert b["audio_mask"].sum(1).tolist() == np.minimum(lengths, 30).tolist()
    assert (b["audio"][~b["audio_mask"]] == 0).all()
    first = data.features["DeepSpectrum"].values[: lengths[0]]
    np.testing.assert_array_equal(b["audio"][0, : lengths[0]].numpy(), first)
    batches = list(task.train_batches(epoch=1, generator=torch.Generator().manual_seed(0)))
    assert sum(len(x["labels"]) for x in batches) == len(task.train_index)


def test_loss_terms(data):
    def loss_of(**kw):
        task = EriTask(data, "fusion", _configs(loss=EriLossConfig(**kw)), CPU)
        torch.manual_seed(0)
        model = task.build_model().eval()
        b = task.batch(torch.arange(8))
        return task.loss(model, b), model(b), b["labels"]

    mse, (y, logits), t = loss_of(beta=0.0)
    torch.testing.assert_close(mse, F.mse_loss(y, t))  # beta = 0: pure MSE
    torch.testing.assert_close(loss_of(alpha=2.0, beta=0.0)[0], 2 * mse)
    top = (t >= 1 - 1e-6).float()
    ce = -(top / top.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(loss_of(beta=0.5)[0], mse + 0.5 * ce)
    bce = loss_of(beta=0.0, regression="bce")[0]
    torch.testing.assert_close(bce, F.binary_cross_entropy(y.clamp(1e-6, 1 - 1e-6), t))


def test_same_seed_same_weights(data):
    cfg = _configs(features=SMALL)
    w = []
    for _ in range(2):
        r = fit(
            EriTask(data, "fusion", cfg, CPU), cfg["train"], device=CPU, seed=3, show_progress=False
        )
        w.append(torch.cat([v.flatten().float() for v in r.model.state_dict().values()]))
    assert torch.equal(w[0], w[1])


@pytest.mark.parametrize(("model", "lr"), [("fusion", 1e-3), ("lstm", 1e-2)])
def test_tiny_training_improves_and_checkpoint_round_trips(data, tmp_path, model, lr):
    train = TrainConfig(lr=lr, batch_size=8, epochs=8, patience=0, ema_decay=0.8, scheduler="none")
    cfg = _configs(model, train=train, features=SMALL, embed_dim=32)
    task = EriTask(data, model, cfg, CPU)
    r = fit(task, train, device=CPU, seed=0, out_dir=tmp_path, show_progress=False)
    assert r.best_score > r.history[0]["score"] + 0.05
    ckpt = load_checkpoint(r.checkpoint)
    torch.load(r.checkpoint, weights_only=True)  # plain tensors and values only
    rebuilt = rebuild_model(ckpt)
    with torch.no_grad():
        again = task.predict(rebuilt, "devel")
    saved = Predictions.load(r.predictions["devel"])
    np.testing.assert_array_equal(again.values, saved.values)
    assert saved.meta["score"] == pytest.approx(r.best_score)
    assert task.score(saved).value == pytest.approx(r.best_score)


def test_cli_train_writes_run_folder(root, tmp_path, capsys):
    code = cli_main(
        [
            "train",
            "--sweep",
            str(SWEEPS / "eri-fusion.toml"),
            "--data",
            str(root),
            "--set",
            "train.epochs=2",
            "--set",
            "model.embed_dim=16",
            "--set",
            "data.max_len=8",
            "--device",
            "cpu",
            "--runs",
            str(tmp_path),
            "--name",
            "t1",
        ]
    )
    assert code == 0
    run = tmp_path / "train" / "t1"
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "metrics.json",
        "predictions-devel.npz",
        "predictions-test.npz",
    ]
    config = json.loads((run / "config.json").read_text())
    assert (
        config["settings"]["model"]["embed_dim"] == 16 and config["settings"]["train"]["lr"] == 1e-4
    )
    assert len(json.loads((run / "metrics.json").read_text())["history"]) == 2
    out = capsys.readouterr().out
    assert "Empathic-Pain" in out and "best devel mean_pearson" in out


def test_cli_train_lstm_sweep(root, tmp_path):
    code = cli_main(
        [
            "train",
            "--sweep",
            str(SWEEPS / "eri-lstm.toml"),
            "--data",
            str(root),
            "--set",
            "train.epochs=1",
            "--device",
            "cpu",
            "--runs",
            str(tmp_path),
            "--name",
            "lstm",
        ]
    )
    assert code == 0 and (tmp_path / "train" / "lstm" / "checkpoint.pt").is_file()


def test_cli_unknown_keys_name_the_file_and_key(root, tmp_path, capsys):
    sweep = SWEEPS / "eri-fusion.toml"
    code = cli_main(
        [
            "train",
            "--sweep",
            str(sweep),
            "--data",
            str(root),
            "--set",
            "model.embed_dims=16",
            "--runs",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 1 and "eri-fusion.toml" in err and "model.embed_dims" in err and "embed_dim" in err
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(sweep.read_text().replace('"train.lr" = 1e-4', '"train.learning_rate" = 1e-4'))
    code = cli_main(["train", "--sweep", str(bad), "--data", str(root), "--runs", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "bad.toml" in err and "train.learning_rate" in err
    assert not (tmp_path / "train").exists()


def test_variant_without_its_modality_is_a_config_error(data):
    cfg = _configs()
    cfg["data"] = EriDataConfig(features={"DeepSpectrum": "audio"})
    with pytest.raises(ConfigError, match="needs a visual feature set"):
        EriTask(data, "fusion", cfg, CPU)
    with pytest.raises(ValueError, match="audio' or 'visual"):
        EriDataConfig(features={"DeepSpectrum": "speech"})


def test_max_len_unset_is_chosen_from_the_data(data):
    cfg = _configs(max_len=None)
    task = EriTask(data, "fusion", cfg, CPU)
    lengths = np.concatenate([np.diff(np.asarray(data.features[f].offsets)) for f in sorted(PAPER)])
    expected = int(np.ceil(np.quantile(lengths[lengths > 0], 0.9)))
    assert task.max_len == expected and task.model_spec["seq_len"] == expected
    assert any(n.startswith(f"data.max_len = {expected}: the 90th percentile") for n in task.notes)
    # a fixed value is used as given, with no note
    fixed = EriTask(data, "fusion", _configs(max_len=5), CPU)
    assert fixed.max_len == 5 and not any("max_len" in n for n in fixed.notes)
    # another quantile gives another length
    low = EriTask(
        data, "fusion", dict(cfg, data=EriDataConfig(features=PAPER, max_len_quantile=0.1)), CPU
    )
    assert low.max_len == int(np.ceil(np.quantile(lengths[lengths > 0], 0.1))) < expected
    with pytest.raises(ValueError, match="max_len_quantile"):
        EriDataConfig(max_len_quantile=0.0)


def test_pooled_and_mean_readout_train_through_the_track(data):
    from abaw.eri.models import PooledConfig

    for model, mc in (
        ("pooled", PooledConfig(width=16)),
        ("fusion", FusionConfig(embed_dim=16, tcn_levels=2, readout="mean")),
    ):
        cfg = dict(_configs(), model=mc)
        task = EriTask(data, model, cfg, CPU)
        r = fit(task, cfg["train"], device=CPU, seed=0)
        assert np.isfinite(r.best_score)
        assert TRACK.build_model(task.model_spec) is not None


def test_shipped_eri_sweeps_build(data):
    from abaw.sweep import build_configs, load_sweep

    for name in ("eri-fusion", "eri-fusion-mean", "eri-pooled", "eri-lstm"):
        s = load_sweep(SWEEPS / f"{name}.toml")
        configs = build_configs(s.resolve(), run_sections(TRACK, s.model), where=name)
        assert configs["model"] is not None
    paper = build_configs(
        load_sweep(SWEEPS / "eri-fusion.toml").resolve(), run_sections(TRACK, "fusion"), where="p"
    )
    assert paper["model"].readout == "flatten" and paper["data"].max_len == 30
