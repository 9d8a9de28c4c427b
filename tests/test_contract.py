"""Every registered Track and its Task satisfy the protocol (one test set, run over both tracks).

As Optuna runs its storage tests over every storage, these run over every entry
of `abaw.track.TRACKS`: a new track is done when it passes them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from abaw.cli import TRACK_CHOICES
from abaw.errors import ConfigError
from abaw.findings import InspectReport
from abaw.metrics import Score
from abaw.predictions import Predictions
from abaw.sweep import build_configs, load_sweep
from abaw.track import TRACKS, DataCache, Task, Track, get_track, track_names
from abaw.train import TrainConfig, run_sections

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
# One shipped sweep per track, shrunk to tiny sizes.
CASES = {
    "eri": ("eri-lstm.toml", {"model.hidden": 8, "train.batch_size": 16}),
    "expr": (
        "expr-fusion.toml",
        {"data.window": 16, "model.head_dim": 8, "model.mlp_dim": 16, "train.batch_size": 8},
    ),
}


def test_one_registry_feeds_cli_sweeps_and_get_track(tmp_path):
    assert tuple(TRACKS) == track_names() == TRACK_CHOICES == tuple(CASES)
    bad = tmp_path / "x.toml"
    bad.write_text('[study]\ntrack = "video"\nmodel = "m"\n')
    with pytest.raises(ConfigError, match=r"track must be one of \('eri', 'expr'\)"):
        load_sweep(bad)
    with pytest.raises(ConfigError, match="unknown track 'video'"):
        get_track("video")


@pytest.fixture(scope="module", params=sorted(TRACKS))
def case(request, tmp_path_factory):
    name = request.param
    track = get_track(name)
    out = tmp_path_factory.mktemp(name) / "data"
    oracle = track.synth(out, scale="tiny")
    assert json.loads((out / "oracle.json").read_text()) == json.loads(json.dumps(oracle))
    sweep_file, overrides = CASES[name]
    sweep = load_sweep(REPO / "sweeps" / sweep_file)
    configs = build_configs(sweep.resolve(overrides=overrides), run_sections(track, sweep.model))
    return name, track, out, sweep.model, configs


def test_track_satisfies_the_protocol(case):
    name, track, _, model, _ = case
    assert isinstance(track, Track)
    assert track.name == name and isinstance(track.metric, str)
    assert isinstance(track.columns, tuple) and track.columns
    assert isinstance(track.keys, tuple) and track.keys
    assert model in track.models()
    for m in track.models():
        sections = track.sections(m)
        assert "train" not in sections, "the trainer adds its own train section"
        assert all(dataclasses.is_dataclass(c) for c in sections.values())
        assert run_sections(track, m)["train"] is TrainConfig


def test_synth_and_inspect_through_the_track(case):
    _, track, data, _, _ = case
    report = track.inspect(data)
    assert isinstance(report, InspectReport) and report.problems == []


def test_data_key_and_cache(case):
    _, track, data, model, configs = case
    key = track.data_key(model, configs)
    assert hash(key) == hash(track.data_key(model, dict(configs)))
    cache = DataCache()
    task, _ = cache.prepare(track, data, model, configs, CPU)
    again, _ = cache.prepare(track, data, model, configs, CPU)
    assert (cache.loads, cache.hits) == (1, 1) and again is not task


def test_task_satisfies_the_protocol(case):
    name, track, data, model, configs = case
    task = track.prepare(data, model, configs, CPU, data=track.load_data(data, model, configs))
    assert isinstance(task, Task)
    assert task.track == name and task.metric == track.metric
    assert isinstance(task.notes, list) and isinstance(task.model_spec, dict)
    net = task.build_model()
    batch = next(iter(task.train_batches(epoch=1, generator=torch.Generator().manual_seed(0))))
    loss = task.loss(net, batch)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    net.eval()
    with torch.no_grad():
        devel, test = task.predict(net, "devel"), task.predict(net, "test")
    for pred, split in ((devel, "devel"), (test, "test")):
        assert isinstance(pred, Predictions) and pred.split == split and pred.track == name
        assert pred.columns == track.columns and len(pred) > 0
        assert tuple(pred.keys) == track.keys  # what the ensembler aligns members on
        assert np.isfinite(pred.values).all()
    assert devel.labels is not None and test.labels is None
    score = task.score(devel)
    assert isinstance(score, Score) and set(score.per_column) == set(track.columns)
    assert isinstance(task.summary(devel), list)
    rebuilt = track.build_model(task.model_spec)
    rebuilt.load_state_dict(net.state_dict())  # same architecture from the plain spec


def test_package_exports_are_lazy_and_resolve():
    import subprocess
    import sys

    import abaw

    for name in abaw.__all__:
        assert getattr(abaw, name) is not None
    code = "import sys, abaw; print('torch' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"], "import abaw must stay cheap"
