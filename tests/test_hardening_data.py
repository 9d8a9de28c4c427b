"""Data-layer hardening, the remaining classes of issue #18, and the data identity a study
records (`Track.data_identity`).

A cut feature store, folders without permission (the tests run as root, who reads anything,
so the OS is made to answer as it would for another user), CSV features covering part of a
video, two feature files for one video, a test video that is also annotated, and devel
features that are copies (or hard links) of training features.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from abaw.eri.data import load_eri
from abaw.eri.synth import write_eri
from abaw.errors import DataError
from abaw.expr.data import inspect_data, load_expr
from abaw.expr.layout import HEADER, SHORT_FEATURES_FRAMES, TEST_VIDEO_LIST
from abaw.expr.synth import write_expr
from abaw.track import get_track

ANN = "EXPR_Classification_Challenge"
B = "IRv1-CASIA"
FEATS = ["eGeMAPS", "FAUs"]


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("data18")
    write_expr(base / "expr", scale="tiny", seed=3, backbones=[B])
    write_expr(base / "expr-csv", scale="tiny", seed=3, backbones=[B], feature_format="csv")
    write_eri(base / "eri", scale="tiny", seed=2, features=FEATS, n_jobs=1)
    write_eri(base / "eri-seed5", scale="tiny", seed=5, features=FEATS, n_jobs=1)
    return base


@pytest.fixture
def copy(src, tmp_path):
    def make(name: str) -> Path:
        ignore = shutil.ignore_patterns(".abaw_cache")
        return Path(shutil.copytree(src / name, tmp_path / name, ignore=ignore))

    return make


def _split_videos(root: Path, folder: str) -> list[Path]:
    return sorted((root / ANN / folder).glob("*.txt"))


def _deny(
    monkeypatch, folder: Path, *, listing: bool = True, stat: bool = False, enter: bool = False
) -> None:
    """Make the OS refuse `folder` as it would a user without r (listing) or x (stat) on it;
    `enter`: listed, but nothing inside it (`folder/.`, its entries) can be looked at, as
    for mode 600 or 644 (r without x)."""
    real_scandir, real_stat = os.scandir, os.stat
    target = os.path.abspath(folder)

    def scandir(p="."):
        if listing and os.path.abspath(p) == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_scandir(p)

    def stat_(p, *a, **kw):
        if isinstance(p, str | os.PathLike):
            inside = os.path.join(os.path.abspath(os.path.dirname(p)), os.path.basename(p))
            if (stat and os.path.abspath(p) == target) or (
                enter and inside.startswith(target + os.sep)
            ):
                raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_stat(p, *a, **kw)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat_)


# ---------------------------------------------------------------- a short read in the store


def test_a_feature_store_cut_short_is_rebuilt_not_read(copy):
    root = copy("expr")
    d = load_expr(root)
    path, size = d.store.path, d.store.path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])  # a full disk during the last write
    d = load_expr(root)
    assert d.store.path.stat().st_size == size and d.store.is_complete()
    assert d.store.read(0, len(d.store)).shape[0] == len(d.labels)


# ---------------------------------------------------------------- folders without permission


@pytest.mark.parametrize("which", ["backbone", "split"])
def test_an_unreadable_expr_folder_is_named_not_reported_empty(copy, monkeypatch, which):
    root = copy("expr")
    folder = root / "features" / B if which == "backbone" else root / ANN / "Train_Set"
    _deny(monkeypatch, folder)
    with pytest.raises(DataError) as info:
        load_expr(root, use_cache=False)
    msg = str(info.value)
    assert msg.startswith(f"{folder}: cannot read the folder") and "permission denied" in msg
    assert "chmod a+rx" in msg


def test_a_folder_that_cannot_be_entered_is_named(copy, monkeypatch):
    root = copy("expr")
    _deny(monkeypatch, root / ANN, listing=False, stat=True)
    with pytest.raises(DataError, match=r"cannot read the folder.*permission denied"):
        load_expr(root, use_cache=False)


@pytest.mark.parametrize("which", ["backbone", "split", "annotation root"])
def test_a_folder_that_can_be_listed_but_not_entered_is_named_with_the_read_fix(
    copy, monkeypatch, which
):
    """Mode 600 on a folder: its entries are listed, then each is refused. The error named a
    child file and told the user to make it writable."""
    root = copy("expr")
    folder = {
        "backbone": root / "features" / B,
        "split": root / ANN / "Train_Set",
        "annotation root": root / ANN,
    }[which]
    _deny(monkeypatch, folder, listing=False, enter=True)
    with pytest.raises(DataError) as info:
        load_expr(root, use_cache=False)
    msg = str(info.value)
    assert msg.startswith(f"{folder}: cannot read the folder"), msg
    assert "can be listed but not entered" in msg and "readable and searchable: chmod a+rx" in msg
    assert "u+w" not in msg


def test_an_eri_folder_that_cannot_be_entered_is_named(copy, monkeypatch):
    root = copy("eri")
    folder = root / "feats" / "FAUs"
    _deny(monkeypatch, folder, listing=False, enter=True)
    with pytest.raises(DataError) as info:
        load_eri(root, FEATS, use_cache=False, n_jobs=1)
    assert str(info.value).startswith(f"{folder}: cannot read the folder")
    assert "chmod a+rx" in str(info.value)


def test_the_last_resort_names_a_closed_folder_and_gives_reads_the_read_fix(tmp_path, monkeypatch):
    """abaw.io.os_failure (the CLI's net for an OSError no loader named): a child of a
    folder that cannot be entered names the folder; a file that cannot be read gets the
    read fix, never "make it writable"."""
    import abaw.access
    from abaw.io import os_failure

    folder = tmp_path / "closed"
    folder.mkdir()
    child = folder / "x.npy"
    child.write_bytes(b"x")
    _deny(monkeypatch, folder, listing=False, enter=True)
    msg = str(os_failure(PermissionError(errno.EACCES, "Permission denied", str(child))))
    assert msg.startswith(f"{folder}: cannot read the folder") and "chmod a+rx" in msg
    monkeypatch.undo()

    def refuse(path, *a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(abaw.access, "open", refuse, raising=False)
    msg = str(os_failure(PermissionError(errno.EACCES, "Permission denied", str(child))))
    assert msg.startswith(f"{child}:") and "readable (chmod a+r)" in msg and "u+w" not in msg


def test_a_run_folder_that_cannot_be_entered_names_the_folder_not_the_probe(tmp_path, monkeypatch):
    from abaw.io import writable_dir

    runs = tmp_path / "runs"
    runs.mkdir()
    _deny(monkeypatch, runs, listing=False, enter=True)
    real = os.open

    def refuse(path, *a, **kw):  # mkstemp's create inside the folder
        if str(path).startswith(str(runs) + os.sep):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(DataError) as info:
        writable_dir(runs, "run folder")
    msg = str(info.value)
    assert msg.startswith(f"{runs}: cannot write the run folder (found permission denied")
    assert "chmod u+rwx" in msg and ".abaw-write-test" not in msg


@pytest.mark.parametrize("which", ["feature set", "features root"])
def test_an_unreadable_eri_folder_is_named(copy, monkeypatch, which):
    root = copy("eri")
    folder = root / "feats" / "FAUs" if which == "feature set" else root / "feats"
    _deny(monkeypatch, folder)
    with pytest.raises(DataError) as info:
        load_eri(root, FEATS, use_cache=False, n_jobs=1)
    assert str(info.value).startswith(f"{folder}: cannot read the folder")
    assert "permission denied" in str(info.value)


# ---------------------------------------------------------------- Expr feature files


def test_csv_features_covering_part_of_a_train_video_warn(copy):
    root = copy("expr-csv")
    video = _split_videos(root, "Train_Set")[0].stem
    f = root / "features" / B / f"{video}.csv"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:11]) + "\n")  # frames 1..10 of a longer video
    d = load_expr(root, use_cache=False)
    warn = [w for w in d.warnings if str(f) in w]
    assert warn and "features end at frame 10" in warn[0] and "filled" in warn[0]


def _keep_frames(f: Path, keep) -> list[int]:
    """Keep the rows of feature CSV `f` whose frame passes `keep`; the frames kept."""
    lines = f.read_text().splitlines()
    rows = [r for r in lines[1:] if keep(int(r.split(",", 1)[0]))]
    f.write_text("\n".join([lines[0], *rows]) + "\n")
    return [int(r.split(",", 1)[0]) for r in rows]


@pytest.mark.parametrize("split", ["Train_Set", "Validation_Set"])
def test_csv_features_covering_the_middle_of_a_video_warn(copy, split):
    """Frames 91-120 of 136: the file ends near the video's end, so a check of its last
    frame alone said nothing; the frames it lists are counted now."""
    root = copy("expr-csv")
    ann = _split_videos(root, split)[0]
    n = len(ann.read_text().strip().split("\n")) - 1
    f = root / "features" / B / f"{ann.stem}.csv"
    (first, *_, last) = kept = _keep_frames(f, lambda i: n - 45 <= i <= n - 10)
    assert last > n - SHORT_FEATURES_FRAMES, "ends within the old check's tolerance"
    d = load_expr(root, use_cache=False)
    warn = [w for w in d.warnings if str(f) in w]
    assert warn, d.warnings
    holes = "" if len(kept) == last - first + 1 else f", {len(kept)} of them listed"
    assert (
        f"features cover frames {first}-{last} of {n}{holes}: the other {n - len(kept)}"
        in (warn[0])
    )
    assert "filled" in warn[0]


def test_a_training_run_repeats_the_per_file_warnings(copy):
    from abaw.expr.track import TRACK
    from abaw.sweep import build_configs

    root = copy("expr-csv")
    ann = _split_videos(root, "Train_Set")[0]
    f = root / "features" / B / f"{ann.stem}.csv"
    f.write_text("\n".join(f.read_text().splitlines()[:11]) + "\n")
    configs = build_configs(
        {"data.backbones": [B], "data.window": 16}, TRACK.sections("fusion"), where="t"
    )
    task = TRACK.prepare(root, "fusion", configs, "cpu")
    assert any(str(f) in n and "features end at frame 10" in n for n in task.notes), task.notes


def test_two_feature_files_for_one_video_say_which_is_used(copy):
    root = copy("expr")
    video = _split_videos(root, "Validation_Set")[0].stem
    (root / "features" / B / f"{video}.csv").write_text("frame,f1\n1,0.5\n")
    d = load_expr(root, use_cache=False)
    warn = [w for w in d.warnings if "two feature files" in w]
    assert warn and f"{video}.npy and {video}.csv" in warn[0]
    assert f"{video}.npy is used" in warn[0]


def test_a_test_video_that_is_annotated_names_the_list_file(copy):
    root = copy("expr")
    test = (root / TEST_VIDEO_LIST).read_text().split()[0]
    ann = root / ANN / "Train_Set" / f"{test}.txt"
    ann.write_text(HEADER + "\n" + "0\n" * 5)
    with pytest.raises(DataError) as info:
        load_expr(root, use_cache=False)
    msg = str(info.value)
    assert f"{test}.txt (train) / {test} (test)" in msg
    assert f"the test video(s) among them are listed in {root / TEST_VIDEO_LIST}" in msg


# ---------------------------------------------------------------- leakage


def test_devel_eri_features_copied_or_linked_from_train_warn(copy):
    root = copy("eri")
    part = [line.split(",") for line in (root / "partition.csv").read_text().splitlines()[1:]]
    train = [i.strip("[]") for i, s in part if s == "train"]
    devel = [i.strip("[]") for i, s in part if s == "devel"]
    folder = root / "feats" / "FAUs"
    shutil.copy(folder / f"{train[0]}.csv", folder / f"{devel[0]}.csv")
    (folder / f"{devel[1]}.csv").unlink()
    os.link(folder / f"{train[1]}.csv", folder / f"{devel[1]}.csv")
    for use_cache in (True, True, False):  # built, then read back from the cache, then not
        d = load_eri(root, FEATS, use_cache=use_cache, n_jobs=1)
        leak = [w for w in d.warnings if w.startswith("LEAKAGE")]
        assert len(leak) == 1 and str(folder) in leak[0]
        assert f"{devel[0]}.csv (devel) is byte-identical to {train[0]}.csv (train)" in leak[0]
        assert f"{devel[1]}.csv (devel) is a hard link of {train[1]}.csv (train)" in leak[0]
    for manifest in (root / ".abaw_cache" / "eri").glob("FAUs--*/manifest.json"):
        m = json.loads(manifest.read_text())
        del m["notes"]  # a cache entry made before the check existed
        manifest.write_text(json.dumps(m))
    d = load_eri(root, FEATS, n_jobs=1)
    assert [w for w in d.warnings if w.startswith("LEAKAGE")]


def test_devel_expr_features_copied_from_train_warn_and_reach_the_task(copy):
    root = copy("expr")
    tr, dv = _split_videos(root, "Train_Set")[0].stem, _split_videos(root, "Validation_Set")[0].stem
    folder = root / "features" / B
    shutil.copy(folder / f"{tr}.npy", folder / f"{dv}.npy")
    d = load_expr(root, use_cache=False)
    leak = [w for w in d.warnings if w.startswith("LEAKAGE")]
    assert leak and f"{dv}.npy (devel) is byte-identical to {tr}.npy (train)" in leak[0]
    assert any("LEAKAGE" in w for w in inspect_data(root).warnings)


def test_clean_data_has_no_leakage_warning(src):
    assert not [w for w in load_expr(src / "expr").warnings if "LEAKAGE" in w]
    assert not [w for w in load_eri(src / "eri", FEATS, n_jobs=1).warnings if "LEAKAGE" in w]


# ---------------------------------------------------------------- Track.data_identity


@pytest.mark.parametrize(("track", "name", "other"), [("eri", "eri", "eri-seed5")])
def test_eri_data_identity_is_plain_stable_and_tells_data_sets_apart(src, track, name, other):
    tr = get_track(track)
    a = tr.data_identity(load_eri(src / name, FEATS, n_jobs=1))
    b = tr.data_identity(load_eri(src / name, ["FAUs"], n_jobs=1))  # other features, same set
    c = tr.data_identity(load_eri(src / other, FEATS, n_jobs=1))
    assert json.loads(json.dumps(a)) == a
    assert set(a) == {"root", "layout", "splits", "unit", "labels"}
    assert a == b and a["labels"] != c["labels"]
    assert a["splits"] == {"train": 36, "devel": 12, "test": 12} and a["unit"] == "samples"


def test_expr_data_identity_is_plain_stable_and_tells_data_sets_apart(copy, src):
    tr = get_track("expr")
    a = tr.data_identity(load_expr(src / "expr"))
    assert json.loads(json.dumps(a)) == a and a["unit"] == "videos"
    root = copy("expr")
    f = _split_videos(root, "Train_Set")[0]
    labels = f.read_text().splitlines()
    labels[5] = "3" if labels[5] != "3" else "4"  # one frame relabelled
    f.write_text("\n".join(labels) + "\n")
    b = tr.data_identity(load_expr(root))
    assert b["labels"] != a["labels"] and b["splits"] == a["splits"]
    assert np.all([a[k] == b[k] for k in ("layout", "splits", "unit")])
