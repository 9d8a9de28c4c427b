"""Pipeline hardening (issue #18): tune, studies, ensemble, submit and report never accept wrong
input silently, never fall through to the catch-all, never hang.

One test (or a few) per class of the issue, each with inputs the test makes: a study resumed
with another sweep or data set, kept files deleted, a study named twice, a teammate's member
missing test IDs, journals cut by a crash or holding a garbage line, truncated and foreign
prediction files, every validator fed the other track's files and arbitrary text, and a
PostgreSQL "server" that accepts a connection and never answers.
"""

from __future__ import annotations

import errno
import random
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import optuna
import pytest
from _ens_helpers import eri_labels, eri_member, write_member
from _hardening_helpers import Workspace, journal, make_workspace, run, write_sweep

import abaw.io
from abaw import trials as T
from abaw.ensemble import collect_members
from abaw.errors import AbawError, ConfigError, DataError
from abaw.io import writable_dir
from abaw.predictions import Predictions
from abaw.submit import submit, validate
from abaw.tune import open_storage, run_study, study_rows
from abaw.tune.storage import _engine_kwargs, db_timeouts


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("pipe"))


@pytest.fixture
def runs(ws, tmp_path) -> Path:
    """A private copy of the workspace's runs folder (study "tiny", ensemble "e")."""
    return Path(shutil.copytree(ws.runs, tmp_path / "runs"))


def _tune(ws: Workspace, runs: Path, **kw) -> optuna.Study:
    kw.setdefault("trials", 2)
    return run_study(kw.pop("sweep", ws.sweep), kw.pop("data", ws.eri), runs=runs, **kw)


# ---------------------------------------------------------------- 1. wrong input accepted


def test_resume_with_a_changed_sweep_is_refused_naming_both_searches(ws, runs, tmp_path):
    changed = write_sweep(
        tmp_path / "tiny.toml",
        space='"train.lr" = { type = "float", low = 1e-4, high = 1e-2, log = true }',
    )
    with pytest.raises(ConfigError) as info:
        _tune(ws, runs, sweep=changed)
    msg = str(info.value)
    assert "study 'tiny' was made from another sweep" in msg
    assert '"low": 0.001' in msg and '"low": 0.0001' in msg  # both sides
    assert str(ws.sweep.resolve()) in msg and str(changed) in msg
    assert "--study NAME" in msg


def test_other_set_values_on_resume_are_warned_about(ws, runs, capsys):
    _tune(ws, runs, trials=3, overrides={"train.epochs": 1})  # a budget cut to finish
    err = capsys.readouterr().err
    assert "study 'tiny' was made with other --set values: --set train.epochs was absent" in err


def test_a_comment_or_a_moved_sweep_file_is_the_same_search(ws, runs, tmp_path):
    moved = tmp_path / "elsewhere.toml"
    moved.write_text("# a comment the search does not see\n" + ws.sweep.read_text() + "\n\n")
    study = _tune(ws, runs, sweep=moved, trials=3)
    assert len(study.trials) == 3
    assert study.user_attrs[T.STUDY_SWEEP] == str(ws.sweep.resolve())  # the creator's path


def test_resume_on_another_data_set_is_refused_naming_both(ws, runs, tmp_path):
    other = tmp_path / "eri-seed1"
    assert run(["synth", "--track", "eri", "--out", other, "--scale", "tiny", "--seed", 1]) == 0
    with pytest.raises(ConfigError) as info:
        _tune(ws, runs, data=other)
    msg = str(info.value)
    assert "was tuned on another data set" in msg
    assert str(ws.eri.resolve()) in msg and str(other.resolve()) in msg
    assert "train 36 / devel 12 / test 12 samples" in msg and "labels" in msg


def test_moved_data_needs_data_moved_and_is_then_accepted(ws, runs, tmp_path):
    moved = Path(shutil.copytree(ws.eri, tmp_path / "moved-eri"))
    with pytest.raises(ConfigError) as info:
        _tune(ws, runs, data=moved)
    assert "--data-moved" in str(info.value) and "same layout, split sizes and labels" in str(
        info.value
    )
    study = _tune(ws, runs, data=moved, trials=3, data_moved=True)
    assert len(study.trials) == 3
    assert study.user_attrs[T.STUDY_DATA_ID]["root"] == str(ws.eri.resolve())  # unchanged


def test_a_study_without_identity_records_one_on_resume(ws, tmp_path):
    runs = tmp_path / "old-runs"
    st = optuna.create_study(study_name="tiny", storage=open_storage(None, runs=runs))
    st.set_user_attr(T.STUDY_TRACK, "eri")
    study = _tune(ws, runs, trials=1)
    assert study.user_attrs[T.STUDY_SEARCH_SHA] and study.user_attrs[T.STUDY_DATA_ID]["labels"]


def test_kept_trials_whose_files_are_gone_are_named_at_resume(ws, runs, capsys):
    study = optuna.load_study(study_name="tiny", storage=open_storage(None, runs=runs))
    best = T.kept_trials(study)[0]
    art = runs / "artifacts"  # the copy's own (the study records the original's)
    (art / best.user_attrs[T.predictions_attr("test")]).unlink()
    _tune(ws, runs, artifacts=art)
    err = capsys.readouterr().err
    assert f"files of 1 kept trial(s) are gone from {art.resolve()}" in err
    assert f"trial {best.number}: test predictions" in err
    with pytest.raises(DataError, match=r"predictions test file is gone"):
        collect_members("eri", ["tiny"], runs=runs, artifacts=art)


def test_kept_trials_whose_files_are_gone_are_listed_by_number(tmp_path, capsys):
    """kept_trials is best first; the listing reads in trial order (trial 0, 1, 2)."""
    from abaw.tune.identity import warn_missing_files

    study = optuna.create_study(direction="maximize")
    for value in (0.2, 0.1, 0.9):  # best first: trials 2, 0, 1
        t = optuna.trial.create_trial(
            value=value,
            user_attrs={T.TRIAL_KEPT: True, T.predictions_attr("test"): f"gone-{value}.npz"},
        )
        study.add_trial(t)
    assert warn_missing_files(study, tmp_path) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "(trial 0: test predictions; trial 1: test predictions; trial 2: test" in err


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"study": ""}, r"--study '' is not a plain file name"),
        ({"study": " "}, r"--study ' ' is not a plain file name .*not blank.*leave --study out"),
        ({"study": "a\\b"}, r"--study 'a\\b' is not a plain file name \(no '/', '\\', "),
        ({"timeout": -5}, r"--timeout must be a number of seconds > 0, got -5"),
        ({"timeout": float("nan")}, r"--timeout must be"),
    ],
)
def test_empty_study_name_and_bad_timeout_are_refused(ws, tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        _tune(ws, tmp_path / "runs", **kw)
    assert not (tmp_path / "runs" / "tune").exists() or not any(
        (tmp_path / "runs" / "tune").iterdir()
    ), "nothing made for a refused study"


def test_an_empty_space_under_a_fixed_seed_is_refused(ws, tmp_path):
    empty = write_sweep(tmp_path / "empty.toml", name="empty", space="")
    with pytest.raises(ConfigError, match=r"nothing to search: its \[space\] is empty"):
        _tune(ws, tmp_path / "runs", sweep=empty)
    study = _tune(ws, tmp_path / "runs", sweep=empty, trials=1)  # one run: nothing repeated
    assert len(study.trials) == 1


def test_a_space_pinned_whole_by_set_is_warned_about(ws, tmp_path, capsys):
    """Maybe meant (a repeat of one setting), so a warning, not a refusal."""
    _tune(ws, tmp_path / "runs", overrides={"train.lr": 0.003})
    err = capsys.readouterr().err
    assert "nothing to search: --set pins every [space] key (train.lr)" in err


def _members(tmp_path: Path, n: int = 3) -> list[Path]:
    ids_dev = np.array([f"{i:05d}" for i in range(20)])
    ids_test = np.array([f"{i:05d}" for i in range(20, 30)])
    y = eri_labels(20, 0)
    return [
        write_member(tmp_path / f"m{i}", *eri_member(i, ids_dev, y, ids_test)) for i in range(n)
    ]


def test_a_study_or_file_named_twice_is_refused(ws, tmp_path):
    with pytest.raises(ConfigError, match=r"--studies names 'tiny' twice"):
        collect_members("eri", ["tiny", "tiny"], runs=ws.runs)
    m = _members(tmp_path, 1)[0]
    with pytest.raises(ConfigError, match=r"twice \(also as"):
        collect_members("eri", files=[m, tmp_path / "m0" / ".." / "m0"])
    with pytest.raises(ConfigError) as info:  # a folder, and its own devel file
        collect_members("eri", files=[m, m / "predictions-devel.npz"])
    assert f"--predictions names '{m / 'predictions-devel.npz'}' twice (also as '{m}')" in str(
        info.value
    )


def test_a_repeated_member_flag_adds_its_values(ws, tmp_path, capsys):
    """`--studies A --studies B` and `--predictions X --predictions Y` kept only the last;
    both count now, so a repeat across flags is refused as named twice."""
    from abaw.cli import build_parser

    argv = ["ensemble", "--studies", "a", "--studies", "b,c", "--name", "n"]
    args = build_parser().parse_args([*argv, "--predictions", "x", "--predictions", "y", "z"])
    assert args.studies == ["a", "b,c"] and args.predictions == ["x", "y", "z"]
    rc = run(
        ["ensemble", "--studies", "tiny", "--studies", "tiny", "--runs", ws.runs, "--name", "r"]
    )
    assert rc == 1 and "--studies names 'tiny' twice" in capsys.readouterr().err
    m = _members(tmp_path, 1)[0]
    dev = m / "predictions-devel.npz"
    rc = run(
        ["ensemble", "--predictions", m, "--predictions", dev, "--runs", ws.runs, "--name", "r"]
    )
    err = capsys.readouterr().err
    assert rc == 1 and f"--predictions names '{dev}' twice (also as '{m}')" in err


def test_every_members_test_file_is_checked_whatever_its_weight(tmp_path):
    """A teammate's test file missing IDs is refused at collection, before any weight exists
    (greedy could give it weight 0 and leave it unread)."""
    folders = _members(tmp_path)
    bad = folders[2] / "predictions-test.npz"
    p = Predictions.load(bad)
    p.take(np.arange(1, len(p))).save(bad)  # the first test ID is gone
    with pytest.raises(AbawError, match=r"m2 \(test\): 1 of the first member's rows are missing"):
        collect_members("eri", files=folders)


# ---------------------------------------------------------------- 2. no catch-all


def test_a_run_folder_that_is_a_file_or_read_only_is_named(tmp_path, monkeypatch):
    f = tmp_path / "runs"
    f.write_text("x")
    with pytest.raises(DataError, match=r"cannot create the run folder.*it is a file"):
        writable_dir(f, "run folder")
    with pytest.raises(DataError, match=r"runs is a file"):
        writable_dir(f / "train", "run folder")
    ro = tmp_path / "ro"
    ro.mkdir()

    def refuse(*a, dir=None, **kw):  # noqa: A002
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(abaw.io.tempfile, "mkstemp", refuse)
    with pytest.raises(DataError) as info:
        writable_dir(ro, "run folder")
    assert str(ro) in str(info.value) and "permission denied" in str(info.value)
    assert "chmod u+w" in str(info.value)


def test_a_journal_cut_by_a_crash_is_read_and_set_aside(ws, runs, capsys):
    path = journal(runs)
    whole = path.read_bytes()
    n = whole.count(b"\n")
    path.write_bytes(whole + b'{"op_code": 5, "worker_id": "x", "trial_id": 1, "us')
    rows = study_rows(None, runs)  # a reader: warned, not changed
    assert rows[0]["complete"] == 2
    assert f"line {n + 1}: the last record is incomplete" in capsys.readouterr().err
    assert not path.read_bytes().endswith(b"\n")
    study = _tune(ws, runs, trials=3)  # a writer: sets it aside, then appends
    assert len(study.trials) == 3
    aside = path.with_name(f"{path.name}.cut-line-{n + 1}")
    assert aside.read_bytes() == b'{"op_code": 5, "worker_id": "x", "trial_id": 1, "us'
    assert "skipped and moved to" in capsys.readouterr().err
    assert study_rows(None, runs)[0]["complete"] == 3  # every later read works


GARBAGE = [
    "rm -rf / # not a record",
    # JSON, but not an Optuna journal record: each reached Optuna's replay and failed there
    # with a KeyError, TypeError or AssertionError naming neither the file nor the line.
    "{}",
    "[1, 2]",
    "null",
    '"str"',
    '{"op_code": 99, "worker_id": "w"}',
    '{"op_code": 5, "worker_id": "w"}',
    '{"op_code": 8, "worker_id": "w", "trial_id": 0, "user_attr": {}}',
]


@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("garbage", GARBAGE)
def test_a_garbage_journal_line_is_named_with_its_line(runs, where, garbage):
    path = journal(runs)
    lines = path.read_text().splitlines(keepends=True)
    i = 4 if where == "middle" else len(lines)
    lines.insert(i, garbage + "\n")
    path.write_text("".join(lines))
    with pytest.raises(DataError) as info:
        study_rows(None, runs)
    msg = str(info.value)
    assert f"{path}, line {i + 1}: damaged journal record" in msg
    assert repr(garbage[:60]) in msg and f"head -n {i}" in msg


def test_a_damaged_journal_is_named_by_ensemble_without_track(runs, capsys):
    """Looking up the studies' track swallowed the journal's error: "--track is needed"."""
    path = journal(runs)
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(4, '{"op_code": 5}\n')
    path.write_text("".join(lines))
    assert run(["ensemble", "--studies", "tiny", "--runs", runs, "--name", "g"]) == 1
    err = capsys.readouterr().err
    assert f"{path}, line 5: damaged journal record" in err and "--track is needed" not in err


def test_prediction_files_that_are_cut_or_foreign_say_what_they_are(ws, tmp_path):
    assert "truncated or damaged" in _load_error(ws.cut_npz)
    assert "a text file (a CSV?)" in _load_error(ws.submission)
    assert "(predictions-devel.npz or predictions-test.npz)" in _load_error(ws.submission)
    dev = _load_error(ws.member_csv / "predictions-devel.npz")  # the hint names its own split
    assert "(predictions-devel.npz)" in dev and "predictions-test.npz" not in dev
    np.save(tmp_path / "one.npy", np.zeros(3))
    assert "a single .npy array, not a .npz" in _load_error(tmp_path / "one.npy")
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as z:
        z.writestr("a.txt", "hi")
    assert "without the expected arrays" in _load_error(tmp_path / "other.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    assert "an empty file" in _load_error(tmp_path / "empty.npz")
    (tmp_path / "dir.npz").mkdir()
    assert "a directory" in _load_error(tmp_path / "dir.npz")
    for bad in (ws.cut_npz, ws.submission):
        assert "pickled" not in _load_error(bad)


def _load_error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        Predictions.load(path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_nan_in_an_ensembles_test_predictions_names_the_file_and_the_first_id(ws, tmp_path):
    from _hardening_helpers import nan_ensemble

    runs = nan_ensemble(ws)
    with pytest.raises(DataError) as info:
        submit("eri", "e", ws.eri, runs=runs, out=tmp_path / "subs")
    msg = str(info.value)
    p = Predictions.load(runs / "ensembles" / "e" / "predictions-test.npz")
    first = str(p.keys["id"][3])
    assert str(runs / "ensembles" / "e" / "predictions-test.npz") in msg and first in msg
    assert "column 'Anxiety'" in msg
    assert not (tmp_path / "subs" / "e").exists()  # nothing half-written


def _expr_submissions(ws: Workspace, tmp_path: Path) -> dict[str, Path]:
    """A valid Expr single file and a per-video folder, written from the test frame list."""
    from abaw.expr.layout import HEADER, TEST_FRAME_HEADER
    from abaw.expr.submission import frame_list

    fl = frame_list(ws.expr)
    single = tmp_path / "expr.csv"
    single.write_text(TEST_FRAME_HEADER + "\n" + "".join(f"{loc},0\n" for loc in fl.locs))
    folder = tmp_path / "expr-videos"
    folder.mkdir()
    for v, n in fl.n_frames.items():
        (folder / f"{v}.txt").write_text(HEADER + "\n" + "0\n" * n)
    assert validate("expr", single, ws.expr) == [] and validate("expr", folder, ws.expr) == []
    return {"expr single": single, "expr folder": folder}


def _texts(tmp_path: Path) -> list[Path]:
    """Arbitrary text files: no comma at all, only a header, blank lines, binary, long lines,
    a lone comma, seeded random printable noise."""
    rng = random.Random(18)
    texts = [
        "hello\nworld\n",
        "no commas in any row\n" * 30,
        "image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n",
        "File_ID,Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise\n",
        "\n\n\n",
        ",\n,\n",
        "x" * 100_000,
        "a/1.jpg\n" * 10,
        "".join(rng.choice("ab,/.\n0719-[]\r\t é") for _ in range(3000)),
    ]
    out = []
    for i, t in enumerate(texts):
        p = tmp_path / f"text-{i}.csv"
        p.write_text(t)
        out.append(p)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(rng.randrange(256) for _ in range(2000)))
    return [*out, binary]


def test_every_validator_survives_the_other_tracks_files_and_any_text(ws, tmp_path):
    others = {"eri": list(_expr_submissions(ws, tmp_path).values()), "expr": [ws.submission]}
    data = {"eri": ws.eri, "expr": ws.expr}
    for track in ("eri", "expr"):
        for path in [*others[track], *_texts(tmp_path)]:
            problems = validate(track, path, data[track])  # never raises anything else
            assert problems, f"{track} accepted {path}"
            for p in problems:
                assert str(p)
        with zipfile.ZipFile(tmp_path / f"{track}.zip", "w") as z:
            z.write(_texts(tmp_path)[0], "predictions.csv")
        assert validate(track, tmp_path / f"{track}.zip", data[track])


# ---------------------------------------------------------------- 3. no hang


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()
    for c in held:
        c.close()


def test_a_server_that_never_answers_times_out_with_a_sentence(silent_server, monkeypatch, capsys):
    monkeypatch.setenv("ABAW_DB_CONNECT_TIMEOUT", "2")
    url = f"postgresql://abaw@127.0.0.1:{silent_server}/abaw"
    t0 = time.monotonic()
    with pytest.raises(AbawError) as info:
        open_storage(url)
    assert time.monotonic() - t0 < 20
    msg = str(info.value)
    assert "cannot open it" in msg and "timeout" in msg and "ABAW_DB_CONNECT_TIMEOUT" in msg
    err = capsys.readouterr().err
    assert f"opening the study storage {url} (connect timeout 2 s" in err


def test_timeouts_default_and_override(monkeypatch):
    monkeypatch.delenv("ABAW_DB_CONNECT_TIMEOUT", raising=False)
    monkeypatch.delenv("ABAW_DB_STATEMENT_TIMEOUT", raising=False)
    kw = _engine_kwargs("postgresql+psycopg://u@h/db")
    assert kw["connect_args"] == {
        "connect_timeout": 10,
        "options": "-c statement_timeout=300000",
    }
    assert kw["pool_timeout"] == 30 and kw["pool_pre_ping"]
    monkeypatch.setenv("ABAW_DB_CONNECT_TIMEOUT", "45")
    monkeypatch.setenv("ABAW_DB_STATEMENT_TIMEOUT", "0")  # 0 = no limit
    assert _engine_kwargs("postgresql+psycopg://u@h/db")["connect_args"] == {"connect_timeout": 45}
    url = "postgresql+psycopg://u@h/db?connect_timeout=7"  # the URL's own setting wins
    assert "connect_timeout" not in _engine_kwargs(url)["connect_args"]
    assert _engine_kwargs("sqlite:///x.db") == {}
    monkeypatch.setenv("ABAW_DB_CONNECT_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="ABAW_DB_CONNECT_TIMEOUT='soon'"):
        db_timeouts()


def test_postgres_sessions_carry_the_statement_timeout(postgres_url, monkeypatch):
    monkeypatch.setenv("ABAW_DB_STATEMENT_TIMEOUT", "120")
    st = open_storage(postgres_url)
    with st.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "2min"
