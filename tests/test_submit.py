"""`abaw submit`: every test ID / listed frame, the data's spelling, validation before publishing."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from abaw.cli import main as cli
from abaw.eri import EMOTIONS
from abaw.errors import AbawError, DataError, SubmissionError
from abaw.expr import CLASSES
from abaw.predictions import Predictions
from abaw.submit import submit, validate


@pytest.fixture(scope="module")
def eri_data(tmp_path_factory) -> Path:
    from abaw.eri.synth import write_eri

    d = tmp_path_factory.mktemp("data") / "eri"
    write_eri(d, scale="tiny", seed=0, n_jobs=1, show_progress=False)
    return d


@pytest.fixture(scope="module")
def expr_data(tmp_path_factory) -> Path:
    from abaw.expr.synth import write_expr

    d = tmp_path_factory.mktemp("data") / "expr"
    write_expr(d, scale="tiny", seed=0, show_progress=False)
    return d


def eri_pred(data: Path, *, order=None, drop=0) -> Predictions:
    from abaw.eri.submission import test_ids

    ids = test_ids(data)
    rng = np.random.default_rng(0)
    order = np.arange(len(ids)) if order is None else order
    ids = ids[order][drop:]
    return Predictions("eri", "test", {"id": ids}, rng.random((len(ids), 7)), EMOTIONS)


def expr_pred(data: Path, *, shuffle=False, drop=0) -> Predictions:
    from abaw.expr.submission import frame_list

    fl = frame_list(data)
    rng = np.random.default_rng(1)
    idx = rng.permutation(len(fl)) if shuffle else np.arange(len(fl))
    idx = idx[drop:]
    vals = rng.random((len(idx), 8))
    return Predictions(
        "expr", "test", {"video": fl.video[idx], "frame": fl.frame[idx]}, vals, CLASSES
    )


def test_eri_every_test_id_in_data_spelling(eri_data, tmp_path):
    from abaw.eri.submission import test_ids

    oracle = json.loads((eri_data / "oracle.json").read_text())
    ids = test_ids(eri_data)
    missing_modality = {f"[{i}]" for m in oracle["missing"].values() for i in m} & set(ids)
    assert missing_modality, "the tiny set has test IDs missing a modality"
    pred = eri_pred(eri_data, order=np.arange(len(ids))[::-1])
    res = submit("eri", pred, eri_data, out=tmp_path / "subs", name="a")
    lines = res.files[0].read_text().splitlines()
    assert lines[0] == "File_ID," + ",".join(EMOTIONS)
    assert [r.split(",")[0] for r in lines[1:]] == list(ids)  # data order and spelling
    assert missing_modality <= {r.split(",")[0] for r in lines[1:]}
    row = dict(zip(pred.keys["id"], pred.values, strict=True))[ids[0]]
    assert np.allclose([float(x) for x in lines[1].split(",")[1:]], row, atol=1e-6)
    assert validate("eri", res.files[0], eri_data) == []
    assert validate("eri", res.zip, eri_data) == []
    with zipfile.ZipFile(res.zip) as z:
        assert z.namelist() == ["predictions.csv"]
    man = json.loads(res.manifest.read_text())
    assert man["submission"]["rows"] == len(ids) and "predictions.csv" in man["submission"]["files"]


@pytest.mark.parametrize("style,first", [("bracketed", "[00"), ("bare", "00")])
def test_eri_id_styles(eri_data, tmp_path, style, first):
    res = submit("eri", eri_pred(eri_data), eri_data, out=tmp_path, name=style, id_style=style)
    ids = [r.split(",")[0] for r in res.files[0].read_text().splitlines()[1:]]
    assert all(i.startswith(first) for i in ids)
    assert validate("eri", res.files[0], eri_data) == []


def test_eri_missing_test_id_is_an_error(eri_data, tmp_path):
    with pytest.raises(SubmissionError, match="have no prediction"):
        submit("eri", eri_pred(eri_data, drop=1), eri_data, out=tmp_path)
    assert not any(p.name.startswith(("predictions", ".")) for p in tmp_path.iterdir())


def test_eri_values_clipped_with_a_note(eri_data, tmp_path):
    pred = eri_pred(eri_data)
    pred.values[0, 0] = 1.7
    res = submit("eri", pred, eri_data, out=tmp_path)
    assert any("clipped" in n for n in res.notes)
    assert validate("eri", res.files[0], eri_data) == []


def test_expr_single_in_frame_list_order(expr_data, tmp_path):
    from abaw.expr.submission import frame_list

    fl = frame_list(expr_data)
    pred = expr_pred(expr_data, shuffle=True)
    res = submit("expr", pred, expr_data, out=tmp_path, name="s")
    lines = res.files[0].read_text().splitlines()
    assert lines[0].startswith("image_location,Neutral")
    assert [x.split(",")[0] for x in lines[1:]] == list(fl.locs)
    want = dict(
        zip(
            zip(pred.keys["video"].tolist(), pred.keys["frame"].tolist(), strict=True),
            pred.values.argmax(1).tolist(),
            strict=True,
        )
    )
    got = [int(x.split(",")[1]) for x in lines[1:]]
    assert got == [want[(v, int(f))] for v, f in zip(fl.video, fl.frame, strict=True)]
    assert validate("expr", res.zip, expr_data) == []


def test_expr_per_video(expr_data, tmp_path):
    from abaw.expr.submission import frame_list

    fl = frame_list(expr_data)
    res = submit("expr", expr_pred(expr_data), expr_data, out=tmp_path, fmt="per-video")
    assert sorted(p.stem for p in res.files) == sorted(fl.videos)
    for p in res.files:
        lines = p.read_text().splitlines()
        assert lines[0] == ",".join(CLASSES) and len(lines) - 1 == fl.n_frames[p.stem]
    assert validate("expr", res.folder, expr_data) == []
    assert validate("expr", res.zip, expr_data) == []


def test_expr_missing_frame_and_empty_prediction(expr_data, tmp_path):
    with pytest.raises(SubmissionError, match="have no prediction"):
        submit("expr", expr_pred(expr_data, drop=3), expr_data, out=tmp_path)
    empty = Predictions(
        "expr",
        "test",
        {"video": np.array([], str), "frame": np.array([], int)},
        np.zeros((0, 8)),
        CLASSES,
    )
    with pytest.raises(SubmissionError, match="empty"):
        submit("expr", empty, expr_data, out=tmp_path)


def test_refuses_overwrite_without_force(eri_data, tmp_path):
    submit("eri", eri_pred(eri_data), eri_data, out=tmp_path, name="x")
    with pytest.raises(AbawError, match="--force"):
        submit("eri", eri_pred(eri_data), eri_data, out=tmp_path, name="x")
    pred = eri_pred(eri_data)
    pred.values[:] = 0.5
    res = submit("eri", pred, eri_data, out=tmp_path, name="x", force=True)
    assert "0.500000" in res.files[0].read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "x.manifest.json", "x.zip"]


def test_wrong_track_and_split(eri_data, expr_data, tmp_path):
    with pytest.raises(SubmissionError, match="track"):
        submit("expr", eri_pred(eri_data), expr_data, out=tmp_path)
    dev = eri_pred(eri_data)
    dev.split = "devel"
    with pytest.raises(SubmissionError, match="split"):
        submit("eri", dev, eri_data, out=tmp_path)


def test_cli_submit_from_ensemble_and_file(eri_data, tmp_path, capsys):
    """An ensemble (built from two prediction files) and a file both submit through the CLI."""
    from _ens_helpers import eri_labels, eri_member, write_member

    from abaw.eri.submission import test_ids

    ids_dev = np.array([f"[{i:05d}]" for i in range(60)])
    y = eri_labels(60, 3)
    folders = []
    for s in range(2):
        dev, test = eri_member(s, ids_dev, y, test_ids(eri_data))
        folders.append(str(write_member(tmp_path / f"m{s}", dev, test)))
    runs, out = tmp_path / "runs", tmp_path / "subs"
    assert (
        cli(
            ["ensemble", "--track", "eri", "--predictions", *folders, "--name", "fin"]
            + ["--runs", str(runs)]
        )
        == 0
    )
    argv = [
        "submit",
        "--track",
        "eri",
        "--data",
        str(eri_data),
        "--runs",
        str(runs),
        "--out",
        str(out),
    ]
    assert cli([*argv, "--ensemble", "fin"]) == 0
    text = capsys.readouterr().out
    assert "upload:" in text and str(out / "fin.zip") in text
    man = json.loads((out / "fin.manifest.json").read_text())
    assert man["method"] == "greedy" and len(man["members"]) == 2
    assert cli([*argv, "--ensemble", "fin"]) == 1  # exists, no --force
    assert cli([*argv, "--predictions", f"{folders[0]}/predictions-test.npz", "--name", "m0"]) == 0
    assert (out / "m0" / "predictions.csv").is_file()


def test_cli_expr_end_to_end_from_member_files(expr_data, tmp_path, capsys):
    """Two Expr member files -> abaw ensemble -> abaw submit (both formats) -> abaw validate."""
    from abaw.expr.scan import read_annotation
    from abaw.expr.submission import frame_list

    ann = sorted((expr_data / "EXPR_Classification_Challenge" / "Validation_Set").glob("*.txt"))
    labs = [read_annotation(p).astype(np.int64) for p in ann]
    video = np.concatenate([[p.stem] * len(y) for p, y in zip(ann, labs, strict=True)])
    frame = np.concatenate([np.arange(1, len(y) + 1) for y in labs])
    y = np.concatenate(labs)
    fl = frame_list(expr_data)
    rng = np.random.default_rng(0)
    folders = []
    for s in range(2):
        z = 1.5 * np.eye(8)[np.where(y >= 0, y, 0)] + 1.5 * rng.standard_normal((len(y), 8))
        d = tmp_path / f"m{s}"
        d.mkdir()
        Predictions("expr", "devel", {"video": video, "frame": frame}, np.exp(z), CLASSES, y).save(
            d / "predictions-devel.npz"
        )
        Predictions(
            "expr",
            "test",
            {"video": fl.video, "frame": fl.frame},
            rng.random((len(fl), 8)),
            CLASSES,
        ).save(d / "predictions-test.npz")
        folders.append(str(d))
    runs, out = str(tmp_path / "runs"), str(tmp_path / "subs")
    assert (
        cli(
            [
                "ensemble",
                "--track",
                "expr",
                "--predictions",
                *folders,
                "--runs",
                runs,
                "--name",
                "e",
            ]
        )
        == 0
    )
    assert "post-processing: smoothing" in capsys.readouterr().out
    base = [
        "submit",
        "--track",
        "expr",
        "--ensemble",
        "e",
        "--data",
        str(expr_data),
        "--runs",
        runs,
    ]
    assert cli([*base, "--out", out]) == 0
    assert cli([*base, "--out", out, "--format", "per-video", "--name", "e-videos"]) == 0
    for path in ("e/predictions.txt", "e.zip", "e-videos", "e-videos.zip"):
        assert cli(["validate", "--track", "expr", f"{out}/{path}", "--data", str(expr_data)]) == 0
    man = json.loads((tmp_path / "subs" / "e.manifest.json").read_text())
    assert man["postprocess"]["smoothing"] and man["submission"]["format"] == "single"


def test_expr_prediction_rows_matched_to_the_frame_list(expr_data):
    """Rows are aligned with the one matcher (abaw.predictions.match_rows): any order works,
    a row predicted twice is an error even when the frame list lacks it, extras are left out."""
    from abaw.expr.submission import frame_list, labels_for

    fl = frame_list(expr_data)
    pred = expr_pred(expr_data, shuffle=True)
    labels, notes = labels_for(pred, fl)
    rows = zip(pred.keys["video"].tolist(), pred.keys["frame"].tolist(), strict=True)
    want = dict(zip(rows, pred.values.argmax(1).tolist(), strict=True))
    assert (
        labels.tolist() == [want[k] for k in zip(fl.video.tolist(), fl.frame.tolist(), strict=True)]
        and notes == []
    )
    extra = {"video": np.array(["ghost", "ghost"]), "frame": np.array([1, 1])}
    keys = {k: np.concatenate([pred.keys[k], extra[k]]) for k in pred.keys}
    twice = Predictions("expr", "test", keys, np.vstack([pred.values, np.ones((2, 8))]), CLASSES)
    with pytest.raises(SubmissionError, match="the predictions list ghost/00001 twice"):
        labels_for(twice, fl)
    once = twice.take(np.arange(len(twice) - 1))
    assert np.array_equal(labels_for(once, fl)[0], labels)
    assert labels_for(once, fl)[1] == ["1 predicted frame(s) are not in the frame list; left out"]


def test_loader_and_submit_read_one_frame_list(expr_data, tmp_path):
    """One parser: a list saved on Windows (BOM, \\r\\n, a trailing blank line) gives the
    loader's test rows and submit's rows alike, in the list's order."""
    import shutil

    from abaw.expr.data import load_expr
    from abaw.expr.layout import TEST_FRAME_LIST
    from abaw.expr.submission import frame_list

    data = tmp_path / "expr"
    shutil.copytree(expr_data, data, ignore=shutil.ignore_patterns(".abaw_cache"))
    lst = data / TEST_FRAME_LIST
    lst.write_bytes(b"\xef\xbb\xbf" + lst.read_bytes().replace(b"\n", b"\r\n") + b"\r\n")
    d = load_expr(data)
    fl = frame_list(data)
    tv, tf = d.test_order
    assert np.array(d.videos)[tv].tolist() == fl.video.tolist()
    assert tf.tolist() == fl.frame.tolist() and len(fl) > 0


def test_submit_finds_the_frame_list_where_the_loader_does(expr_data, tmp_path):
    """One search for the test lists: a list in a `*test*` subfolder (ABAW6 ships
    `test_set_examples/`; teams rename it) is found by submit as by the loader, and two
    different lists are one error naming both, never a silent pick."""
    import shutil

    from abaw.expr.layout import TEST_FRAME_LIST
    from abaw.expr.submission import frame_list

    data = tmp_path / "expr"
    shutil.copytree(expr_data, data, ignore=shutil.ignore_patterns(".abaw_cache"))
    (data / "ABAW5_test_files").mkdir()
    shutil.move(data / TEST_FRAME_LIST, data / "ABAW5_test_files" / TEST_FRAME_LIST)
    fl = frame_list(data)
    assert fl.path == data / "ABAW5_test_files" / TEST_FRAME_LIST and len(fl) > 0
    (data / "ABAW5_test_files" / "CVPR_6th_ABAW_Expr_test_set_example.txt").write_text("x\n")
    with pytest.raises(DataError, match="more than one test frame list"):
        frame_list(data)


def test_eri_submit_accepts_the_folder_above_the_release(eri_data, tmp_path):
    """`--data` at the folder holding `c2_muse_reaction/`, as the release unpacks: the test IDs
    come from the one subfolder with the tables, as in the loader."""
    import shutil

    from abaw.eri.submission import test_ids

    parent = tmp_path / "release"
    shutil.copytree(eri_data, parent / "c2_muse_reaction")
    assert list(test_ids(parent)) == list(test_ids(eri_data))
