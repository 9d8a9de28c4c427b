"""ERI data-layer hardening (issue #9): bad input a user brings that the generator never writes.

Each test starts from a tiny synthetic set, breaks one thing the way real data breaks
(a spreadsheet's encoding, an interrupted copy, a link, a second spelling of an ID), and
checks the one sentence the user gets: file, line or column, expected, found, hint.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from abaw.eri.data import inspect_data, load_eri
from abaw.eri.synth import write_eri
from abaw.errors import ConfigError, DataError
from abaw.io import cache_dir_for, reading

FEATS = ["eGeMAPS", "FAUs"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("eri-hard")
    write_eri(base / "muse", scale="tiny", seed=2, layout="muse", features=FEATS, n_jobs=1)
    write_eri(base / "abaw5", scale="tiny", seed=2, layout="abaw5", features=FEATS, n_jobs=1)
    return base


@pytest.fixture
def muse(pristine, tmp_path):
    return shutil.copytree(pristine / "muse", tmp_path / "muse")


@pytest.fixture
def abaw5(pristine, tmp_path):
    return shutil.copytree(pristine / "abaw5", tmp_path / "abaw5")


def load(root, features=FEATS, **kw):
    return load_eri(root, features, n_jobs=1, use_cache=kw.pop("use_cache", False), **kw)


def error(root, features=FEATS, **kw) -> str:
    with pytest.raises(DataError) as info:
        load(root, features, **kw)
    return str(info.value)


def a_feature_file(root, name="FAUs"):
    return sorted((root / "feats" / name).glob("*.csv"))[3]


# ----------------------------------------------------------------- 1. no tracebacks


def test_symlink_loop_feature_file_is_named(muse):
    f = a_feature_file(muse)
    f.unlink()
    os.symlink(f.name, f)  # a link to itself
    msg = error(muse)
    assert str(f) in msg and "symbolic link loop" in msg and "Fix or remove the link" in msg


def test_directory_where_a_feature_file_belongs_is_named(muse):
    f = a_feature_file(muse)
    f.unlink()
    f.mkdir()
    msg = error(muse)
    assert str(f) in msg and "a directory" in msg


def test_dangling_symlink_feature_file_is_named(muse):
    f = a_feature_file(muse)
    f.unlink()
    os.symlink("/nonexistent/file.csv", f)
    msg = error(muse)
    assert str(f) in msg and "dangling symbolic link" in msg and "/nonexistent/file.csv" in msg


def test_unreadable_feature_file_is_named(muse, monkeypatch):
    """chmod 0 as a user would. The tests run as root, who reads anything, so the OS is made
    to answer as it would for that user: open() raises EACCES and os.access says no."""
    import builtins

    f = a_feature_file(muse)
    f.chmod(0)
    real_open, real_access = builtins.open, os.access

    def user_open(p, *a, **kw):
        if isinstance(p, str | os.PathLike) and Path(p) == f:
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *a, **kw)

    monkeypatch.setattr(builtins, "open", user_open)
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if Path(p) == f else real_access(p, mode, **kw)
    )
    msg = error(muse)
    assert str(f) in msg and "permission denied" in msg


def test_permission_error_becomes_a_data_error(tmp_path):
    """The shared guard (works as root too): any OSError while reading -> DataError."""
    p = tmp_path / "x.csv"
    p.write_text("a\n")
    with pytest.raises(DataError) as info, reading(p, "a feature CSV"):
        raise PermissionError(13, "Permission denied", str(p))
    assert str(p) in str(info.value) and "Permission denied" in str(info.value)


def test_cp1252_country_in_data_info_is_read_with_a_warning(abaw5):
    """Country is metadata the loader never needs: read it, say so, say how to fix."""
    t = abaw5 / "data_info.csv"
    lines = t.read_text().split("\n")
    lines[3] = lines[3].rsplit(",", 1)[0] + ",São Tomé"
    t.write_bytes("\n".join(lines).encode("cp1252"))
    d = load(abaw5)
    note = next(w for w in d.warnings if "not UTF-8" in w)
    assert "Country" in note and "byte 0xe3" in note and "iconv" in note
    assert len(d.ids) == 60  # nothing lost


def test_non_utf8_in_a_needed_column_is_an_error_with_byte_and_line(muse):
    t = muse / "labels.csv"
    lines = t.read_text().split("\n")
    lines[4] = lines[4].replace("]", "é]", 1)  # inside the File_ID
    t.write_bytes("\n".join(lines).encode("cp1252"))
    msg = error(muse)
    assert "labels.csv, line 5: not UTF-8 text" in msg
    assert "byte 0xe9" in msg and "'é' in Windows-1252" in msg and "CSV UTF-8" in msg


# ----------------------------------------------------------------- 2. silent problems


def test_row_with_more_values_than_the_header(muse):
    f = a_feature_file(muse)
    lines = f.read_text().split("\n")
    lines[2] += ",0.5"
    f.write_text("\n".join(lines))
    msg = error(muse)
    assert f"{f}, line 3: wrong column count" in msg
    n = lines[0].count(",") + 1
    assert f"expected {n} columns like the header, found {n + 1}" in msg


def test_float32_overflow_names_line_and_column(muse):
    f = a_feature_file(muse)
    lines = f.read_text().split("\n")
    cells = lines[1].split(",")
    cells[4] = "4e38"
    lines[1] = ",".join(cells)
    f.write_text("\n".join(lines))
    msg = error(muse)
    assert f"{f}, line 2, column 5: value too large for float32" in msg and "4e38" in msg


def test_bracketed_and_bare_id_in_two_splits_is_leakage(muse):
    """`[00003]` (train) and `00003` (devel) read the same file 00003.csv."""
    lab, part = muse / "labels.csv", muse / "partition.csv"
    lab_lines, part_lines = lab.read_text().split("\n"), part.read_text().split("\n")
    train_id = next(r.split(",")[0] for r in part_lines[1:] if r.endswith(",train"))
    bare = train_id.strip("[]")
    row = next(r for r in lab_lines if r.startswith(train_id + ","))
    lab_lines.insert(-1, bare + row[len(train_id) :])
    part_lines.insert(-1, f"{bare},devel")
    lab.write_text("\n".join(lab_lines))
    part.write_text("\n".join(part_lines))
    msg = error(muse)
    assert "in more than one split" in msg
    assert f"{train_id} (train)" in msg and f"{bare} (devel)" in msg
    rep = inspect_data(muse, features=FEATS, use_cache=False)
    assert any("more than one split" in p for p in rep.problems)


def test_two_spellings_in_one_split_name_the_same_file(abaw5):
    t = abaw5 / "data_info.csv"
    lines = t.read_text().split("\n")
    first = lines[1].split(",")
    lines.insert(-1, ",".join([f"[{first[0]}]", *first[1:]]))  # ABAW5 IDs are bare
    t.write_text("\n".join(lines))
    msg = error(abaw5)
    assert "two IDs name the same feature file" in msg and "line 2" in msg


def test_data_pointed_at_the_parent_of_the_release_folder(muse, tmp_path):
    parent = tmp_path / "release"
    parent.mkdir()
    muse.rename(parent / "c2_muse_reaction")
    (parent / "README.txt").write_text("unpacked here\n")
    d = load(parent)
    assert d.root == parent / "c2_muse_reaction"
    assert any("using its subfolder c2_muse_reaction/" in w for w in d.warnings)
    shutil.copytree(parent / "c2_muse_reaction", parent / "copy")
    msg = error(parent)
    assert "c2_muse_reaction" in msg and "copy" in msg and "Point --data at one" in msg


def test_missing_feature_set_error_shows_the_fix(muse):
    with pytest.raises(DataError) as info:
        load(muse, {"DeepSpectrum": "audio", "FAUs": "visual"})
    msg = str(info.value)
    assert "feature set 'DeepSpectrum' not found" in msg
    assert """--set 'data.features={FAUs="visual", eGeMAPS="audio"}'""" in msg


def test_sweep_data_features_may_be_a_list_of_known_names():
    from abaw.eri.track import EriDataConfig
    from abaw.sweep import build_configs

    cfg = build_configs({"data.features": ["eGeMAPS", "FAUs"]}, {"data": EriDataConfig})["data"]
    assert cfg.features == {"eGeMAPS": "audio", "FAUs": "visual"}
    with pytest.raises(ConfigError, match="MyNet.*no known modality"):
        build_configs({"data.features": ["MyNet"]}, {"data": EriDataConfig})


# ----------------------------------------------------------------- 3. caches


def test_in_place_change_keeping_size_and_mtime_invalidates_the_cache(muse):
    first = load(muse, use_cache=True, standardize=False)
    f = a_feature_file(muse)
    st = f.stat()
    text = f.read_text()
    i = text.index("\n") + 1
    lines = text[i:].split("\n")
    cells = lines[0].split(",")
    cells[2] = "9.99999" if cells[2] != "9.99999" else "1.11111"
    assert len(cells[2]) == len(lines[0].split(",")[2])  # same size
    changed = text[:i] + ",".join(cells) + text[i + len(lines[0]) :]
    assert len(changed) == len(text)
    f.write_text(changed)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # what rsync -a / cp -p / touch -r do
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    second = load(muse, use_cache=True, standardize=False)
    k = list(second.ids).index(next(i for i in second.ids if i.strip("[]") == f.stem))
    fs1, fs2 = first.features["FAUs"], second.features["FAUs"]
    row = int(fs2.offsets[k])
    assert fs2.values[row, 0] == pytest.approx(float(cells[2]), abs=1e-4)
    assert fs1.values[row, 0] != pytest.approx(float(cells[2]), abs=1e-4)


def test_leftover_tmp_files_are_removed_on_the_next_run(muse):
    load(muse, use_cache=True)
    cache = cache_dir_for(muse, "eri")
    entry = next(cache.iterdir())
    old, fresh = entry / ".values.npy.abc123.tmp", entry / ".values.npy.def456.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    t = time.time() - 3600
    os.utime(old, (t, t))
    load(muse, use_cache=True)
    assert not old.exists() and fresh.exists()  # a write still in progress is left alone


# ----------------------------------------------------------------- 4. output and inspect


@pytest.mark.parametrize("layout", ["muse", "abaw5"])
def test_inspect_clean_set_has_no_false_alarm(pristine, layout, capsys):
    from abaw.cli import main

    rep = inspect_data(pristine / layout, features=FEATS, use_cache=False)
    assert rep.problems == []
    # Only the documented missing-modality notes of the synthetic set, nothing else.
    assert all(re.search(r"have no (audio|visual) features", w) for w in rep.warnings), rep.warnings
    assert main(["inspect", "--track", "eri", "--data", str(pristine / layout)]) == 0
    out = capsys.readouterr().out
    assert "No problems found." in out and "problem:" not in out


def test_inspect_shows_bracketed_ids(pristine, capsys):
    from abaw.cli import main

    main(["inspect", "--track", "eri", "--data", str(pristine / "muse")])
    out = capsys.readouterr().out
    ids = re.findall(r"\[\d{5}\]", out)
    assert ids, "bracketed IDs must survive rich markup"


def test_parent_folder_load_gives_same_arrays(pristine, tmp_path):
    parent = tmp_path / "up"
    shutil.copytree(pristine / "muse", parent / "c2_muse_reaction")
    a, b = load(pristine / "muse"), load(parent)
    np.testing.assert_array_equal(a.features["FAUs"].values, b.features["FAUs"].values)
