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
from abaw.track import TRACKS, DataCache, PostProcessor, Task, Track, get_track, track_names
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


@pytest.fixture(scope="module")
def devel(case) -> Predictions:
    """Labelled devel predictions of an untrained model on the track's synthetic set."""
    _, track, data, model, configs = case
    task = track.prepare(data, model, configs, CPU)
    torch.manual_seed(0)
    net = task.build_model().eval()
    with torch.no_grad():
        return task.predict(net, "devel")


def test_ensemble_members_of_the_track(case):
    from abaw.ensemble import METHODS
    from abaw.ensemble.recipes import check_method

    _, track, *_ = case
    assert isinstance(track.title, str) and isinstance(track.score_label, str)
    assert isinstance(track.split_by, str) and track.split_by
    assert track.ensemble_methods and set(track.ensemble_methods) <= set(METHODS)
    for method in METHODS:
        if method in track.ensemble_methods:
            check_method(track, method)
        else:
            with pytest.raises(ConfigError, match=f"for {track.title}"):
                check_method(track, method)


def test_scorers_agree_with_the_metric(case, devel):
    _, track, data, model, configs = case
    labels = track.cast_labels(devel.labels)
    full = track.score_values(labels, devel.values, devel.columns)
    assert isinstance(full, Score) and set(full.per_column) == set(track.columns)
    assert track.scorer(labels)(devel.values) == pytest.approx(full.value, abs=1e-12)
    task = track.prepare(data, model, configs, CPU)
    assert full.value == pytest.approx(task.score(devel).value, abs=1e-9)
    assert track.column_scores(devel) == pytest.approx(full.per_column, abs=1e-12)
    unlabelled = Predictions(track.name, "devel", devel.keys, devel.values, devel.columns)
    assert track.column_scores(unlabelled) is None


def test_devel_halves_are_disjoint_and_cover_devel(case, devel):
    _, track, *_ = case
    halves = track.devel_halves(devel.keys, seed=0)
    assert len(halves) == 2 and all(len(h) > 0 for h in halves)
    assert np.array_equal(np.sort(np.concatenate(halves)), np.arange(len(devel)))
    again = track.devel_halves(devel.keys, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(halves, again, strict=True))
    if track.split_by in devel.keys:  # e.g. "video": no video on both sides
        col = devel.keys[track.split_by]
        assert not set(col[halves[0]]) & set(col[halves[1]])


def test_postprocessing_round_trips_through_its_manifest_entry(case, devel):
    _, track, *_ = case
    labels = track.cast_labels(devel.labels)
    post = track.postprocessor(columns=devel.columns, seed=0)
    assert isinstance(post, PostProcessor)
    assert post.fit(devel.values, labels, devel.keys) is post
    out = post.apply(devel.values, devel.keys)
    assert out.shape == devel.values.shape and np.isfinite(out).all()
    entry = json.loads(json.dumps(post.to_manifest()))  # plain JSON values
    assert entry == post.to_manifest()
    again = track.postprocessor(columns=devel.columns, seed=0).from_manifest(entry)
    assert np.array_equal(again.apply(devel.values, devel.keys), out)
    assert again.to_manifest() == entry
    clone = post.clone()  # unfitted, same settings: refitting gives the same choices
    assert clone.fit(devel.values, labels, devel.keys).to_manifest() == entry


def test_report_figures_of_the_track(case, devel, tmp_path):
    _, track, *_ = case
    figures = track.report_figures(devel, tmp_path, what="contract")
    assert "per_column" in figures and len(figures) >= 2
    for path in figures.values():
        assert path.parent == tmp_path and path.read_bytes().startswith(b"\x89PNG")


def test_package_exports_are_lazy_and_resolve():
    import subprocess
    import sys

    import abaw

    for name in abaw.__all__:
        assert getattr(abaw, name) is not None
    code = "import sys, abaw; print('torch' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"], "import abaw must stay cheap"
