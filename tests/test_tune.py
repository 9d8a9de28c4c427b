"""`abaw tune` / `abaw studies` on tiny synthetic ERI data with a tiny LSTM.

Covers: the Python API, `--trials` as a total, `--set` pinning, top-K retention
with complete artifacts, data loaded once, failing and interrupted trials,
pruning bookkeeping, `--jobs 2`, two CLI workers on one PostgreSQL study,
SIGKILL of a worker mid-trial on the journal default and on PostgreSQL, the RDB
heartbeat failing a silent worker of another machine, and Ctrl-C
of `--jobs 2` from a terminal and as `kill -INT` of the parent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import abaw.train
from abaw import trials as T
from abaw.checkpoint import rebuild_model
from abaw.cli import main as cli_main
from abaw.errors import AbawError, ConfigError
from abaw.tune import load_study, open_storage, run_study, study_rows

REPO = Path(__file__).resolve().parents[1]

SWEEP = """
[study]
track = "eri"
model = "lstm"
name = "{name}"

[data]
features = {{ "PosterV2-ViT" = "visual" }}
max_len = 8

[fixed]
"model.hidden" = 8
"model.layers" = 1
"loss.beta" = 0.0
"train.lr" = 3e-3
"train.batch_size" = 16
"train.epochs" = {epochs}
"train.patience" = 0
"train.ema" = false
"train.scheduler" = "none"
"train.clip_norm" = 0.0

[space]
"train.lr" = {{ type = "float", low = 1e-3, high = 1e-2, log = true }}
"model.hidden" = {{ type = "categorical", choices = [4, 8] }}
"data.max_len" = {{ type = "categorical", choices = [4, 8] }}
"""


@pytest.fixture(scope="module")
def eri(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eri") / "data"
    assert cli_main(["synth", "--track", "eri", "--out", str(root), "--scale", "tiny"]) == 0
    return root


def _sweep(folder: Path, name: str = "tiny-lstm", epochs: int = 2) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(SWEEP.format(name=name, epochs=epochs))
    return path


def _check_kept_files(study: optuna.Study, artifacts: Path) -> list:
    """Every kept trial has all three files, readable; no other file is left in the store."""
    kept = T.kept_trials(study)
    recorded = set()
    for t in kept:
        for split in T.SPLITS:
            pred = T.trial_predictions(study, t, split)
            assert len(pred) > 0 and pred.meta["trial"] == t.number
        ckpt = T.download_trial_file(study, t, T.TRIAL_CHECKPOINT, artifacts.parent / "ck.pt")
        rebuild_model(ckpt)  # weights_only load + rebuild through the track
        recorded |= {
            t.user_attrs[a] for a in (T.TRIAL_CHECKPOINT, *map(T.predictions_attr, T.SPLITS))
        }
    on_disk = {p.name for p in artifacts.iterdir()}
    assert on_disk == recorded, "displaced / failed trials' files must be gone, no temp files"
    return kept


def test_run_study_api_retention_and_data_loaded_once(eri, tmp_path, monkeypatch):
    from abaw.eri.track import EriTrack

    loads = []
    real = EriTrack.load_data
    monkeypatch.setattr(
        EriTrack, "load_data", lambda self, *a, **k: loads.append(1) or real(self, *a, **k)
    )
    runs = tmp_path / "runs"
    study = run_study(
        _sweep(tmp_path), eri, trials=5, keep=2, runs=runs, pruner="none", show_progress=False
    )
    assert isinstance(study, optuna.Study)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 5
    assert len(loads) == 1, "a sampled data.max_len re-slices; the CSVs are read once"
    assert {t.params["data.max_len"] for t in study.trials} <= {4, 8}
    info = T.study_info(study)
    assert info["track"] == "eri" and info["model"] == "lstm" and info["keep"] == 2
    assert Path(info["artifacts"]) == (runs / "artifacts").resolve()
    kept = _check_kept_files(study, runs / "artifacts")
    values = sorted((t.value for t in study.trials), reverse=True)
    assert [t.value for t in kept] == values[:2] and study.best_value == values[0]
    for t in study.trials:
        assert t.user_attrs[T.TRIAL_EPOCHS_RUN] == 2 and T.TRIAL_SETUP_SECONDS in t.user_attrs
        metrics = json.loads(
            (runs / "tune" / "tiny-lstm" / f"trial-{t.number:05d}" / "metrics.json").read_text()
        )
        assert metrics["best_score"] == pytest.approx(t.value)
    # The same command again adds nothing (--trials is the total); a larger total adds the rest.
    run_study(_sweep(tmp_path), eri, trials=5, keep=2, runs=runs, show_progress=False)
    assert len(load_study("tiny-lstm", runs=runs).trials) == 5
    study = run_study(_sweep(tmp_path), eri, trials=6, keep=2, runs=runs, show_progress=False)
    assert len(study.trials) == 6
    _check_kept_files(study, runs / "artifacts")


def test_set_pins_a_key_and_removes_it_from_the_space(eri, tmp_path):
    runs = tmp_path / "runs"
    study = run_study(
        _sweep(tmp_path),
        eri,
        trials=2,
        runs=runs,
        overrides=["train.lr=0.002", "data.max_len=4"],
        show_progress=False,
    )
    for t in study.trials:
        assert set(t.params) == {"model.hidden"}
        cfg = json.loads(
            (runs / "tune" / "tiny-lstm" / f"trial-{t.number:05d}" / "config.json").read_text()
        )
        assert cfg["settings"]["train"]["lr"] == 0.002 and cfg["settings"]["data"]["max_len"] == 4


@pytest.mark.parametrize("mode", ["per-trial", "fixed"])
def test_trial_seeds_make_the_top_trials_different_models_or_not(eri, tmp_path, mode):
    """fixed (default): every trial trains with --seed; per-trial: trial k with seed + k."""
    runs = tmp_path / "runs"
    pins = ["train.lr=0.003", "model.hidden=8", "data.max_len=8"]  # the same settings twice
    kw = {} if mode == "fixed" else {"trial_seeds": "per-trial"}
    study = run_study(
        _sweep(tmp_path),
        eri,
        trials=2,
        runs=runs,
        seed=5,
        overrides=pins,
        pruner="none",
        show_progress=False,
        **kw,
    )
    seeds = [t.user_attrs[T.TRIAL_SEED] for t in study.trials]
    assert seeds == ([5, 6] if mode == "per-trial" else [5, 5])
    for t in study.trials:
        cfg = json.loads(
            (runs / "tune" / "tiny-lstm" / f"trial-{t.number:05d}" / "config.json").read_text()
        )
        assert cfg["seed"] == t.user_attrs[T.TRIAL_SEED]
    a, b = (T.trial_predictions(study, t, "devel").values for t in study.trials)
    if mode == "per-trial":
        assert not np.allclose(a, b), "two seeds must give two different models"
    else:
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="--trial-seeds"):
        run_study(_sweep(tmp_path), eri, trials=1, runs=runs, trial_seeds="random")


def test_failing_trial_is_recorded_and_the_study_goes_on(eri, tmp_path, monkeypatch):
    real, calls = abaw.train.fit, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)\nsecond line")
        return real(*a, **k)

    monkeypatch.setattr(abaw.train, "fit", flaky)
    runs = tmp_path / "runs"
    study = run_study(_sweep(tmp_path), eri, trials=3, runs=runs, show_progress=False)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and len(study.trials) == 4
    reason = failed[0].user_attrs[T.TRIAL_FAIL_REASON]
    assert reason == "RuntimeError: CUDA out of memory (simulated) second line"
    assert not failed[0].user_attrs[T.TRIAL_KEPT]


def test_every_trial_failing_stops_with_one_sentence(eri, tmp_path, monkeypatch):
    def broken(*a, **k):
        raise ValueError("model rejects this combination")

    monkeypatch.setattr(abaw.train, "fit", broken)
    with pytest.raises(AbawError, match="3 trials in a row failed.*model rejects"):
        run_study(_sweep(tmp_path), eri, trials=5, runs=tmp_path / "runs", show_progress=False)


def test_ctrl_c_marks_the_running_trial_failed(eri, tmp_path, monkeypatch):
    real, calls = abaw.train.fit, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(abaw.train, "fit", interrupted)
    runs = tmp_path / "runs"
    with pytest.raises(KeyboardInterrupt):
        run_study(_sweep(tmp_path), eri, trials=3, runs=runs, show_progress=False)
    study = load_study("tiny-lstm", runs=runs)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs[T.TRIAL_FAIL_REASON] == "interrupted (Ctrl-C)"


def test_pruned_trials_count_as_finished_and_keep_no_files(eri, tmp_path, monkeypatch):
    class PruneAfterTwo(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return len(trial.intermediate_values) >= 2 and trial.number > 0

    monkeypatch.setattr("abaw.tune.worker.make_pruner", lambda name, epochs: PruneAfterTwo())
    runs = tmp_path / "runs"
    study = run_study(_sweep(tmp_path, epochs=4), eri, trials=3, runs=runs, show_progress=False)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    assert [len(t.intermediate_values) for t in study.trials] == [4, 2, 2]  # every epoch reported
    assert [t.number for t in T.kept_trials(study)] == [0]
    _check_kept_files(study, runs / "artifacts")


def test_unknown_study_lists_the_storage(tmp_path):
    st = open_storage(None, runs=tmp_path)
    optuna.create_study(storage=st, study_name="alpha")
    with pytest.raises(
        AbawError, match=r"no study 'beta' in .*optuna-journal.log; studies there: alpha"
    ):
        load_study("beta", runs=tmp_path)


def test_storage_urls():
    with pytest.raises(
        AbawError, match=r"--storage postgresql://u:\*\*\*@127.0.0.1:1/x: cannot open"
    ):
        open_storage("postgresql://u:secret@127.0.0.1:1/x")
    with pytest.raises(AbawError, match="expected a URL"):
        open_storage("runs/optuna.db")


def _tune_cmd(sweep: Path, data: Path, runs: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "abaw", "tune", "--sweep", str(sweep), "--data", str(data),
        "--runs", str(runs), "--threads", "1", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_jobs_two_on_the_journal_default_and_studies_listing(eri, tmp_path):
    runs = tmp_path / "runs"
    sweep = _sweep(tmp_path)
    out = subprocess.run(
        _tune_cmd(sweep, eri, runs, "--trials", "4", "--jobs", "2", "--keep", "2"),
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "database is locked" not in out.stderr
    study = load_study("tiny-lstm", runs=runs)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 4
    assert out.stdout.count(" complete mean Pearson ") == 4  # plain lines when not a terminal
    _check_kept_files(study, runs / "artifacts")
    (row,) = study_rows(None, runs)
    assert row["track"] == "eri" and row["model"] == "lstm" and row["complete"] == 4
    assert row["best_value"] == pytest.approx(study.best_value)
    listing = subprocess.run(
        [sys.executable, "-m", "abaw", "studies", "--runs", str(runs)],
        capture_output=True, text=True, env=_env(), cwd=REPO, check=True,
    )  # fmt: skip
    assert "tiny-lstm  eri/lstm  complete 4" in listing.stdout


def test_two_workers_share_one_postgres_study(eri, tmp_path, postgres_url):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    sweep = _sweep(tmp_path, name=name)
    cmd = _tune_cmd(sweep, eri, tmp_path / "runs", "--trials", "6", "--keep", "3",
                    "--storage", postgres_url)  # fmt: skip
    procs = [
        subprocess.Popen(
            cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    study = load_study(name, storage=postgres_url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert all(o[0].count(" complete mean Pearson ") >= 1 for o in outs), "both workers ran trials"
    _check_kept_files(study, tmp_path / "runs" / "artifacts")
    assert len(T.kept_trials(study)) == 3
    logged = [
        json.loads(p.read_text())["best_score"]
        for p in (tmp_path / "runs" / "tune" / name).glob("trial-*/metrics.json")
    ]
    assert len(logged) == sum(t.state == TrialState.COMPLETE for t in study.trials)
    assert study.best_value == pytest.approx(max(logged))


def _wait_for_running_trial(storage: str | None, runs: Path, name: str, proc, number: int):
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            study = load_study(name, storage=storage, runs=runs)
        except AbawError:
            time.sleep(0.2)
            continue
        ts = study.trials
        if (
            len(ts) > number
            and ts[number].state == TrialState.RUNNING
            and ts[number].intermediate_values
        ):
            return study
        time.sleep(0.2)
    raise AssertionError("the worker never reached a running trial")


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_sigkill_mid_trial_then_rerun_completes(eri, tmp_path, backend, request):
    storage = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    name = f"kill-{backend}-{uuid.uuid4().hex[:6]}"
    runs = tmp_path / "runs"
    # 400 epochs (a few seconds a trial): the kill must land inside trial 1's training; with
    # 30 epochs (under a second) the trial often finished between two polls.
    sweep = _sweep(tmp_path, name=name, epochs=400)
    extra = ["--trials", "2", "--pruner", "none"] + (["--storage", storage] if storage else [])
    cmd = _tune_cmd(sweep, eri, runs, *extra)
    proc = subprocess.Popen(
        cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _wait_for_running_trial(storage, runs, name, proc, number=1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = load_study(name, storage=storage, runs=runs)
    assert [t.state for t in before.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    first_value, killed_params = before.trials[0].value, before.trials[1].params

    rerun = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    study = load_study(name, storage=storage, runs=runs)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[0].value == first_value, "no completed trial is lost"
    assert "died while running it" in study.trials[1].user_attrs[T.TRIAL_FAIL_REASON]
    retry = study.trials[2]
    assert retry.params == killed_params and retry.system_attrs.get("failed_trial") == 1
    artifacts = runs / "artifacts"
    assert not list(artifacts.glob(".*.tmp")) and not list((runs / "tune").rglob("*.tmp"))
    _check_kept_files(study, artifacts)  # checkpoints load with weights_only


def test_a_trial_no_worker_claimed_is_failed_after_a_while(eri, tmp_path, monkeypatch):
    """A worker killed between `ask` and recording itself leaves a RUNNING trial with no
    owner; without this rule a resumed study would wait for it for good."""
    import abaw.tune
    import abaw.tune.recovery

    runs, sweep = tmp_path / "runs", _sweep(tmp_path)
    run_study(sweep, eri, trials=1, runs=runs, show_progress=False)
    study = load_study("tiny-lstm", runs=runs)
    study.ask()  # RUNNING, no owner
    store = abaw.tune.AtomicArtifactStore(runs / "artifacts")
    assert abaw.tune.recover_stale(study, store) == [], "a just-asked trial is left alone"

    monkeypatch.setattr(abaw.tune.recovery, "UNCLAIMED_S", 0)  # where recover_stale reads it
    study = run_study(sweep, eri, trials=2, runs=runs, show_progress=False, timeout=120)
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE
    ]  # fmt: skip
    assert "no worker claimed it" in study.trials[1].user_attrs[T.TRIAL_FAIL_REASON]


def test_a_silent_worker_on_another_machine_is_failed_by_the_heartbeat(
    eri, tmp_path, postgres_url, monkeypatch
):
    """RDB storages: a trial whose owner is on another host and sends no heartbeat for
    twice the interval is failed and retried with its parameters (1 s interval here)."""
    import functools

    import abaw.tune.study
    import abaw.tune.worker
    from abaw.tune.recovery import OWNER_ATTR, storage_of, trial_id

    for module in (abaw.tune.study, abaw.tune.worker):  # where run_study and its worker open it
        monkeypatch.setattr(module, "open_storage", functools.partial(open_storage, heartbeat=1))
    name = f"hb-{uuid.uuid4().hex[:8]}"
    sweep, runs = _sweep(tmp_path, name=name), tmp_path / "runs"
    run_study(sweep, eri, trials=1, storage=postgres_url, runs=runs, show_progress=False)
    study = load_study(name, storage=postgres_url)
    remote = study.ask()  # a worker on another machine starts a trial, reports, goes silent
    params = {
        "train.lr": remote.suggest_float("train.lr", 1e-3, 1e-2, log=True),
        "model.hidden": remote.suggest_categorical("model.hidden", [4, 8]),
        "data.max_len": remote.suggest_categorical("data.max_len", [4, 8]),
    }
    remote.report(0.1, 1)
    owner = {"host": "another-machine", "pid": 4242, "start": None}
    storage_of(study).set_trial_system_attr(trial_id(remote), OWNER_ATTR, owner)
    storage_of(study).record_heartbeat(trial_id(remote))
    time.sleep(2.5)  # > grace period (2 x 1 s)

    study = run_study(
        sweep, eri, trials=3, storage=postgres_url, runs=runs, show_progress=False, timeout=120
    )  # without the heartbeat the worker would wait for the silent trial: bounded here
    states = [t.state for t in study.trials]
    assert states == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    failed = study.trials[1]
    assert "stopped sending heartbeats" in failed.user_attrs[T.TRIAL_FAIL_REASON]
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retry) == 1 and retry[0].params == pytest.approx(params)


@pytest.mark.parametrize("who", ["terminal", "parent"])
def test_ctrl_c_with_two_jobs_fails_both_running_trials_then_rerun_completes(eri, tmp_path, who):
    """Ctrl-C in a terminal reaches the whole process group; `kill -INT` only the parent."""
    name = f"int-{who}"
    runs = tmp_path / "runs"
    sweep = _sweep(tmp_path, name=name, epochs=1000)  # long trials: interrupted mid-way
    cmd = _tune_cmd(sweep, eri, runs, "--trials", "4", "--jobs", "2", "--pruner", "none")
    proc = subprocess.Popen(
        cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        with contextlib.suppress(AbawError):
            ts = load_study(name, runs=runs).trials
            if sum(t.state == TrialState.RUNNING and bool(t.intermediate_values) for t in ts) == 2:
                break
        time.sleep(0.2)
    if who == "terminal":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    study = load_study(name, runs=runs)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 2, [
        (t.number, t.state.name, len(t.intermediate_values)) for t in study.trials
    ]
    assert {t.user_attrs[T.TRIAL_FAIL_REASON] for t in interrupted} == {"interrupted (Ctrl-C)"}
    assert not list((runs / "artifacts").glob(".*.tmp"))

    rerun = subprocess.run(
        [*cmd, "--set", "train.epochs=2"],
        env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    study = load_study(name, runs=runs)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 4
    _check_kept_files(study, runs / "artifacts")


def test_gp_sampler_hyperband_pruner_and_live_table(eri, tmp_path, capsys):
    study = run_study(
        _sweep(tmp_path),
        eri,
        trials=2,
        runs=tmp_path / "runs",
        sampler="gp",
        pruner="hyperband",
        show_progress=True,  # the live rich table, rendered to the captured stdout
    )
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 2
    out = capsys.readouterr().out
    assert "top " in out and "best so far" in out
    with pytest.raises(AbawError, match="--sampler 'cmaes'"):
        run_study(_sweep(tmp_path), eri, trials=1, runs=tmp_path / "runs", sampler="cmaes")


def test_median_pruner_lets_every_trial_run_a_third_of_its_epochs():
    """Slow starters are not pruned at epoch 3 of 15 (docs/benchmarks.md, search efficiency)."""
    from abaw.tune import make_pruner, median_warmup

    assert [median_warmup(n) for n in (2, 6, 15, 30, 100)] == [3, 3, 5, 10, 10]
    pruner = make_pruner("median", 15)
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(5):  # five finished trials at 1.0 per epoch: the median to beat
        t = study.ask()
        for epoch in range(1, 16):
            t.report(1.0, epoch)
        study.tell(t, 1.0)
    slow = study.ask()
    pruned_at = None
    for epoch in range(1, 16):
        slow.report(0.1, epoch)
        if slow.should_prune():
            pruned_at = epoch
            break
    assert pruned_at == 5


def test_a_journal_append_finishes_before_a_ctrl_c_takes_effect(tmp_path, monkeypatch):
    """Optuna's journal lock, cut by KeyboardInterrupt, can remove another worker's lock."""
    from optuna.storages.journal import JournalFileBackend

    real, order = JournalFileBackend.append_logs, []

    def ctrl_c_while_appending(self, logs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the signal is handled while the append is still running
        real(self, logs)
        order.append("written")

    monkeypatch.setattr(JournalFileBackend, "append_logs", ctrl_c_while_appending)
    storage = open_storage(None, runs=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        optuna.create_study(storage=storage, study_name="s")
        order.append("went on")
    assert order == ["written"]
    assert not list(tmp_path.glob("*.lock*")), "the lock was released"
    monkeypatch.undo()
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["s"]


def test_a_trial_out_of_device_memory_fails_alone_with_its_reason(eri, tmp_path, monkeypatch):
    import torch

    import abaw.tune.worker as worker

    real, calls, freed = abaw.train.fit, [], []

    def oom_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **k)

    def free() -> None:  # called once the traceback (the trial's tensors) is gone
        freed.append(sys.exc_info()[1])

    monkeypatch.setattr(abaw.train, "fit", oom_second)
    monkeypatch.setattr(worker, "_free_device_memory", free)
    study = run_study(_sweep(tmp_path), eri, trials=3, runs=tmp_path / "runs", show_progress=False)
    complete, fail = TrialState.COMPLETE, TrialState.FAIL
    assert [t.state for t in study.trials] == [complete, fail, complete, complete]
    reason = study.trials[1].user_attrs[T.TRIAL_FAIL_REASON]
    assert reason.startswith("out of device memory on cpu (the only worker on the device; ")
    assert reason.endswith("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert freed == [None]


def test_the_reason_of_a_packed_trial_out_of_memory_names_the_sharing():
    import torch

    from abaw.tune.worker import failure_reason

    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. " + "details " * 100)
    reason = failure_reason(oom, device=torch.device("cuda", 0), jobs=4)
    assert reason.startswith(
        "out of device memory on cuda:0 (4 workers share the device; try fewer --jobs or a "
        "smaller batch): OutOfMemoryError: CUDA out of memory."
    )
    assert len(reason) == 500
    other = failure_reason(ValueError("bad\nvalue"), device="cuda:0", jobs=4)
    assert other == "ValueError: bad value"


def test_packed_workers_share_a_cuda_device_and_leave_the_cpu_alone(monkeypatch):
    import torch

    from abaw.tune.pool import DEVICE_SHARE, share_device

    calls = []
    monkeypatch.setattr(
        torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d))
    )
    assert share_device(torch.device("cpu"), 4) is None
    assert share_device(torch.device("cuda", 1), 1) is None  # one job: the whole card
    assert calls == []
    assert share_device(torch.device("cuda", 1), 4) == pytest.approx(DEVICE_SHARE / 4)
    assert calls == [(pytest.approx(0.2375), 1)]
