"""`abaw ensemble`: members from real Optuna studies and from files, methods, honesty, streaming."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import numpy as np
import pytest
from _ens_helpers import (
    eri_labels,
    eri_member,
    expr_labels,
    expr_pair,
    make_study,
    write_member,
)

from abaw.cli import main as cli
from abaw.ensemble import (
    build_ensemble,
    collect_members,
    greedy_counts,
    load_ensemble,
    prediction_files,
)
from abaw.eri import EMOTIONS
from abaw.errors import AbawError, ConfigError
from abaw.expr.postprocess import checked_offsets, fit_offsets
from abaw.metrics import mean_pearson
from abaw.predictions import Predictions
from abaw.track import get_track

IDS_DEV = np.array([f"[{i:05d}]" for i in range(240)])
IDS_TEST = np.array([f"[{i:05d}]" for i in range(240, 340)])
Y = eri_labels(240, 1)


def eri_members(n, noise0=0.2):
    return [eri_member(s, IDS_DEV, Y, IDS_TEST, noise=noise0 + 0.05 * s) for s in range(n)]


@pytest.fixture
def eri_runs(tmp_path) -> Path:
    runs = tmp_path / "runs"
    ms = eri_members(6)
    make_study(runs, "a", "eri", ms[:3])
    make_study(runs, "b", "eri", ms[3:], keep=2)  # trial 2 of b is not kept
    return runs


def test_members_from_two_studies_top_k_best_first(eri_runs):
    mem = collect_members("eri", ["a", "b"], top_k=2, runs=eri_runs)
    assert [m.name for m in mem] == ["a#0", "a#1", "b#0", "b#1"]
    assert all(m.source == "study" and "lr" in m.params for m in mem)
    assert all(abs(m.value - mean_pearson(Y, m.devel.values).value) < 1e-9 for m in mem)
    mem = collect_members("eri", ["b"], top_k=5, runs=eri_runs)
    assert [m.trial for m in mem] == [0, 1]  # the unkept trial never joins


def test_manifest_contract_b_and_files(eri_runs):
    res = build_ensemble("eri", name="fin", studies=["a", "b"], runs=eri_runs, method="greedy")
    d = eri_runs / "ensembles" / "fin"
    assert sorted(p.name for p in d.iterdir()) == [
        "manifest.json",
        "predictions-devel.npz",
        "predictions-test.npz",
    ]
    man = json.loads((d / "manifest.json").read_text())
    for k in ("name", "track", "metric", "method", "abaw_version", "created", "members"):
        assert k in man
    assert man["postprocess"] == {} and set(man["per_column"]) == set(EMOTIONS)
    assert {
        "ensemble_devel",
        "best_single_devel",
        "best_single_member",
        "honest_ensemble",
        "honest_best_single",
    } <= set(man["scores"])
    for e in man["members"]:
        assert {"source", "study", "trial", "path", "params", "devel_score", "weight"} <= set(e)
    assert abs(sum(e["weight"] for e in man["members"]) - 1) < 1e-9
    m2, dev, test = load_ensemble("fin", eri_runs)
    assert m2 == man and len(test) == len(IDS_TEST) and dev.labels is not None
    assert len(man["test_keys_sha256"]) == 64
    assert res.manifest["scores"]["ensemble_devel"] >= res.manifest["scores"]["best_single_devel"]


def test_mean_test_side_is_the_average_of_members(tmp_path):
    ms = eri_members(3)
    folders = [write_member(tmp_path / f"m{i}", d, t) for i, (d, t) in enumerate(ms)]
    res = build_ensemble(
        "eri", name="m", predictions=folders, method="mean", runs=tmp_path / "runs"
    )
    want = np.clip(np.mean([t.values for _, t in ms], axis=0), 0, 1)
    assert np.allclose(res.test.values, want, atol=1e-6)
    assert [e["weight"] for e in res.manifest["members"]] == pytest.approx([1 / 3] * 3)


def test_greedy_drops_a_useless_member_and_honest_gain(tmp_path):
    ms = eri_members(3)
    rng = np.random.default_rng(5)
    junk = Predictions("eri", "devel", {"id": IDS_DEV}, rng.random((240, 7)), EMOTIONS, Y)
    junk_t = Predictions("eri", "test", {"id": IDS_TEST}, rng.random((100, 7)), EMOTIONS)
    folders = [write_member(tmp_path / f"m{i}", d, t) for i, (d, t) in enumerate(ms)]
    folders.append(write_member(tmp_path / "junk", junk, junk_t))
    res = build_ensemble("eri", name="g", predictions=folders, runs=tmp_path / "runs")
    w = [e["weight"] for e in res.manifest["members"]]
    assert w[3] == 0 and w[0] > 0
    sc = res.manifest["scores"]
    assert sc["honest_ensemble"] > sc["honest_best_single"]
    assert sc["honest_ensemble"] <= sc["ensemble_devel"] + 0.02


def test_greedy_counts_best_prefix_and_init():
    y = np.random.default_rng(0).random((100, 2))
    good = y + 0.01
    bad = np.random.default_rng(1).random((100, 2))

    def score(v):
        return mean_pearson(y, v).value

    counts = greedy_counts([bad, good], score, n_init=1, steps=5)
    assert counts[0] == 0 and counts[1] >= 1  # the prefix that adds `bad` is never best
    counts = greedy_counts([bad, good], score, n_init=2, steps=0)
    assert counts.tolist() in ([1.0, 1.0], [0.0, 1.0])


def test_stack_used_when_it_helps_else_greedy(tmp_path):
    # member 0 knows emotions 0-3, member 1 emotions 4-6: per-emotion weights beat any one mix.
    rng = np.random.default_rng(0)
    n = len(IDS_DEV)
    a = np.where(np.arange(7) < 4, Y, rng.random((n, 7)))
    b = np.where(np.arange(7) >= 4, Y, rng.random((n, 7)))
    folders = []
    for i, v in enumerate((a, b)):
        dev = Predictions("eri", "devel", {"id": IDS_DEV}, v, EMOTIONS, Y)
        test = Predictions("eri", "test", {"id": IDS_TEST}, rng.random((100, 7)), EMOTIONS)
        folders.append(write_member(tmp_path / f"s{i}", dev, test))
    res = build_ensemble("eri", name="s", predictions=folders, method="stack", runs=tmp_path / "r")
    assert res.manifest["method_used"] == "stack"
    assert "column_weights" in res.manifest["members"][0] and "intercept" in res.manifest
    assert ((res.test.values >= 0) & (res.test.values <= 1)).all()
    same = [write_member(tmp_path / "t0", *eri_members(1)[0])]
    res = build_ensemble("eri", name="t", predictions=same, method="stack", runs=tmp_path / "r")
    assert res.manifest["method_used"] == "greedy"
    assert any("fell back to greedy" in n for n in res.manifest["notes"])


def test_stack_is_eri_only(tmp_path):
    with pytest.raises(ConfigError, match="ERI"):
        build_ensemble("expr", name="x", predictions=[tmp_path], method="stack", runs=tmp_path)


def expr_members(n):
    dk, tk = expr_labels(8, 200, 1), expr_labels(3, 150, 2)
    return [expr_pair(s, dk, tk) for s in range(n)]


def test_expr_postprocessing_chosen_on_devel(tmp_path):
    runs = tmp_path / "runs"
    ms = expr_members(4)
    make_study(runs, "x", "expr", ms[:2])
    make_study(runs, "y", "expr", ms[2:])
    res = build_ensemble("expr", name="e", studies=["x", "y"], runs=runs)
    pp = res.manifest["postprocess"]
    assert pp["smoothing"]["kind"] in ("moving", "gaussian") and pp["smoothing"]["width"] > 1
    assert pp["class_offsets"]["Neutral"] < 0  # removes the members' bias towards Neutral
    sc = res.manifest["scores"]
    assert sc["honest_ensemble"] > sc["honest_best_single"]
    assert np.allclose(res.test.values.sum(1), 1, atol=1e-4)
    plain = build_ensemble("expr", name="p", studies=["x", "y"], runs=runs, post=False, write=False)
    assert plain.manifest["postprocess"]["smoothing"]["kind"] == "none"
    assert sc["ensemble_devel"] > plain.manifest["scores"]["ensemble_devel"]


def test_fit_offsets_fixes_a_biased_classifier():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 2000)
    z = 2.0 * np.eye(8)[y] + rng.standard_normal((2000, 8))
    z[:, 7] += 2.5
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    b = fit_offsets(p, y)
    assert b[7] < -1


def test_devel_halves_by_video_are_disjoint():
    video, frame, _ = expr_labels(6, 50, 0)
    a, b = get_track("expr").devel_halves({"video": video, "frame": frame})
    assert not set(video[a]) & set(video[b]) and len(a) + len(b) == len(video)
    a, b = get_track("eri").devel_halves({"id": IDS_DEV})
    assert not set(a) & set(b) and len(a) + len(b) == len(IDS_DEV)


def test_rows_aligned_by_key_whatever_the_order(tmp_path):
    (d0, t0), (d1, t1) = eri_members(2)
    perm = np.random.default_rng(0).permutation(len(IDS_DEV))
    d1s = Predictions(
        "eri", "devel", {"id": d1.keys["id"][perm]}, d1.values[perm], EMOTIONS, Y[perm]
    )
    tp = np.random.default_rng(1).permutation(len(IDS_TEST))
    t1s = Predictions("eri", "test", {"id": t1.keys["id"][tp]}, t1.values[tp], EMOTIONS)
    f = [write_member(tmp_path / "a", d0, t0), write_member(tmp_path / "b", d1s, t1s)]
    res = build_ensemble("eri", name="o", predictions=f, method="mean", runs=tmp_path / "r")
    want = np.clip((t0.values + t1.values) / 2, 0, 1)
    assert np.allclose(res.test.values, want, atol=1e-6)


@pytest.mark.parametrize(
    "break_it,needle",
    [
        (
            lambda d, t: (
                Predictions(
                    "eri", "devel", {"id": d.keys["id"][:-1]}, d.values[:-1], EMOTIONS, Y[:-1]
                ),
                t,
            ),
            "missing",
        ),
        (
            lambda d, t: (
                Predictions(
                    "eri", "devel", {"id": np.char.add(d.keys["id"], "x")}, d.values, EMOTIONS, Y
                ),
                t,
            ),
            "not among",
        ),
        (
            lambda d, t: (
                Predictions("eri", "devel", d.keys, d.values[:, :6], EMOTIONS[:6], Y[:, :6]),
                t,
            ),
            "columns",
        ),
        (
            lambda d, t: (Predictions("eri", "test", d.keys, d.values, EMOTIONS, Y), t),
            "holds 'test'",
        ),
        (
            lambda d, t: (Predictions("eri", "devel", d.keys, d.values, EMOTIONS, 1 - Y), t),
            "labels differ",
        ),
        (
            lambda d, t: (
                d,
                Predictions("eri", "test", {"id": t.keys["id"][:-2]}, t.values[:-2], EMOTIONS),
            ),
            "missing",
        ),
    ],
    ids=["fewer rows", "other keys", "other columns", "wrong split", "other labels", "test rows"],
)
def test_members_that_disagree_are_refused(tmp_path, break_it, needle):
    (d0, t0), (d1, t1) = eri_members(2)
    f = [write_member(tmp_path / "a", d0, t0), write_member(tmp_path / "b", *break_it(d1, t1))]
    with pytest.raises(AbawError, match=needle):
        build_ensemble("eri", name="z", predictions=f, method="mean", runs=tmp_path / "r")
    assert not (tmp_path / "r" / "ensembles" / "z").exists()


def test_align_to_names_the_first_repeated_row():
    from abaw.ensemble import align_to

    ref = {"id": np.array(["a", "b", "c", "d"])}

    def pred(ids):
        return Predictions("eri", "devel", {"id": np.array(ids)}, np.zeros((4, 7)), EMOTIONS)

    with pytest.raises(AbawError, match="m: row b appears twice"):
        align_to(pred(["b", "a", "b", "a"]), ref, "m")
    with pytest.raises(AbawError, match="first member lists row a twice"):
        align_to(pred(["a", "b", "c", "d"]), {"id": np.array(["a", "b", "a", "d"])}, "m")
    with pytest.raises(AbawError, match=r"m: row x is not among .* \(2 such rows\)"):
        align_to(pred(["x", "a", "y", "b"]), ref, "m")
    out = align_to(pred(["d", "c", "b", "a"]), ref, "m")
    assert out.keys["id"].tolist() == ["a", "b", "c", "d"]


def test_member_files_and_missing_test_file(tmp_path):
    (d0, t0), _ = eri_members(2)
    d0.save(tmp_path / "mine-devel.npz")
    with pytest.raises(AbawError, match="not found"):
        prediction_files(tmp_path / "mine-devel.npz")
    t0.save(tmp_path / "mine-test.npz")
    assert prediction_files(tmp_path / "mine-devel.npz")[1].name == "mine-test.npz"
    with pytest.raises(AbawError, match="'devel' in its name"):
        prediction_files(tmp_path / "mine-test.npz")
    with pytest.raises(AbawError, match="not found"):
        prediction_files(tmp_path / "no-such-folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AbawError, match="predictions-devel.npz.*not found"):
        prediction_files(tmp_path / "empty")


def test_track_mismatch_and_unknown_study(eri_runs):
    with pytest.raises(AbawError, match="track 'eri'"):
        collect_members("expr", ["a"], runs=eri_runs)
    with pytest.raises(AbawError, match="studies there: a, b"):
        collect_members("eri", ["nope"], runs=eri_runs)


def test_test_side_streamed_one_member_at_a_time(tmp_path):
    ms = eri_members(4)
    folders = [write_member(tmp_path / f"m{i}", d, t) for i, (d, t) in enumerate(ms)]
    members = collect_members("eri", files=folders)
    alive: list[weakref.ref] = []
    peak = [0]
    for m in members:
        orig = m.load_test

        def load(orig=orig):
            gc.collect()
            peak[0] = max(peak[0], sum(r() is not None for r in alive) + 1)
            p = orig()
            alive.append(weakref.ref(p.values))
            return p

        m.load_test = load
    build_ensemble("eri", name="s", members=members, method="mean", runs=tmp_path / "r")
    assert peak[0] == 1 and len(alive) == 4


def test_overwrite_needs_force(eri_runs):
    build_ensemble("eri", name="f", studies=["a"], runs=eri_runs, method="mean")
    with pytest.raises(AbawError, match="--force"):
        build_ensemble("eri", name="f", studies=["a"], runs=eri_runs, method="mean")
    res = build_ensemble("eri", name="f", studies=["b"], runs=eri_runs, method="mean", force=True)
    assert {e["study"] for e in res.manifest["members"]} == {"b"}
    with pytest.raises(ConfigError):
        build_ensemble("eri", name="../x", studies=["a"], runs=eri_runs)
    with pytest.raises(ConfigError, match="top-k"):
        build_ensemble("eri", name="k", studies=["a"], runs=eri_runs, top_k=0)


def test_cli_ensemble_prints_table(eri_runs, capsys):
    argv = [
        "ensemble",
        "--track",
        "eri",
        "--studies",
        "a,b",
        "--top-k",
        "2",
        "--runs",
        str(eri_runs),
    ]
    assert cli([*argv, "--name", "c"]) == 0
    out = capsys.readouterr().out
    assert "a#0" in out and "honest gain" in out and "best single" in out
    assert cli([*argv, "--name", "c"]) == 1
    assert "--force" in capsys.readouterr().err


def test_load_lean_equals_load_and_smoothing_any_order(tmp_path):
    from abaw.ensemble import keys_sha256, load_lean
    from abaw.expr.smoothing import smooth_by_video, smooth_predictions

    dk = expr_labels(3, 20000, 0)  # large enough for memory-mapped arrays
    dev, _ = expr_pair(0, dk, dk)
    path = dev.save(tmp_path / "p.npz")
    lean, full = load_lean(path), Predictions.load(path)
    assert not lean.values.flags.writeable and full.values.flags.writeable  # mapped read-only
    for k in full.keys:
        assert np.array_equal(lean.keys[k], full.keys[k])
    assert np.array_equal(lean.values, full.values) and np.array_equal(lean.labels, full.labels)
    assert keys_sha256(lean.keys, chunk=1000) == keys_sha256(full.keys)
    ref = smooth_predictions(full, kind="gaussian", width=9).values
    assert np.allclose(smooth_by_video(full.values, *dk[:2], "gaussian", 9), ref, atol=1e-6)
    perm = np.random.default_rng(0).permutation(len(full))
    out = smooth_by_video(full.values[perm], dk[0][perm], dk[1][perm], "gaussian", 9)
    assert np.allclose(out, ref[perm], atol=1e-6)


def test_quality_benchmark_script_on_hand_built_studies(eri_runs, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ensemble_quality.py"
    spec = importlib.util.spec_from_file_location("ensemble_quality", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--track", "eri", "--studies", "a,b", "--runs", str(eri_runs), "--top-k", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("| yes |") == 3 and "| stack (" in out
    assert not (eri_runs / "ensembles").exists()  # nothing written without --write


def test_studies_across_two_storages(tmp_path):
    """A journal-file study and an RDB (sqlite) study in one ensemble (--storage repeatable)."""
    import optuna

    from abaw import trials as T

    runs = tmp_path / "runs"
    ms = eri_members(4)
    make_study(runs, "local", "eri", ms[:2])
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study = optuna.create_study(study_name="remote", storage=url, direction="maximize")
    store = T.artifact_store(tmp_path / "art")
    study.set_user_attr(T.STUDY_TRACK, "eri")
    study.set_user_attr(T.STUDY_ARTIFACTS, str(tmp_path / "art"))
    from optuna.artifacts import upload_artifact

    for dev, test in ms[2:]:
        trial = study.ask()
        for split, p in (("devel", dev), ("test", test)):
            path = p.save(tmp_path / f"{trial.number}-{split}.npz")
            trial.set_user_attr(
                T.predictions_attr(split),
                upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial),
            )
        trial.set_user_attr(T.TRIAL_KEPT, True)
        study.tell(trial, mean_pearson(Y, dev.values).value)
    res = build_ensemble(
        "eri",
        name="two",
        studies=["local", "remote"],
        storages=[None, url],
        runs=runs,
        method="mean",
    )
    assert [e["study"] for e in res.manifest["members"]] == ["local"] * 2 + ["remote"] * 2
    with pytest.raises(AbawError, match="no study storage"):
        collect_members("eri", ["x"], runs=tmp_path / "empty")


def test_class_offsets_stay_only_when_they_help_on_held_out_videos():
    """A real bias (class 3 always under-scored) is corrected; noise-fitting offsets are not kept."""
    rng = np.random.default_rng(0)
    n, videos = 4000, np.repeat([f"v{i}" for i in range(8)], 500)
    labels = rng.integers(0, 8, n)
    logits = rng.normal(0, 1, (n, 8))
    logits[np.arange(n), labels] += 2.0
    logits[:, 3] -= 3.0  # the model never predicts class 3: an offset fixes it everywhere
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    notes: list[str] = []
    b = checked_offsets(probs, labels, videos, 0, notes)
    assert b[3] > 0 and "class offsets on" in notes[-1]

    # Each video shows mostly one class; offsets fitted on some videos learn their class mix,
    # which is wrong for the others: the check must drop them.
    own = np.repeat(np.arange(8), 500)
    labels = np.where(rng.random(n) < 0.8, own, rng.integers(0, 8, n))
    logits = rng.normal(0, 1, (n, 8))
    logits[np.arange(n), labels] += 0.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    notes = []
    b = checked_offsets(probs, labels, videos, 0, notes)
    assert not np.any(b) and "class offsets off" in notes[-1]
