"""ERI loader: standardisation, cache, inspect, and the bad-input catalogue.

Each bad case starts from a tiny synthetic set, breaks one thing, and checks the
message names the file and the line or column a user has to fix.
"""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest

from abaw.cli import main as cli_main
from abaw.eri import EMOTIONS
from abaw.eri.data import inspect_data, load_eri
from abaw.eri.synth import write_eri
from abaw.errors import ConfigError, DataError
from abaw.io import cache_dir_for

FEATS = ["eGeMAPS", "FAUs"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("eri-data")
    write_eri(base / "muse", scale="tiny", seed=1, layout="muse", features=FEATS, n_jobs=1)
    write_eri(base / "abaw5", scale="tiny", seed=1, layout="abaw5", features=FEATS, n_jobs=1)
    return base


@pytest.fixture
def muse(pristine, tmp_path):
    return shutil.copytree(pristine / "muse", tmp_path / "muse")


@pytest.fixture
def abaw5(pristine, tmp_path):
    return shutil.copytree(pristine / "abaw5", tmp_path / "abaw5")


def load(root, features=FEATS, **kw):
    return load_eri(root, features, n_jobs=1, use_cache=kw.pop("use_cache", False), **kw)


def edit_line(path, lineno, fn):
    """Replace line `lineno` (1-based) of a text file by fn(old_line)."""
    lines = path.read_text().split("\n")
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines))


def raises(root, pattern, *, exc=DataError, features=FEATS):
    with pytest.raises(exc) as info:
        load(root, features)
    msg = str(info.value)
    assert re.search(pattern, msg), msg
    return msg


# ----------------------------------------------------------------- good input


def test_standardised_on_train_rows_only(pristine):
    raw = load(pristine / "muse", standardize=False)
    std = load(pristine / "muse")
    for name in FEATS:
        r, s = raw.features[name], std.features[name]
        train = np.repeat(raw.split == "train", r.lengths)
        mean = r.values[train].mean(axis=0, dtype=np.float64)
        np.testing.assert_allclose(s.mean, mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.values[train].mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(s.values[train].std(axis=0), 1, atol=1e-3)
        # devel/test rows use the train statistics, so they are not exactly centred.
        np.testing.assert_allclose(s.values[~train], (r.values[~train] - s.mean) / s.std, atol=1e-5)
        assert r.mean is None


def test_indices_missing_modalities(pristine):
    d = load(pristine / "muse")
    assert d.modalities == {"audio": ["eGeMAPS"], "visual": ["FAUs"]}
    assert sum(len(d.indices(s)) for s in ("train", "devel", "test")) == len(d.ids)
    assert np.array_equal(d.missing("visual"), d.features["FAUs"].lengths == 0)
    assert d.missing("visual").sum() >= 3 and d.problems == []
    with pytest.raises(ValueError):
        d.indices("val")


def test_feature_mapping_for_unknown_names(muse):
    os.rename(muse / "feats" / "FAUs", muse / "feats" / "MyFaceNet")
    msg = raises(
        muse,
        r"'MyFaceNet' has no known modality.*MyFaceNet",
        exc=ConfigError,
        features=["eGeMAPS", "MyFaceNet"],
    )
    assert "eGeMAPS" in msg  # lists the folders found
    d = load(muse, {"eGeMAPS": "audio", "MyFaceNet": "visual"})
    assert d.features["MyFaceNet"].modality == "visual"


def test_cache_round_trip_and_invalidation(muse):
    first = load(muse, use_cache=True)
    cache = cache_dir_for(muse, "eri")
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 2 and all((cache / e / "manifest.json").is_file() for e in entries)
    second = load(muse, use_cache=True)
    for name in FEATS:
        assert np.array_equal(first.features[name].values, second.features[name].values)
        assert np.array_equal(first.features[name].std, second.features[name].std)
    # Cached values are a copy-on-write map: writable in memory, the cache file never changes.
    second.features["FAUs"].values[0, 0] += 100.0
    assert np.array_equal(
        load(muse, use_cache=True).features["FAUs"].values, first.features["FAUs"].values
    )
    # Change one file: its feature set is parsed again and the stale entry is replaced.
    f = muse / "feats" / "FAUs" / "00000.csv"
    edit_line(f, 2, lambda s: s.rsplit(",", 1)[0] + ",7.00000")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    third = load(muse, use_cache=True)
    assert not np.array_equal(third.features["FAUs"].values, first.features["FAUs"].values)
    assert np.array_equal(third.features["eGeMAPS"].values, first.features["eGeMAPS"].values)
    assert len(list(cache.iterdir())) == 2
    assert np.array_equal(third.features["FAUs"].values, load(muse).features["FAUs"].values)


def test_parallel_parse_equals_serial(pristine, monkeypatch):
    import abaw.eri.csvio as csvio

    monkeypatch.setattr(csvio, "_MIN_PARALLEL", 0)  # force worker processes on a tiny set
    a = load_eri(pristine / "muse", FEATS, use_cache=False, n_jobs=1)
    b = load_eri(pristine / "muse", FEATS, use_cache=False, n_jobs=2)
    for name in FEATS:
        assert np.array_equal(a.features[name].values, b.features[name].values)


def test_features_folder_found_by_content(abaw5):
    os.rename(abaw5 / "features", abaw5 / "extracted")
    assert load(abaw5).layout == "abaw5"


# ----------------------------------------------------------------- bad input catalogue


def test_missing_labels_csv(muse):
    (muse / "labels.csv").unlink()
    raises(muse, r"labels\.csv: file not found")


def test_missing_partition_csv(muse):
    (muse / "partition.csv").unlink()
    raises(muse, r"partition\.csv: file not found")


def test_no_tables_at_all(tmp_path):
    raises(tmp_path, r"no ERI table found.*data_info\.csv")


def test_missing_feature_folder(muse):
    msg = raises(
        muse, r"VGGFace2: feature set 'VGGFace2' not found", features=["eGeMAPS", "VGGFace2"]
    )
    assert "FAUs" in msg and "eGeMAPS" in msg


def test_wrong_header_in_labels(muse):
    edit_line(muse / "labels.csv", 1, lambda s: s.replace("Empathic-Pain", "EmpathicPain"))
    raises(muse, r"labels\.csv, line 1: wrong header")


def test_wrong_header_in_data_info(abaw5):
    edit_line(abaw5 / "data_info.csv", 1, lambda s: s.replace("Split", "Partition"))
    raises(abaw5, r"data_info\.csv, line 1: wrong header")


def test_wrong_column_count_in_labels_row(muse):
    edit_line(muse / "labels.csv", 5, lambda s: s + ",0.5")
    raises(muse, r"labels\.csv, line 5: wrong column count \(expected 8, found 9\)")


def test_wrong_column_count_in_feature_row(muse):
    edit_line(muse / "feats" / "FAUs" / "00003.csv", 3, lambda s: s.rsplit(",", 1)[0])
    raises(
        muse,
        r"00003\.csv, line 3: wrong column count \(expected 22 columns like the header, found 21\)",
    )


def test_non_numeric_feature_value(muse):
    edit_line(
        muse / "feats" / "eGeMAPS" / "00007.csv",
        4,
        lambda s: ",".join(s.split(",")[:5] + ["abc"] + s.split(",")[6:]),
    )
    raises(muse, r"eGeMAPS/00007\.csv, line 4, column 6: non-numeric value .*'abc'")


@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "NaN"])
def test_non_finite_feature_value(muse, bad):
    edit_line(muse / "feats" / "FAUs" / "00010.csv", 2, lambda s: s.rsplit(",", 1)[0] + "," + bad)
    raises(muse, rf"FAUs/00010\.csv, line 2, column 22: non-finite value .*found {bad}")


def test_empty_feature_cell_is_reported(muse):
    edit_line(muse / "feats" / "FAUs" / "00010.csv", 2, lambda s: s.rsplit(",", 1)[0] + ",")
    raises(muse, r"FAUs/00010\.csv, line 2, column 22: non-numeric value")


def test_empty_feature_file(muse):
    (muse / "feats" / "FAUs" / "00012.csv").write_text("")
    raises(muse, r"FAUs/00012\.csv: empty feature file")


def test_header_only_feature_file(muse):
    path = muse / "feats" / "FAUs" / "00012.csv"
    path.write_text(path.read_text().split("\n")[0] + "\n")
    raises(muse, r"FAUs/00012\.csv: empty feature file .*only the header")


def test_feature_width_differs(muse):
    path = muse / "feats" / "eGeMAPS" / "00020.csv"
    path.write_text(
        "\n".join(",".join(line.split(",")[:-1]) for line in path.read_text().split("\n"))
    )
    raises(
        muse, r"eGeMAPS/00020\.csv, line 1: feature width differs .*expected 90 columns.*found 89"
    )


def test_duplicated_id_in_labels(muse):
    edit_line(muse / "labels.csv", 6, lambda s: "[00001]" + s[7:])
    raises(muse, r"labels\.csv, line 6, column 'File_ID': duplicated ID .*first on line 3")


def test_duplicated_id_in_partition(muse):
    edit_line(muse / "partition.csv", 4, lambda s: "[00000],train")
    raises(muse, r"partition\.csv, line 4, column 'Id': duplicated ID")


def test_id_in_labels_not_in_partition(muse):
    edit_line(muse / "partition.csv", 9, lambda s: "")
    raises(muse, r"labels\.csv, line 9, column 'File_ID': ID not in partition\.csv .*'\[00007\]'")


def test_id_in_partition_not_in_labels(muse):
    with open(muse / "partition.csv", "a") as fh:
        fh.write("[99999],train\n")
    raises(muse, r"partition\.csv, line 62, column 'Id': ID not in labels\.csv .*'\[99999\]'")


def test_unknown_partition_value(muse):
    edit_line(muse / "partition.csv", 7, lambda s: s.split(",")[0] + ",validation")
    raises(muse, r"partition\.csv, line 7, column 'Partition': unknown partition .*'validation'")


def test_unknown_split_value_abaw5(abaw5):
    edit_line(abaw5 / "data_info.csv", 3, lambda s: s.replace(",Train,", ",Dev,"))
    raises(
        abaw5, r"data_info\.csv, line 3, column 'Split': unknown split .*Train, Val or Test.*'Dev'"
    )


@pytest.mark.parametrize("value", ["1.5", "-0.1", "", "nan", "high"])
def test_bad_label_for_train_row(muse, value):
    edit_line(
        muse / "labels.csv", 2, lambda s: ",".join(s.split(",")[:3] + [value] + s.split(",")[4:])
    )
    raises(
        muse,
        rf"labels\.csv, line 2, column '{EMOTIONS[2]}': bad label for a train sample .*\[0, 1\]",
    )


def test_test_rows_may_be_unlabelled_but_train_rows_not(muse):
    d = load(muse)
    assert np.isnan(d.labels[d.split == "test"]).all()


@pytest.mark.parametrize("bad_id", ["[../x]", "[a/b]", "[..]", "[c\\d]"])
def test_unsafe_ids(muse, bad_id):
    edit_line(muse / "labels.csv", 3, lambda s: bad_id + "," + s.split(",", 1)[1])
    edit_line(muse / "partition.csv", 3, lambda s: bad_id + ",train")
    raises(muse, r"labels\.csv, line 3, column 'File_ID': unsafe sample ID")


def test_unknown_modality_in_mapping(muse):
    raises(muse, r"modality must be one of", exc=ConfigError, features={"eGeMAPS": "speech"})


# ----------------------------------------------------------------- inspect and CLI


def test_inspect_clean_set(pristine):
    rep = inspect_data(pristine / "abaw5", use_cache=False)
    assert rep.problems == []
    assert rep.summary["train samples"] == 36 and rep.summary["test samples"] == 12
    titles = [s.title for s in rep.sections]
    assert titles[0] == "Feature sets" and "Samples missing a modality" in titles
    widths = {row[0]: row[2] for row in rep.sections[0].rows}
    assert widths == {"FAUs": 20, "eGeMAPS": 88}
    assert any("no visual features" in w for w in rep.warnings)


def test_inspect_reports_every_problem(muse):
    edit_line(muse / "partition.csv", 7, lambda s: s.split(",")[0] + ",validation")
    edit_line(muse / "labels.csv", 2, lambda s: s.replace(",1.000000", ",1.700000", 1))
    edit_line(muse / "feats" / "FAUs" / "00003.csv", 3, lambda s: s.rsplit(",", 1)[0])
    edit_line(muse / "feats" / "eGeMAPS" / "00009.csv", 2, lambda s: s.rsplit(",", 1)[0] + ",inf")
    rep = inspect_data(muse, use_cache=False)
    text = "\n".join(rep.problems)
    assert len(rep.problems) == 4, text
    for needle in [
        "partition.csv, line 7",
        "labels.csv, line 2",
        "00003.csv, line 3",
        "00009.csv, line 2",
    ]:
        assert needle in text


def test_cli_inspect_exit_codes(pristine, muse, capsys):
    assert (
        cli_main(["inspect", "--track", "eri", "--data", str(pristine / "muse"), "--no-cache"]) == 0
    )
    edit_line(muse / "feats" / "FAUs" / "00003.csv", 3, lambda s: s.rsplit(",", 1)[0])
    capsys.readouterr()
    assert cli_main(["inspect", "--track", "eri", "--data", str(muse)]) == 1
    assert "00003.csv, line 3: wrong column count" in capsys.readouterr().out
    (muse / "labels.csv").unlink()
    assert cli_main(["inspect", "--track", "eri", "--data", str(muse)]) == 1
    assert "labels.csv: file not found" in capsys.readouterr().out
