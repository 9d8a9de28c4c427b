"""Tests for the Expr data: abaw/expr/data.py and the modules behind it (loader, scan, store,
inspection), and the Expr bad-input catalogue."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from abaw.cli import main as cli_main
from abaw.errors import DataError
from abaw.expr.data import clear_cache, inspect_data, load_expr
from abaw.expr.layout import HEADER, TEST_FRAME_HEADER, TEST_FRAME_LIST, TEST_VIDEO_LIST
from abaw.expr.store import fill_rows
from abaw.expr.synth import write_expr

ANN = "EXPR_Classification_Challenge"
B = "IRv1-CASIA"


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("src") / "tiny"
    write_expr(out, scale="tiny", seed=0, backbones=[B, "RegNetY-1.6GF"])
    return out


@pytest.fixture
def tiny(tiny_src, tmp_path) -> Path:
    """A private copy (tests may break it)."""
    dst = tmp_path / "tiny"
    shutil.copytree(tiny_src, dst, ignore=shutil.ignore_patterns(".abaw_cache"))
    return dst


def _write_ann(path: Path, labels, header: str = HEADER) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(f"{x}\n" for x in labels))


def _hand_built(root: Path, feats: np.ndarray, labels: list[int]) -> Path:
    """One train video with `feats` (NaN rows = no face), one devel video, one test video."""
    _write_ann(root / ANN / "Train_Set" / "a.txt", labels)
    _write_ann(root / ANN / "Validation_Set" / "b.txt", [0, 1, 2])
    fdir = root / "features" / "X"
    fdir.mkdir(parents=True)
    np.save(fdir / "a.npy", feats.astype(np.float32))
    np.save(fdir / "b.npy", np.full((3, feats.shape[1]), 100.0, np.float32))
    np.save(fdir / "t.npy", np.ones((2, feats.shape[1]), np.float32))
    (root / TEST_VIDEO_LIST).write_text("t\n")
    (root / TEST_FRAME_LIST).write_text(
        f"{TEST_FRAME_HEADER}\nt/00002.jpg,\nt/00001.jpg,\nt/00003.jpg,\n"
    )
    return root


FEATS = np.array(
    [[np.nan, np.nan], [1, 10], [np.nan, np.nan], [np.nan, np.nan], [3, 30], [np.nan, np.nan]]
)


@pytest.mark.parametrize(
    "fill, src",
    [("nearest", [1, 1, 1, 4, 4, 4]), ("previous", [1, 1, 1, 1, 4, 4]), ("zero", None)],
)
def test_fill_policies_on_hand_built_video(tmp_path, fill, src):
    root = _hand_built(tmp_path / fill, FEATS, [0, 1, 1, -1, 4, 4])
    d = load_expr(root, fill=fill)
    valid = FEATS[~np.isnan(FEATS).any(axis=1)]
    z = (FEATS - valid.mean(0)) / valid.std(0)  # standardised with train frames only
    got = d.store.read(*d.offsets[:2])
    want = np.zeros_like(z) if src is None else z[src]
    want[[1, 4]] = z[[1, 4]]
    np.testing.assert_allclose(got, want, atol=2e-3)
    np.testing.assert_array_equal(d.has_face[:6], [False, True, False, False, True, False])
    np.testing.assert_array_equal(d.labels[:6], [0, 1, 1, -1, 4, 4])
    # devel features (100) did not enter the statistics: (100 - 2) / 1 and (100 - 20) / 10
    np.testing.assert_allclose(d.store.read(6, 9), [[98, 8]] * 3, atol=0.1)


def test_fill_rows_nearest_ties_take_earlier():
    x = np.arange(5, dtype=np.float32)[:, None].copy()
    valid = np.array([True, False, False, False, True])
    np.testing.assert_array_equal(fill_rows(x, valid, "nearest")[:, 0], [0, 0, 0, 4, 4])


def test_alignment_of_frames_to_labels(tiny):
    d = load_expr(tiny, [B])
    raw_stats = []
    for v, name in enumerate(d.videos):
        sl = d.video_slice(v)
        x = np.load(tiny / "features" / B / f"{name}.npy")
        if d.split[v] != "test":
            lines = (
                (
                    tiny
                    / ANN
                    / ("Train_Set" if d.split[v] == "train" else "Validation_Set")
                    / f"{name}.txt"
                )
                .read_text()
                .split()
            )
            np.testing.assert_array_equal(d.labels[sl], np.array(lines[1:], int))
        else:
            assert (d.labels[sl] == -1).all()
        n = sl.stop - sl.start
        x = x[:n]
        ok = ~np.isnan(x).any(axis=1)
        np.testing.assert_array_equal(d.has_face[sl][: len(x)], ok)
        raw_stats.append((x[ok], d.store.read(sl.start, sl.start + len(x))[ok]))
    # store row r of a video holds frame r+1 (standardised): an affine map of the raw row
    raw = np.concatenate([a for a, _ in raw_stats])
    got = np.concatenate([b for _, b in raw_stats])
    train_rows = np.concatenate([d.has_face[d.video_slice(v)] for v in d.indices("train")])
    x_tr = np.concatenate(
        [
            np.load(tiny / "features" / B / f"{d.videos[v]}.npy")[: d.offsets[v + 1] - d.offsets[v]]
            for v in d.indices("train")
        ]
    )
    x_tr = x_tr[~np.isnan(x_tr).any(axis=1)]
    assert len(x_tr) == train_rows.sum()
    np.testing.assert_allclose(got, (raw - x_tr.mean(0)) / x_tr.std(0), atol=0.02, rtol=3e-3)


def test_api_shapes_and_splits(tiny):
    d = load_expr(tiny)
    assert d.backbones == [B, "RegNetY-1.6GF"] and d.dims == {B: 512, "RegNetY-1.6GF": 888}
    assert d.store.shape == (d.offsets[-1], 1400) and d.backbone_columns("RegNetY-1.6GF") == slice(
        512, 1400
    )
    order = {"train": 0, "devel": 1, "test": 2}
    assert list(d.split) == sorted(d.split, key=order.get)
    assert any(v.endswith("_left") for v in d.videos) and any(
        v.endswith("_right") for v in d.videos
    )
    assert d.class_counts("train").sum() == ((d.frame_split() == "train") & (d.labels >= 0)).sum()
    fs = d.frame_split()
    tr = (fs == "train") & d.has_face
    x = d.store.read_rows(np.flatnonzero(tr))
    np.testing.assert_allclose(x.mean(0), 0, atol=0.01)
    np.testing.assert_allclose(x.std(0), 1, atol=0.01)
    idx = np.array([5, 3, 3, 100, 101, 102, 0])
    np.testing.assert_array_equal(
        d.store.read_rows(idx), np.concatenate([d.store.read(i, i + 1) for i in idx])
    )
    # The store can be handed to worker processes (e.g. DataLoader workers): it reopens its file there.
    with ProcessPoolExecutor(max_workers=1) as pool:
        rows = pool.submit(_read_in_worker, d.store, 10, 20).result()
    np.testing.assert_array_equal(rows, d.store.read(10, 20))


def _read_in_worker(store, start: int, stop: int) -> np.ndarray:
    return store.read(start, stop)


def test_test_frame_order_preserved(tiny):
    d = load_expr(tiny, [B])
    lines = (tiny / TEST_FRAME_LIST).read_text().splitlines()[1:]
    tv, tf = d.test_order
    assert [f"{d.videos[v]}/{f:05d}.jpg," for v, f in zip(tv, tf, strict=True)] == lines
    tests = (tiny / TEST_VIDEO_LIST).read_text().split()
    assert [d.videos[v] for v in d.indices("test")] == tests
    for v in tests:
        assert list(d.test_frames[v]) == [
            int(x.split("/")[1][:5]) for x in lines if x.startswith(v + "/")
        ]


def test_store_cached_then_rebuilt_on_changed_input(tiny):
    d1 = load_expr(tiny, [B])
    store = d1.store.path
    mtime = store.stat().st_mtime_ns
    d2 = load_expr(tiny, [B])
    assert d2.store.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(d1.store.read(0, 50), d2.store.read(0, 50))
    np.testing.assert_array_equal(d1.labels, d2.labels)
    name = d1.videos[0]
    f = tiny / "features" / B / f"{name}.npy"
    x = np.load(f)
    np.save(f, x + 5.0)  # the first train video changes: statistics and its rows change
    d3 = load_expr(tiny, [B])
    assert d3.store.path.stat().st_mtime_ns != mtime
    assert not np.allclose(d3.store.read(0, 50), d1.store.read(0, 50))
    clear_cache(tiny)
    assert not (tiny / ".abaw_cache" / "expr").exists()


def test_npy_and_csv_load_to_same_arrays(tmp_path):
    write_expr(tmp_path / "n", scale="tiny", seed=4, backbones=[B])
    write_expr(tmp_path / "c", scale="tiny", seed=4, backbones=[B], feature_format="csv")
    a, b = load_expr(tmp_path / "n"), load_expr(tmp_path / "c")
    assert a.videos == b.videos
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.has_face, b.has_face)
    np.testing.assert_allclose(a.store.load_all(), b.store.load_all(), atol=2e-2)


def test_recognition_folder_name_and_filled_test_frames(tiny):
    (tiny / ANN).rename(tiny / "EXPR_Recognition_Challenge")
    lst = tiny / TEST_FRAME_LIST
    v = lst.read_text().splitlines()[1].split("/")[0]
    n = len(np.load(tiny / "features" / B / f"{v}.npy"))
    lst.write_text(lst.read_text() + f"{v}/{n + 3:05d}.jpg,\n")
    d = load_expr(tiny, [B])
    vi = d.videos.index(v)
    assert d.offsets[vi + 1] - d.offsets[vi] == n + 3
    assert not d.has_face[d.offsets[vi + 1] - 1]
    assert any(v in w and "filled" in w for w in d.warnings)


def test_video_without_any_face_is_zero_filled(tiny):
    d0 = load_expr(tiny, [B])
    name = d0.videos[d0.indices("devel")[0]]
    f = tiny / "features" / B / f"{name}.npy"
    np.save(f, np.full_like(np.load(f), np.nan))
    d = load_expr(tiny, [B])
    sl = d.video_slice(d.videos.index(name))
    assert (d.store.read(sl.start, sl.stop) == 0).all() and not d.has_face[sl].any()
    assert any(name in w and "zeros" in w for w in d.warnings)


def test_inspect_report(tiny):
    rep = inspect_data(tiny)
    assert rep.problems == []
    assert rep.summary["annotation folder"] == ANN
    titles = [s.title for s in rep.sections]
    assert any("Class frequencies" in t for t in titles) and any("_left" in t for t in titles)
    miss = next(s for s in rep.sections if "without" in s.title or "no" in s.title.lower())
    assert {r[0] for r in miss.rows} == {"train", "devel", "test"} and all(
        r[1] > 0 for r in miss.rows
    )


def test_inspect_collects_every_problem_and_cli_exit_1(tiny, capsys):
    files = sorted((tiny / ANN / "Train_Set").glob("*.txt"))
    files[0].write_text("Neutral,Anger\n0\n")
    _write_ann(files[1], [0, 1, 9])
    rep = inspect_data(tiny, use_cache=False)
    joined = "\n".join(rep.problems)
    assert files[0].name in joined and files[1].name in joined and len(rep.problems) >= 2
    assert cli_main(["inspect", "--track", "expr", "--data", str(tiny)]) == 1


def test_inspect_collects_value_problems(tiny):
    fs = sorted((tiny / "features" / B).glob("*.npy"))
    for f in fs[:2]:
        x = np.load(f)
        x[3, 7] = np.inf
        np.save(f, x)
    rep = inspect_data(tiny, use_cache=False)
    assert sum("infinite" in p for p in rep.problems) == 2


# ---- bad-input catalogue: each message names the file and the line / column ----


def _first(root: Path, split: str = "Train_Set") -> Path:
    return sorted((root / ANN / split).glob("*.txt"))[0]


def _err(root: Path, backbones=None) -> str:
    with pytest.raises(DataError) as e:
        load_expr(root, backbones, use_cache=False)
    return str(e.value)


def test_bad_missing_annotation_folder(tiny):
    shutil.rmtree(tiny / ANN)
    msg = _err(tiny)
    assert (
        str(tiny) in msg
        and "EXPR_Classification_Challenge/" in msg
        and "EXPR_Recognition_Challenge/" in msg
    )


def test_bad_wrong_header(tiny):
    f = _first(tiny)
    f.write_text(f.read_text().replace("Neutral,", "Neutral;", 1))
    msg = _err(tiny)
    assert f.name in msg and "line 1" in msg and "wrong header" in msg


def test_bad_non_integer_label(tiny):
    f = _first(tiny)
    lines = f.read_text().splitlines()
    lines[5] = "4.5"
    f.write_text("\n".join(lines) + "\n")
    msg = _err(tiny)
    assert f.name in msg and "line 6" in msg and "'4.5'" in msg


@pytest.mark.parametrize("bad", [8, -2])
def test_bad_label_out_of_range(tiny, bad):
    f = _first(tiny, "Validation_Set")
    lines = f.read_text().splitlines()
    lines[10] = str(bad)
    f.write_text("\n".join(lines) + "\n")
    msg = _err(tiny)
    assert f.name in msg and "line 11" in msg and f"found {bad}" in msg


def test_bad_empty_annotation_file(tiny):
    f = _first(tiny)
    f.write_text("")
    msg = _err(tiny)
    assert f.name in msg and "line 1" in msg and "empty" in msg


def test_bad_feature_width_differs(tiny):
    f = sorted((tiny / "features" / B).glob("*.npy"))[3]
    np.save(f, np.zeros((10, 500), np.float32))
    msg = _err(tiny, [B])
    assert f.name in msg and "expected 512" in msg and "found 500" in msg


def test_bad_non_numeric_csv_value(tmp_path):
    root = tmp_path / "c"
    write_expr(root, scale="tiny", seed=0, backbones=[B], feature_format="csv")
    f = sorted((root / "features" / B).glob("*.csv"))[0]
    lines = f.read_text().splitlines()
    cells = lines[4].split(",")
    cells[3] = "abc"
    lines[4] = ",".join(cells)
    f.write_text("\n".join(lines) + "\n")
    msg = _err(root)
    assert f.name in msg and "line 5" in msg and "column 'f2'" in msg and "'abc'" in msg


def test_bad_inf_in_features(tiny):
    f = sorted((tiny / "features" / B).glob("*.npy"))[0]
    x = np.load(f)
    x[7, 12] = -np.inf
    np.save(f, x)
    msg = _err(tiny, [B])
    assert f.name in msg and "column 13" in msg and "frame 8" in msg


def test_bad_features_much_longer_than_annotation(tiny):
    f = _first(tiny)
    feat = tiny / "features" / B / f"{f.stem}.npy"
    lines = f.read_text().splitlines()
    n_feat = len(np.load(feat))
    f.write_text("\n".join(lines[: n_feat - 20]) + "\n")  # annotation 21 frames shorter
    msg = _err(tiny, [B])
    assert feat.name in msg and "longer than its annotation" in msg


def test_bad_unknown_backbone(tiny):
    msg = _err(tiny, ["IRv1-VGGFace3"])
    assert "IRv1-VGGFace3" in msg and B in msg


def test_bad_missing_feature_file(tiny):
    f = _first(tiny, "Validation_Set")
    (tiny / "features" / B / f"{f.stem}.npy").unlink()
    msg = _err(tiny, [B])
    assert f"{f.stem}.npy" in msg and "missing feature file" in msg


def test_bad_test_frame_list_row(tiny):
    lst = tiny / TEST_FRAME_LIST
    lines = lst.read_text().splitlines()
    lines[3] = lines[3].replace(".jpg", ".png")
    lst.write_text("\n".join(lines) + "\n")
    msg = _err(tiny, [B])
    assert TEST_FRAME_LIST in msg and "line 4" in msg


def test_bad_test_video_without_features(tiny):
    (tiny / TEST_VIDEO_LIST).write_text((tiny / TEST_VIDEO_LIST).read_text() + "ghost\n")
    msg = _err(tiny, [B])
    assert "ghost.npy" in msg and "test list" in msg


def test_bad_video_name_with_path_separator(tiny):
    lst = tiny / TEST_FRAME_LIST
    lines = lst.read_text().splitlines()
    lines[2] = "../evil/00001.jpg,"
    lst.write_text("\n".join(lines) + "\n")
    msg = _err(tiny, [B])
    assert TEST_FRAME_LIST in msg and "line 3" in msg and "../evil" in msg


def test_bad_test_frame_listed_twice(tiny):
    lst = tiny / TEST_FRAME_LIST
    lst.write_text(lst.read_text() + lst.read_text().splitlines()[1] + "\n")
    msg = _err(tiny, [B])
    assert TEST_FRAME_LIST in msg and "twice" in msg


def test_bad_feature_array_not_2d(tiny):
    f = sorted((tiny / "features" / B).glob("*.npy"))[0]
    np.save(f, np.zeros(10, np.float32))
    msg = _err(tiny, [B])
    assert f.name in msg and "2-D" in msg


def test_nothing_half_written_after_a_failed_build(tiny):
    d = load_expr(tiny, [B])
    cache = d.store.path.parent
    f = sorted((tiny / "features" / B).glob("*.npy"))[-1]  # a test video: read last
    x = np.load(f)
    x[0, 0] = np.inf
    np.save(f, x)
    _err(tiny, [B])
    assert not (cache / "manifest.json").exists()  # never a cache that looks valid but is not
    assert not [p for p in os.listdir(cache) if p.endswith(".tmp")]
