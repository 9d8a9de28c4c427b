"""Expr data-layer hardening (issue #9): leakage, bad files, test lists, caches, inspect tables.

Every test starts from a tiny synthetic set (or a hand-built one) and breaks one thing the
way real data breaks; the user must get one sentence naming the file, not a traceback and
not silence.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from abaw.errors import DataError
from abaw.expr.data import inspect_data, load_expr
from abaw.expr.layout import HEADER, TEST_FRAME_HEADER, TEST_FRAME_LIST, TEST_VIDEO_LIST
from abaw.expr.synth import write_expr
from abaw.io import cache_dir_for

ANN = "EXPR_Classification_Challenge"
B, R = "IRv1-CASIA", "RegNetY-1.6GF"


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hard-src") / "tiny"
    write_expr(out, scale="tiny", seed=3, backbones=[B, R])
    return out


@pytest.fixture
def tiny(tiny_src, tmp_path) -> Path:
    dst = tmp_path / "tiny"
    shutil.copytree(tiny_src, dst, ignore=shutil.ignore_patterns(".abaw_cache"))
    return dst


def err(root: Path, backbones=None, **kw) -> str:
    with pytest.raises(DataError) as info:
        load_expr(root, backbones, use_cache=False, **kw)
    return str(info.value)


def train_videos(root: Path) -> list[Path]:
    return sorted((root / ANN / "Train_Set").glob("*.txt"))


def _write_ann(path: Path, labels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "\n" + "".join(f"{x}\n" for x in labels))


# ----------------------------------------------------------------- leakage


def test_video_in_train_and_validation_is_an_error_naming_it(tiny):
    f = train_videos(tiny)[2]
    shutil.copy(f, tiny / ANN / "Validation_Set" / f.name)
    msg = err(tiny)
    assert "1 video(s) in more than one split" in msg
    assert f"{f.name} (train) / {f.name} (devel)" in msg
    rep = inspect_data(tiny, use_cache=False)
    assert any("more than one split" in p for p in rep.problems)


def test_test_video_that_is_annotated_is_an_error(tiny):
    test = (tiny / TEST_VIDEO_LIST).read_text().split()[0]
    _write_ann(tiny / ANN / "Train_Set" / f"{test}.txt", [0] * 5)
    msg = err(tiny)
    assert "more than one split" in msg and f"{test} (test)" in msg


# ----------------------------------------------------------------- unreadable files


def test_truncated_npy_names_expected_and_found_bytes(tiny):
    f = tiny / "features" / B / f"{train_videos(tiny)[0].stem}.npy"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])  # an interrupted copy: header intact
    msg = err(tiny, [B])
    assert str(f) in msg and "truncated .npy file" in msg
    assert f"found {len(data) // 2:,} bytes" in msg and "copy it again" in msg


def test_annotation_not_utf8_names_byte_and_line(tiny):
    f = train_videos(tiny)[1]
    lines = f.read_text().split("\n")
    lines[3] = "é"
    f.write_bytes("\n".join(lines).encode("latin-1"))
    msg = err(tiny)
    assert f"{f}, line 4: not UTF-8 text" in msg and "byte 0xe9" in msg and "iconv" in msg


@pytest.mark.parametrize("kind", ["directory", "dangling", "loop"])
def test_bad_feature_path_is_named(tiny, kind):
    f = tiny / "features" / B / f"{train_videos(tiny)[0].stem}.npy"
    f.unlink()
    if kind == "directory":
        f.mkdir()
        want = "a directory"
    elif kind == "dangling":
        os.symlink("/nowhere/x.npy", f)
        want = "dangling symbolic link"
    else:
        os.symlink(f.name, f)
        want = "symbolic link loop"
    msg = err(tiny, [B])
    assert str(f) in msg and want in msg and "missing feature file" not in msg


def _csv_set(root: Path) -> Path:
    write_expr(root, scale="tiny", seed=5, backbones=[B], feature_format="csv")
    return root


def test_csv_row_with_more_values_than_the_header(tmp_path):
    root = _csv_set(tmp_path / "c")
    f = sorted((root / "features" / B).glob("*.csv"))[0]
    lines = f.read_text().split("\n")
    lines[4] += ",1.0"
    f.write_text("\n".join(lines))
    msg = err(root, [B])
    assert f"{f}, line 5: wrong column count" in msg and "found 514" in msg


def test_csv_float32_overflow_names_line_and_column(tmp_path):
    root = _csv_set(tmp_path / "c")
    f = sorted((root / "features" / B).glob("*.csv"))[0]
    lines = f.read_text().split("\n")
    cells = lines[2].split(",")
    cells[3] = "4e38"
    lines[2] = ",".join(cells)
    f.write_text("\n".join(lines))
    header = lines[0].split(",")
    msg = err(root, [B])
    assert f"{f}, line 3, column '{header[3]}': value too large for float32" in msg
    assert "4e38" in msg


def test_npy_float64_overflow_names_frame_and_column(tiny):
    f = tiny / "features" / B / f"{train_videos(tiny)[0].stem}.npy"
    x = np.load(f).astype(np.float64)
    x[6, 9] = 4e38
    np.save(f, x)
    msg = err(tiny, [B])
    assert str(f) in msg and "too large for float32 in frame 7" in msg and "column 10" in msg


def test_annotation_far_longer_than_features_warns_per_video(tiny):
    f = train_videos(tiny)[0]
    feat = tiny / "features" / B / f"{f.stem}.npy"
    n = len(f.read_text().strip().split("\n")) - 1
    np.save(feat, np.load(feat)[: n // 2])
    d = load_expr(tiny, [B], use_cache=False)
    w = next(w for w in d.warnings if str(feat) in w)
    assert f"features end at frame {n // 2}" in w and f"annotation has {n} frames" in w


# ----------------------------------------------------------------- errors inside the store build


def _devel_feature(root: Path, ext: str = "npy") -> Path:
    dev = sorted((root / ANN / "Validation_Set").glob("*.txt"))[0]
    return root / "features" / B / f"{dev.stem}.{ext}"


@pytest.mark.parametrize("fault", ["inf", "too long"])
def test_bad_devel_features_name_the_file_not_the_store(tiny, fault):
    """The second pass (devel and test videos) raised under a store writer whose close()
    replaced the real error with "store written with k of n rows"."""
    f = _devel_feature(tiny)
    x = np.load(f)
    if fault == "inf":
        x[3, 2] = np.inf
        want = "infinite value in frame 4"
    else:
        x = np.concatenate([x, x[:20]])
        want = "feature file longer than its annotation"
    np.save(f, x)
    msg = err(tiny, [B])
    assert str(f) in msg and want in msg and "store written" not in msg
    store = cache_dir_for(tiny, "expr")
    assert not [p for p in store.rglob("*") if p.is_file()], "no half-written store is left"


def test_non_numeric_cell_in_a_devel_csv_names_line_and_column(tmp_path):
    root = _csv_set(tmp_path / "c")
    f = _devel_feature(root, "csv")
    lines = f.read_text().split("\n")
    cells = lines[5].split(",")
    cells[2] = "abc"
    lines[5] = ",".join(cells)
    f.write_text("\n".join(lines))
    msg = err(root, [B])
    assert f"{f}, line 6" in msg and "abc" in msg and "store written" not in msg


# ----------------------------------------------------------------- test lists


def test_abaw6_test_lists_in_a_test_set_subfolder_are_found(tiny):
    frames = (tiny / TEST_FRAME_LIST).read_text()
    videos = (tiny / TEST_VIDEO_LIST).read_text()
    (tiny / TEST_FRAME_LIST).unlink()
    (tiny / TEST_VIDEO_LIST).unlink()
    sub = tiny / "test_set_examples"
    sub.mkdir()
    (sub / "CVPR_6th_ABAW_Expr_test_set_example.txt").write_text(frames)
    (tiny / "Expression_Recognition_Challenge_test_set_release.txt").write_text(videos)
    d = load_expr(tiny, [B])
    assert len(d.test_order[0]) == len(frames.strip().split("\n")) - 1
    assert not any("NO TEST SET" in w for w in d.warnings)


def test_test_lists_named_explicitly(tiny):
    (tiny / TEST_FRAME_LIST).rename(tiny / "my_frames.txt")
    (tiny / TEST_VIDEO_LIST).rename(tiny / "my_videos.txt")
    none = load_expr(tiny, [B])
    assert len(none.test_order[0]) == 0 and any("NO TEST SET" in w for w in none.warnings)
    d = load_expr(tiny, [B], test_frames="my_frames.txt", test_videos=tiny / "my_videos.txt")
    assert len(d.test_order[0]) > 0 and not any("NO TEST SET" in w for w in d.warnings)
    msg = err(tiny, [B], test_frames="nope.txt")
    assert "nope.txt" in msg and "test frame list not found" in msg


def test_two_frame_lists_of_different_editions_is_an_error(tiny):
    shutil.copy(tiny / TEST_FRAME_LIST, tiny / "CVPR_5th_ABAW_EXPR_test_set_sample.csv")
    msg = err(tiny, [B])
    assert "more than one test frame list" in msg and "data.test_frames" in msg


def test_no_test_list_is_loud_at_train_time(tiny):
    from abaw.expr.track import TRACK
    from abaw.sweep import build_configs

    (tiny / TEST_FRAME_LIST).unlink()
    (tiny / TEST_VIDEO_LIST).unlink()
    configs = build_configs(
        {"data.backbones": [B], "data.window": 16}, TRACK.sections("fusion"), where="t"
    )
    task = TRACK.prepare(tiny, "fusion", configs, "cpu")
    assert any("NO TEST SET" in n and "EMPTY" in n for n in task.notes)
    rep = inspect_data(tiny)
    assert any("NO TEST SET" in w for w in rep.warnings)


def test_sweep_data_names_the_test_lists(tiny):
    from abaw.expr.track import TRACK
    from abaw.sweep import build_configs

    (tiny / TEST_FRAME_LIST).rename(tiny / "frames.txt")
    (tiny / TEST_VIDEO_LIST).rename(tiny / "videos.txt")
    flat = {
        "data.backbones": [B],
        "data.window": 16,
        "data.test_frames": "frames.txt",
        "data.test_videos": "videos.txt",
    }
    task = TRACK.prepare(tiny, "fusion", build_configs(flat, TRACK.sections("fusion")), "cpu")
    assert not any("NO TEST SET" in n for n in task.notes)
    assert len(task.data.test_order[0]) > 0


# ----------------------------------------------------------------- caches


def test_backbone_order_shares_one_store(tiny):
    a = load_expr(tiny, [B, R])
    b = load_expr(tiny, [R, B])
    stores = [p for p in cache_dir_for(tiny, "expr").iterdir() if p.is_dir()]
    assert len(stores) == 1
    assert a.backbones == b.backbones == [B, R]
    np.testing.assert_array_equal(
        a.store.read(0, 50)[:, a.backbone_columns(R)], b.store.read(0, 50)[:, b.backbone_columns(R)]
    )


def test_in_place_change_keeping_size_and_mtime_rebuilds(tiny):
    first = load_expr(tiny, [B])
    before = first.store.read(0, 20)
    v = 0
    f = tiny / "features" / B / f"{first.videos[v]}.npy"
    st = f.stat()
    x = np.load(f)
    x[np.isfinite(x)] += 1000.0  # same shape, same size
    with open(f, "r+b") as fh:  # in place, same inode
        np.save(fh, x)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    second = load_expr(tiny, [B])
    assert not np.allclose(before, second.store.read(0, 20), atol=1e-2)


def test_leftover_tmp_files_are_removed(tiny):
    load_expr(tiny, [B])
    store = next(p for p in cache_dir_for(tiny, "expr").iterdir() if p.is_dir())
    old, fresh = store / ".features.f16.npy.x1.tmp", store / ".features.f16.npy.x2.tmp"
    old.write_bytes(b"\0" * 100)
    fresh.write_bytes(b"\0" * 100)
    t = time.time() - 7200
    os.utime(old, (t, t))
    load_expr(tiny, [B])
    assert not old.exists() and fresh.exists()


# ----------------------------------------------------------------- data root, inspect


def test_data_pointed_at_the_parent_folder(tiny, tmp_path):
    parent = tmp_path / "release"
    parent.mkdir()
    tiny.rename(parent / "aff-wild2")
    d = load_expr(parent, [B])
    assert d.root == parent / "aff-wild2"
    assert any("using its subfolder aff-wild2/" in w for w in d.warnings)


def test_inspect_pair_split_across_sets_shows_each_member(tiny):
    """A `_right` video in test whose `_left` is annotated in train: each member's own split."""
    left = next(p for p in train_videos(tiny) if p.stem.endswith("_left"))
    base = left.stem[: -len("_left")]
    right = left.with_name(f"{base}_right.txt")
    right.unlink()
    (tiny / TEST_VIDEO_LIST).write_text((tiny / TEST_VIDEO_LIST).read_text() + f"{base}_right\n")
    with open(tiny / TEST_FRAME_LIST, "a") as fh:
        fh.write(f"{base}_right/00001.jpg,\n")
    rep = inspect_data(tiny, use_cache=False)
    assert rep.problems == [], rep.problems
    sec = next(s for s in rep.sections if "two people" in s.title)
    row = next(r for r in sec.rows if r[0] == base)
    assert row[1:] == ["train", "test", "yes"]
    assert "annotation files" not in sec.columns


def test_inspect_clean_set_no_false_alarm(tiny_src, tmp_path, capsys):
    from abaw.cli import main

    root = tmp_path / "clean"
    shutil.copytree(tiny_src, root)
    rep = inspect_data(root)
    assert rep.problems == []
    # Only the documented fill notes (split level, and test frames listed beyond a test
    # video's features): no per-video, test-list or data-root warning.
    assert all(
        "have no features for some backbone" in w or "the frames beyond are filled" in w
        for w in rep.warnings
    ), rep.warnings
    miss = next(s for s in rep.sections if "no features" in s.title)
    assert [r[3] for r in miss.rows] == [
        "annotated frames",
        "annotated frames",
        "frames of the test list",
    ]
    assert main(["inspect", "--track", "expr", "--data", str(root)]) == 0
    assert "No problems found." in capsys.readouterr().out


def test_unknown_backbone_shows_the_fix(tiny):
    msg = err(tiny, ["VGG"])
    assert f"""--set 'data.backbones=["{B}", "{R}"]'""" in msg


def test_hand_built_test_frame_list_with_header(tmp_path):
    root = tmp_path / "h"
    _write_ann(root / ANN / "Train_Set" / "a.txt", [0, 1, 2])
    _write_ann(root / ANN / "Validation_Set" / "b.txt", [0, 1, 2])
    fdir = root / "features" / "X"
    fdir.mkdir(parents=True)
    for v in "abt":
        np.save(fdir / f"{v}.npy", np.ones((3, 2), np.float32))
    (root / TEST_FRAME_LIST).write_text(f"{TEST_FRAME_HEADER}\nt/00001.jpg,\nt/00003.jpg,\n")
    d = load_expr(root)
    assert d.test_order[1].tolist() == [1, 3]
