"""Issue #19, a team on a deadline: the tool acts on its honest estimate, starts from the
defaults, shows progress inside an epoch, names its metric, never prints a best that goes
backwards, and knows the track where something records it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from _ens_helpers import eri_labels, eri_member, make_study, write_member
from test_train import ToyTask, _cfg

from abaw import trials as T
from abaw.cli import main as cli
from abaw.ensemble import build_ensemble
from abaw.eri import EMOTIONS
from abaw.errors import ConfigError
from abaw.predictions import Predictions
from abaw.report import make_report
from abaw.sweep import ParamSpec, load_sweep
from abaw.train import fit
from abaw.tune.enqueue import INTERRUPTED, fixed_params, inside, retry_interrupted
from abaw.tune.view import Monitor, ProgressFile

ROOT = Path(__file__).resolve().parents[1]
IDS_DEV = np.array([f"[{i:05d}]" for i in range(240)])
IDS_TEST = np.array([f"[{i:05d}]" for i in range(240, 340)])
Y = eri_labels(240, 1)


def _members(tmp_path: Path) -> list[Path]:
    """One good member and two poor ones: their plain mean loses to the good one."""
    spec = [(0, 0.1), (1, 1.2), (2, 1.4)]
    return [
        write_member(tmp_path / f"m{s}", *eri_member(s, IDS_DEV, Y, IDS_TEST, noise=noise))
        for s, noise in spec
    ]


# -- 1. a losing ensemble -------------------------------------------------------------------


def test_losing_ensemble_writes_the_best_single_member(tmp_path):
    files = _members(tmp_path)
    res = build_ensemble("eri", name="lose", predictions=files, method="mean", runs=tmp_path / "r")
    v, m = res.verdict, res.manifest
    assert v is not None and v.gain < 0 and not v.wins
    assert m["verdict"]["written"] == "best_single" and m["method_used"] == "best_single"
    assert m["ensemble_method_used"] == "mean"
    assert [e["weight"] for e in m["members"]] == [1.0, 0.0, 0.0]
    assert [round(e["ensemble_weight"], 3) for e in m["members"]] == [0.333] * 3
    assert (
        "does NOT win" in m["verdict"]["line"]
        and f"{v.honest_ensemble:.4f}" in m["verdict"]["line"]
    )
    # what is written (and so submitted) is the best member, post-processed (ERI: clipped)
    best = Predictions.load(files[0] / "predictions-test.npz")
    written = Predictions.load(tmp_path / "r" / "ensembles" / "lose" / "predictions-test.npz")
    assert np.allclose(written.order_by(best).values, np.clip(best.values, 0, 1), atol=1e-6)


def test_keep_ensemble_writes_it_anyway(tmp_path):
    files = _members(tmp_path)
    res = build_ensemble(
        "eri",
        name="keep",
        predictions=files,
        method="mean",
        runs=tmp_path / "r",
        keep_ensemble=True,
    )
    assert (
        res.manifest["verdict"]["written"] == "ensemble" and res.manifest["method_used"] == "mean"
    )
    assert res.manifest["verdict"]["kept_ensemble"] is True
    assert all(e["weight"] > 0.3 for e in res.manifest["members"])


def test_cli_says_it_in_one_line_and_the_report_carries_it(tmp_path, capsys):
    files = _members(tmp_path)
    runs = tmp_path / "r"
    argv = ["ensemble", "--predictions", *map(str, files), "--method", "mean", "--name", "x"]
    assert cli([*argv, "--runs", str(runs)]) == 0  # --track comes from the files
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "does NOT win" in x)
    assert "ensemble 0." in line and "best single" in line and "--keep-ensemble" in line
    rep = make_report(ensemble="x", runs=runs, out=tmp_path / "rep")
    html = rep.html.read_text(encoding="utf-8")
    assert "does NOT win" in html and "0 (not used)" in html and "Honest comparison" in html
    assert "ensemble does not win" in html


def test_greedy_records_why_each_weight_is_what_it_is(tmp_path):
    files = _members(tmp_path)
    res = build_ensemble("eri", name="g", predictions=files, method="greedy", runs=tmp_path / "r")
    sel = res.manifest["selection"]
    assert sel["start"] == 3 and 1 <= sel["kept"] <= len(sel["steps"])
    kept = [s["member"] for s in sel["steps"][: sel["kept"]]]
    for e, m in zip(res.manifest["members"], res.members, strict=True):
        weight = e.get("ensemble_weight", e["weight"])
        assert weight == pytest.approx(kept.count(m.name) / len(kept))
    # the start is the best three alone; the kept prefix is the shortest with the best score
    scores = [s["score"] for s in sel["steps"]]
    assert sel["kept"] == int(np.argmax(scores)) + 1


# -- 3. the defaults as the first trial -----------------------------------------------------


def test_fixed_params_only_searched_keys_inside_their_distributions():
    sw = load_sweep(ROOT / "sweeps" / "eri-fusion-mean.toml")
    from abaw.sweep import build_configs
    from abaw.track import get_track
    from abaw.train import run_sections

    configs = build_configs(sw.resolve(), run_sections(get_track("eri"), sw.model))
    params, left = fixed_params(sw.searchable(), configs)
    assert set(params) == set(sw.space) and not left
    assert params["train.lr"] == 3e-4 and params["model.readout"] == "mean"
    # pinned keys are not searched; a fixed value outside its range is left to the sampler
    space = sw.searchable({"train.lr": 1e-3})
    space["model.dropout"] = ParamSpec("model.dropout", "float", 0.1, 0.3, step=0.1)
    params, left = fixed_params(space, configs)
    assert "train.lr" not in params and left == ["model.dropout"]
    assert inside(ParamSpec("x", "int", 1, 9, step=2), 5) and not inside(
        ParamSpec("x", "int", 1, 9, step=2), 4
    )
    assert inside(ParamSpec("x", "categorical", choices=(64, 128)), 128)
    assert not inside(ParamSpec("x", "categorical", choices=(1, 2)), True)


@pytest.fixture(scope="module")
def eri_tiny(tmp_path_factory) -> Path:
    from abaw.eri.synth import write_eri

    root = tmp_path_factory.mktemp("eri") / "eri"
    write_eri(root, scale="tiny", seed=0, n_jobs=1, show_progress=False)
    return root


def _tune(data: Path, runs: Path, trials: int, **kw):
    from abaw.tune import run_study

    return run_study(
        ROOT / "sweeps" / "eri-pooled.toml",
        data,
        trials=trials,
        runs=runs,
        overrides={"train.epochs": 1},
        show_progress=False,
        threads=1,
        **kw,
    )


def test_new_study_starts_from_the_fixed_configuration(eri_tiny, tmp_path, capsys):
    sw = load_sweep(ROOT / "sweeps" / "eri-pooled.toml")
    study = _tune(eri_tiny, tmp_path / "runs", 2)
    t0, t1 = study.trials[:2]
    assert (
        t0.user_attrs.get(T.TRIAL_FIXED_CONFIG) is True
        and T.TRIAL_FIXED_CONFIG not in t1.user_attrs
    )
    fixed = {k: v for k, v in sw.fixed.items() if k in sw.space}
    assert {k: t0.params[k] for k in fixed} == fixed
    out = capsys.readouterr().out
    assert "first trial: the sweep's [fixed] values" in out and "[fixed]" in out
    assert "0 trial(s) so far (1 queued)" in out  # the queued [fixed] trial has not run yet
    # resume: the study has trials, so nothing is enqueued again; counting is unchanged
    study = _tune(eri_tiny, tmp_path / "runs", 3)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3 and len(states) == 3
    assert sum(bool(t.user_attrs.get(T.TRIAL_FIXED_CONFIG)) for t in study.trials) == 1


def test_no_default_first(eri_tiny, tmp_path):
    study = _tune(eri_tiny, tmp_path / "runs", 1, default_first=False)
    assert T.TRIAL_FIXED_CONFIG not in study.trials[0].user_attrs


def test_interrupted_trials_are_retried_once_with_their_parameters(tmp_path):
    study = optuna.create_study(direction="maximize")
    t = study.ask()
    t.suggest_float("lr", 1e-4, 1e-2, log=True)
    t.set_user_attr(T.TRIAL_FAIL_REASON, INTERRUPTED)
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert retry_interrupted(study) == [0]
    assert retry_interrupted(study) == []  # once
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs[T.TRIAL_RETRY_OF] == 0
    retry = study.ask()
    assert retry.suggest_float("lr", 1e-4, 1e-2, log=True) == study.trials[0].params["lr"]
    study.tell(retry, 0.5)
    # nothing is enqueued once the study holds the trials asked for
    t = study.ask()
    t.suggest_float("lr", 1e-4, 1e-2, log=True)
    t.set_user_attr(T.TRIAL_FAIL_REASON, INTERRUPTED)
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert retry_interrupted(study, trials=1) == []


# -- 2. progress inside an epoch -------------------------------------------------------------


class SlowToy(ToyTask):
    """ToyTask whose steps take a while, like an epoch of a real model on a CPU."""

    def loss(self, model, batch):
        time.sleep(0.02)
        return super().loss(model, batch)


def test_log_form_shows_progress_inside_an_epoch(monkeypatch, capsys):
    monkeypatch.setattr("abaw.progress.LOG_EVERY_S", 0.0)
    seen = []
    fit(SlowToy(), _cfg(epochs=2), device=__import__("torch").device("cpu"),
        show_progress=False, log_epochs=True, on_progress=seen.append)  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    inside_lines = [x for x in out if x.startswith("  epoch 1/2: step ")]
    assert inside_lines and "samples/s" in inside_lines[-1]
    assert any(x.startswith("epoch 1/2  loss") for x in out)
    # the second epoch knows its step count from the first: a total and an ETA
    assert any(x.startswith("  epoch 2/2: step ") and "/4 (" in x and "left" in x for x in out)
    assert seen and seen[-1].epoch == 2


def test_tune_log_form_prints_running_trials_progress(tmp_path, capsys):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    folder = tmp_path / "progress"
    from abaw.progress import StepProgress

    ProgressFile(folder, trial.number)(StepProgress(1, 30, 120, 400, 7680, 60.0))
    mon = Monitor(study, [], 2, live=False, metric="mean_pearson", progress=folder, log_every=0)
    mon._tick()
    out = capsys.readouterr().out
    assert "trial 0 running: epoch 1/30: step 120/400 (30 %)" in out and "left in the epoch" in out


# -- 4. best never goes backwards, and the metric is named -----------------------------------


def test_best_in_the_log_never_goes_backwards(capsys):
    study = optuna.create_study(direction="maximize")
    mon = Monitor(study, [], 3, live=False, metric="mean_pearson")
    slow, fast = study.ask(), study.ask()
    study.tell(fast, 0.7554)  # trial 1 finishes first (another worker)
    mon._tick()
    time.sleep(0.01)
    study.tell(slow, 0.7251)
    mon._tick()
    lines = capsys.readouterr().out.splitlines()
    bests = [float(x.split(" best ")[1].split()[0]) for x in lines]
    assert bests == [0.7554, 0.7554], lines
    assert all("mean Pearson" in x for x in lines)


# -- 5. commands that know what they know ----------------------------------------------------


def test_track_is_inferred_and_checked(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_study(runs, "s", "eri", [eri_member(i, IDS_DEV, Y, IDS_TEST) for i in range(2)])
    assert cli(["ensemble", "--studies", "s", "--name", "e", "--runs", str(runs)]) == 0
    assert (
        cli(["ensemble", "--track", "expr", "--studies", "s", "--name", "e2", "--runs", str(runs)])
        == 1
    )
    assert "--track expr, but study s is eri" in capsys.readouterr().err
    data = tmp_path / "data"
    from abaw.eri.synth import write_eri

    write_eri(data, scale="tiny", seed=0, n_jobs=1, show_progress=False)
    ids = _test_ids(data)
    pred = Predictions(
        "eri", "test", {"id": ids}, np.random.default_rng(0).random((len(ids), 7)), EMOTIONS
    )
    pred.save(tmp_path / "mine-test.npz")
    subs = tmp_path / "subs"
    assert cli(["submit", "--predictions", str(tmp_path / "mine-test.npz"), "--data", str(data),
                "--out", str(subs)]) == 0  # fmt: skip
    capsys.readouterr()
    assert cli(["validate", str(subs / "mine-test.zip"), "--data", str(data)]) == 0
    assert cli(["validate", str(subs / "mine-test" / "predictions.csv"), "--data", str(data)]) == 0
    assert "passes every eri check" in capsys.readouterr().out
    lone = tmp_path / "lone.csv"
    lone.write_bytes((subs / "mine-test" / "predictions.csv").read_bytes())
    assert cli(["validate", str(lone), "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert "--track is needed here" in err and "--track eri or --track expr" in err


def _test_ids(data: Path) -> np.ndarray:
    from abaw.eri.tables import detect_layout, read_tables

    ids, split, _, _ = read_tables(data, detect_layout(data))
    return ids[split == "test"]


def test_mistyped_sweep_lists_the_sweeps_closest_first():
    with pytest.raises(ConfigError) as e:
        load_sweep(ROOT / "sweeps" / "eri-fuson.toml")
    msg = str(e.value)
    assert "sweep file not found; sweeps in" in msg
    listed = msg.split("sweeps in ")[1].split(": ", 1)[1].split(", ")
    assert listed[0] == "eri-fusion.toml" and "expr-regnet.toml" in msg


def test_mistyped_sweep_outside_the_checkout_lists_the_shipped_sweeps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a demo or project folder: no sweeps/ of its own
    with pytest.raises(ConfigError) as e:
        load_sweep("sweeps/eri-fuson.toml")
    msg = str(e.value)
    assert f"sweeps in {ROOT / 'sweeps'}: eri-fusion.toml" in msg


def test_studies_without_storage_names_where_studies_are(tmp_path, monkeypatch, capsys):
    make_study(tmp_path / "demo" / "runs", "s", "eri", [eri_member(0, IDS_DEV, Y, IDS_TEST)])
    monkeypatch.chdir(tmp_path)
    assert cli(["studies"]) == 1
    out = capsys.readouterr().out
    assert "abaw studies --runs demo/runs" in out


def test_inspect_takes_a_modality_for_custom_features(tmp_path, capsys):
    import shutil

    from abaw.eri.synth import write_eri

    data = tmp_path / "eri"
    write_eri(data, scale="tiny", seed=0, n_jobs=1, show_progress=False)
    shutil.copytree(data / "feats" / "PosterV2-ViT", data / "feats" / "MyNet")
    assert cli(["inspect", "--track", "eri", "--data", str(data), "--features", "MyNet"]) == 1
    said = capsys.readouterr().out
    assert "abaw inspect --features 'MyNet=visual'" in said  # its own fix, which works:
    assert (
        cli(
            [
                "inspect",
                "--track",
                "eri",
                "--data",
                str(data),
                "--features",
                "DeepSpectrum,MyNet=visual",
            ]
        )
        == 0
    )
    assert (
        cli(["inspect", "--track", "eri", "--data", str(data), "--features", '{MyNet = "visual"}'])
        == 0
    )
    assert "MyNet" in capsys.readouterr().out


def test_inspects_own_suggestion_for_unloaded_folders_runs_as_pasted(tmp_path, capsys):
    import shlex
    import shutil

    from abaw.eri.synth import write_eri

    data = tmp_path / "my data" / "eri"  # a space in the path: the command quotes it
    write_eri(data, scale="tiny", seed=0, n_jobs=1, show_progress=False)
    shutil.copytree(data / "feats" / "PosterV2-ViT", data / "feats" / "MyNet")
    cli(["inspect", "--track", "eri", "--data", str(data)])
    said = " ".join(capsys.readouterr().out.split())  # undo the console's line wrapping
    command = said.split("check them too: ")[1].split(" (write =audio")[0]
    argv = shlex.split(command)
    assert argv[:2] == ["abaw", "inspect"] and "MyNet=visual" in argv[-1]
    assert cli(argv[1:]) == 0
    assert "MyNet" in capsys.readouterr().out


def test_manifest_verdict_survives_submit(tmp_path):
    files = _members(tmp_path)
    build_ensemble("eri", name="v", predictions=files, method="mean", runs=tmp_path / "r")
    m = json.loads((tmp_path / "r" / "ensembles" / "v" / "manifest.json").read_text())
    assert m["verdict"]["ensemble_wins"] is False and m["scores"]["written_devel"] > 0


# -- the demo's summary: metric, honest gain, verdict, trials and pruning, disk --------------


def test_demo_summary_names_metric_gain_verdict_and_pruning(tmp_path, capsys):
    from abaw.cli.show import demo_summary
    from abaw.demo import TrackResult, VariantResult, announce_disk

    v = VariantResult("eri-fusion-mean", 4, 0, 0, 0.70, 60.0, epochs=15, warmup=5, startup=5,
                      fixed_first=0.69)  # fmt: skip
    r = TrackResult("eri", "mean_pearson", 0.79, 0.81, variants=[v])
    r.ensemble = {"best_single_member": "eri-fusion-mean#0", "best_single_devel": 0.70,
                  "honest_best_single": 0.69, "ensemble_devel": 0.71, "honest_ensemble": 0.68}  # fmt: skip
    r.verdict = {"honest_gain": -0.01, "ensemble_wins": False, "written": "best_single",
                 "line": "honest estimate: ensemble 0.6800 vs best single ... does NOT win"}  # fmt: skip
    r.zip, r.report = tmp_path / "s.zip", tmp_path / "r.html"
    demo_summary([r], 60.0)
    out = capsys.readouterr().out
    assert "eri (mean Pearson)" in out and "honest gain" in out and "-0.0100" in out
    assert "loses" in out and "yes (+ post-processing)" in out and "does NOT win" in out
    assert "4 trials, 0 pruned: the median pruner prunes nothing before 5 trials" in out
    assert "nor in a trial's first 5 of its 15 epochs" in out
    assert "first trial ([fixed] values) 0.6900" in out
    need = announce_disk(tmp_path / "demo", ("eri", "expr"), "small")
    said = capsys.readouterr().out
    assert need > 1000 and "abaw demo writes up to about" in said and str(tmp_path) in said


def test_live_table_shows_the_fixed_tag_and_in_epoch_progress(tmp_path):
    from rich.console import Console

    from abaw.progress import StepProgress

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"lr": 0.01}, user_attrs={T.TRIAL_FIXED_CONFIG: True})
    t = study.ask()
    t.suggest_float("lr", 1e-4, 1e-1, log=True)
    folder = tmp_path / "progress"
    ProgressFile(folder, t.number)(StepProgress(2, 30, 12, 20, 768, 6.0))
    mon = Monitor(study, ["lr"], 4, live=False, metric="macro_f1", progress=folder)
    con = Console(record=True, width=200)
    con.print(mon._table())
    text = con.export_text()
    assert "running [fixed]" in text and "2/30" in text and "step 12/20 (60 %)" in text
    assert "macro F1" in text


def test_idle_openmp_threads_sleep_only_on_a_busy_cpu(monkeypatch):
    import os

    from abaw.cli import _omp_wait_policy

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    for load, expected in ((5.5, "PASSIVE"), (0.4, None)):
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        _omp_wait_policy()
        assert os.environ.get("OMP_WAIT_POLICY") == expected
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's own choice wins
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    _omp_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_greedy_that_keeps_one_member_alone_is_a_tie_not_a_warning(tmp_path, capsys):
    """One good member and two poor ones: greedy keeps the good one alone, so nothing was
    combined; the best single is written and the line says why, without a warning."""
    files = _members(tmp_path)
    runs = tmp_path / "r"
    res = build_ensemble("eri", name="one", predictions=files, method="greedy", runs=runs)
    v = res.verdict
    assert v is not None and v.used == 1 and v.alone and not v.wins
    assert res.manifest["verdict"]["members_used"] == 1
    assert "kept one member alone" in v.line() and "does NOT win" not in v.line()
    argv = ["ensemble", "--predictions", *map(str, files), "--name", "one2", "--runs", str(runs)]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "kept one member alone" in out and "WARNING" not in out
    # the plain mean combines all three and loses: that one is still a warning
    argv = ["ensemble", "--predictions", *map(str, files), "--method", "mean", "--name", "m"]
    assert cli([*argv, "--runs", str(runs)]) == 0
    assert "WARNING: honest estimate" in capsys.readouterr().out
