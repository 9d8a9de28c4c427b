"""Synthetic ERI data: both layouts, determinism, labels, oracle, and that the loader reads it back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from abaw.cli import main as cli_main
from abaw.eri import EMOTIONS
from abaw.eri.data import load_eri
from abaw.eri.synth import FEATURE_SETS, format_fixed7, write_eri

FEATS = ["eGeMAPS", "FAUs", "VGGFace2"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("eri-synth")
    oracle_a = write_eri(base / "a", scale="tiny", seed=3, layout="muse", features=FEATS, n_jobs=1)
    write_eri(base / "b", scale="tiny", seed=3, layout="abaw5", features=FEATS, n_jobs=2)
    write_eri(base / "a2", scale="tiny", seed=3, layout="muse", features=FEATS, n_jobs=2)
    write_eri(base / "c", scale="tiny", seed=4, layout="muse", features=FEATS, n_jobs=1)
    return base, oracle_a


def test_muse_layout_files(sets):
    base, _ = sets
    a = base / "a"
    assert (a / "labels.csv").read_text().splitlines()[0] == "File_ID," + ",".join(EMOTIONS)
    part = (a / "partition.csv").read_text().splitlines()
    assert part[0] == "Id,Partition" and part[1] == "[00000],train"
    assert {line.split(",")[1] for line in part[1:]} == {"train", "devel", "test"}
    f = (a / "feats" / "eGeMAPS" / "00000.csv").read_text().splitlines()
    assert len(f[0].split(",")) == 2 + 88 and f[1].startswith("[00000],")
    for name in FEATS:
        assert (a / "feats" / name).is_dir()


def test_abaw5_layout_files(sets):
    base, _ = sets
    lines = (base / "b" / "data_info.csv").read_text().splitlines()
    assert lines[0] == "File_ID,Split," + ",".join(EMOTIONS) + ",Age,Country"
    rows = [line.split(",") for line in lines[1:]]
    assert {r[1] for r in rows} == {"Train", "Val", "Test"}
    assert {r[-1] for r in rows} <= {"United States", "South Africa"}
    assert (base / "b" / "features" / "FAUs").is_dir()


def test_deterministic_per_seed_and_independent_of_jobs(sets):
    base, _ = sets
    for rel in ["labels.csv", "feats/VGGFace2/00005.csv", "feats/eGeMAPS/00042.csv"]:
        assert (base / "a" / rel).read_bytes() == (base / "a2" / rel).read_bytes()
    assert (base / "a" / "labels.csv").read_bytes() != (base / "c" / "labels.csv").read_bytes()


def test_both_layouts_load_to_identical_arrays(sets):
    base, _ = sets
    a = load_eri(base / "a", FEATS, use_cache=False, n_jobs=1)
    b = load_eri(base / "b", FEATS, use_cache=False, n_jobs=1)
    assert a.layout == "muse" and b.layout == "abaw5"
    assert [i.strip("[]") for i in a.ids] == list(b.ids)
    assert np.array_equal(a.split, b.split)
    assert np.array_equal(a.labels, b.labels, equal_nan=True)
    for name in FEATS:
        assert np.array_equal(a.features[name].values, b.features[name].values)
        assert np.array_equal(a.features[name].offsets, b.features[name].offsets)
    assert a.meta is None and list(b.meta.columns) == ["Age", "Country"]


def test_shapes_labels_and_missing(sets):
    base, oracle = sets
    d = load_eri(base / "a", FEATS, use_cache=False, n_jobs=1)
    n = len(d.ids)
    assert n == sum(oracle["counts"].values()) == 60
    for name in FEATS:
        fs = d.features[name]
        assert fs.dim == FEATURE_SETS[name][1] and fs.values.dtype == np.float32
        assert fs.offsets.shape == (n + 1,) and fs.values.shape == (fs.offsets[-1], fs.dim)
    # Audio and video have different rates, so lengths differ between modalities.
    assert not np.array_equal(d.features["eGeMAPS"].lengths, d.features["FAUs"].lengths)
    lab = d.labels[d.split != "test"]
    assert np.isfinite(lab).all() and (lab >= 0).all() and np.all(lab.max(axis=1) == 1.0)
    assert np.isnan(d.labels[d.split == "test"]).all()
    # Missing modality: train IDs with audio but no visual, and test IDs missing one modality.
    miss_v, miss_a = d.missing("visual"), d.missing("audio")
    assert (miss_v & (d.split == "train")).sum() >= 2
    assert ((miss_v | miss_a) & (d.split == "test")).sum() >= 1
    assert not (miss_v & miss_a).any()
    assert sorted(i.strip("[]") for i in d.ids[miss_v]) == sorted(oracle["missing"]["visual"])
    assert any("test" in w and "kept" in w for w in d.warnings)


def test_oracle_json(sets):
    base, oracle = sets
    saved = json.loads((base / "a" / "oracle.json").read_text())
    assert saved["seed"] == 3 and saved["scale"] == "tiny" and saved["layout"] == "muse"
    for split in ("devel", "test"):
        assert 0.3 < saved[split]["mean_pearson"] < 1.0
        per = saved[split]["per_emotion"]
        assert list(per) == list(EMOTIONS)
        assert saved[split]["mean_pearson"] == pytest.approx(np.mean(list(per.values())))
    assert saved["params"]["label_noise"] > 0 and saved["devel"] == oracle["devel"]


def test_format_fixed7_round_trips():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-9.99, 9.99, 1000), [0.0, -0.0, 1.0, -1.0, 9.99999, -9.9999]])
    text = format_fixed7(x)
    assert text.shape == (x.size, 7)
    back = np.array([float(bytes(row)) for row in text])
    assert np.abs(back - x).max() <= 0.5e-4 + 1e-12


def test_cli_synth_and_nonempty_out(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "synth",
        "--track",
        "eri",
        "--out",
        str(out),
        "--scale",
        "tiny",
        "--features",
        "FAUs,eGeMAPS",
    ]
    assert cli_main(argv) == 0
    assert sorted(p.name for p in (out / "feats").iterdir()) == ["FAUs", "eGeMAPS"]
    assert "oracle" in capsys.readouterr().out
    assert cli_main(argv) == 1  # not empty, no --force
    assert cli_main([*argv[:-1], "Nope"] + ["--force"]) == 1
    assert "unknown feature set" in capsys.readouterr().err


def test_hard_difficulty_fewer_train_longer_sequences(tmp_path):
    normal = write_eri(tmp_path / "n", scale="tiny", seed=1, features=["eGeMAPS", "FAUs"], n_jobs=1)
    hard = write_eri(
        tmp_path / "h",
        scale="tiny",
        seed=1,
        features=["eGeMAPS", "FAUs"],
        n_jobs=1,
        difficulty="hard",
    )
    assert hard["difficulty"] == "hard" and normal["difficulty"] == "normal"
    assert hard["counts"]["train"] < normal["counts"]["train"]
    assert hard["counts"]["devel"] == normal["counts"]["devel"]
    assert hard["sequence_lengths"]["visual"][1] > 3 * normal["sequence_lengths"]["visual"][1]
    assert hard["params"]["visual_jitter"] > normal["params"]["visual_jitter"]
    assert (tmp_path / "h" / "oracle.json").is_file()
    data = load_eri(tmp_path / "h", {"eGeMAPS": "audio", "FAUs": "visual"}, n_jobs=1)
    lengths = np.diff(np.asarray(data.features["FAUs"].offsets))
    assert lengths.max() > 20
    with pytest.raises(ValueError, match="difficulty"):
        write_eri(tmp_path / "x", scale="tiny", difficulty="brutal")


def test_cli_difficulty_flag(tmp_path):
    rc = cli_main(
        [
            "synth",
            "--track",
            "eri",
            "--scale",
            "tiny",
            "--difficulty",
            "hard",
            "--features",
            "eGeMAPS,FAUs",
            "--out",
            str(tmp_path / "h"),
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "h" / "oracle.json").read_text())["difficulty"] == "hard"
