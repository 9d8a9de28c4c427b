"""Tests for abaw/expr/synth.py: the synthetic Aff-Wild2-style generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from abaw.cli import main as cli_main
from abaw.errors import ConfigError
from abaw.expr.layout import HEADER, TEST_FRAME_HEADER, TEST_FRAME_LIST, TEST_VIDEO_LIST
from abaw.expr.synth import BACKBONES, write_expr

ANN = "EXPR_Classification_Challenge"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("expr") / "tiny"
    return out, write_expr(out, scale="tiny", seed=0)


def _annotations(root: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted((root / ANN).glob("*/*.txt")):
        lines = p.read_text().splitlines()
        assert lines[0] == HEADER
        out[p.stem] = np.array(lines[1:], dtype=np.int64)
    return out


def test_layout_and_shapes(tiny):
    root, oracle = tiny
    ann = _annotations(root)
    assert len(ann) == oracle["splits"]["train"]["videos"] + oracle["splits"]["devel"]["videos"]
    tests = (root / TEST_VIDEO_LIST).read_text().split()
    assert len(tests) == oracle["splits"]["test"]["videos"]
    for b, width in BACKBONES.items():
        files = sorted((root / "features" / b).glob("*.npy"))
        assert len(files) == len(ann) + len(tests)
        for f in files:
            x = np.load(f, allow_pickle=False)
            assert x.dtype == np.float32 and x.shape[1] == width
            if f.stem in ann:  # feature rows within -30..+2 of the annotation length
                assert len(ann[f.stem]) - 30 <= len(x) <= len(ann[f.stem]) + 2


def test_nan_rows_left_right_and_unannotated_present(tiny):
    root, _ = tiny
    ann = _annotations(root)
    assert any(v.endswith("_left") for v in ann) and any(v.endswith("_right") for v in ann)
    for v in [v for v in ann if v.endswith("_left")]:
        assert v.replace("_left", "_right") in ann
    assert sum(int((y == -1).sum()) for y in ann.values()) > 0
    nan_rows = 0
    for f in (root / "features" / "IRv1-VGGFace2").glob("*.npy"):
        x = np.load(f)
        rows = np.isnan(x).any(axis=1)
        assert np.isnan(x[rows]).all(), "a no-face row is NaN in every column"
        nan_rows += int(rows.sum())
    assert nan_rows > 0


def test_class_frequencies_imbalanced_like_affwild2(tmp_path):
    oracle = write_expr(tmp_path / "a", scale="tiny", seed=3, backbones=["IRv1-CASIA"])
    counts = np.zeros(8)
    for s in oracle["splits"].values():
        counts += np.array(list(s["class_counts"].values()))
    frac = counts / counts.sum()
    assert frac[0] + frac[7] > 0.45  # Neutral and Other dominate
    assert frac[2] < frac[0] / 4 and frac[3] < frac[0] / 4  # Disgust and Fear are rare
    assert frac[2] < frac[4] and frac[3] < frac[4]


def test_deterministic_per_seed_and_subset(tmp_path, tiny):
    root, _ = tiny
    again = tmp_path / "again"
    write_expr(again, scale="tiny", seed=0, backbones=["RegNetY-1.6GF"])
    for f in (root / ANN).glob("*/*.txt"):
        assert f.read_bytes() == (again / f.relative_to(root)).read_bytes()
    for f in (root / "features" / "RegNetY-1.6GF").glob("*.npy"):
        np.testing.assert_array_equal(np.load(f), np.load(again / f.relative_to(root)))
    assert (root / TEST_FRAME_LIST).read_bytes() == (again / TEST_FRAME_LIST).read_bytes()
    other = tmp_path / "other"
    write_expr(other, scale="tiny", seed=1, backbones=["RegNetY-1.6GF"])
    assert sorted(p.name for p in (other / "features" / "RegNetY-1.6GF").iterdir()) != sorted(
        p.name for p in (root / "features" / "RegNetY-1.6GF").iterdir()
    ) or any(
        not np.array_equal(np.load(f), np.load(root / f.relative_to(other)), equal_nan=True)
        for f in (other / "features" / "RegNetY-1.6GF").glob("*.npy")
    )


def test_oracle_json_and_hidden_test_labels(tiny):
    root, oracle = tiny
    on_disk = json.loads((root / "oracle.json").read_text())
    assert on_disk == json.loads(json.dumps(oracle))
    for split in ("devel", "test"):
        f1 = oracle["splits"][split]["macro_f1"]
        assert 0.3 < f1 <= 1.0
        assert set(oracle["splits"][split]["per_class_f1"]) == set(HEADER.split(","))
    assert oracle["generator"]["latent_dim"] > 0 and oracle["backbones"] == BACKBONES
    # Test labels exist only in the hidden oracle folder, never next to the annotations.
    tests = (root / TEST_VIDEO_LIST).read_text().split()
    for v in tests:
        assert (root / ".oracle" / "test_labels" / f"{v}.npy").is_file()
        assert not list((root / ANN).glob(f"*/{v}.txt"))
    lines = (root / TEST_FRAME_LIST).read_text().splitlines()
    assert lines[0] == TEST_FRAME_HEADER
    assert lines[1] == f"{tests[0]}/00001.jpg,"
    n_test = sum(len(np.load(root / ".oracle" / "test_labels" / f"{v}.npy")) for v in tests)
    assert len(lines) - 1 == n_test == oracle["splits"]["test"]["frames"]


def test_csv_format(tmp_path):
    write_expr(tmp_path / "c", scale="tiny", seed=0, backbones=["IRv1-CASIA"], feature_format="csv")
    files = sorted((tmp_path / "c" / "features" / "IRv1-CASIA").glob("*.csv"))
    assert files
    head = files[0].read_text().splitlines()[0].split(",")
    assert head[0] == "frame" and len(head) == 1 + BACKBONES["IRv1-CASIA"]


def test_unknown_backbone_and_scale(tmp_path):
    with pytest.raises(ConfigError, match="Nope"):
        write_expr(tmp_path / "x", scale="tiny", backbones=["Nope"])
    with pytest.raises(ConfigError, match="huge"):
        write_expr(tmp_path / "x", scale="huge")


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(
        [
            "synth",
            "--track",
            "expr",
            "--out",
            str(out),
            "--scale",
            "tiny",
            "--features",
            "IRv1-CASIA",
            "--seed",
            "2",
        ]
    )
    assert rc == 0
    assert "Oracle macro F1" in capsys.readouterr().out
    assert [p.name for p in (out / "features").iterdir()] == ["IRv1-CASIA"]


def test_hard_difficulty(tmp_path, tiny):
    _, normal = tiny
    hard = write_expr(tmp_path / "h", scale="tiny", seed=0, difficulty="hard")
    assert hard["difficulty"] == "hard" and normal["difficulty"] == "normal"
    assert hard["splits"]["train"]["videos"] < normal["splits"]["train"]["videos"]
    assert hard["splits"]["devel"]["videos"] == normal["splits"]["devel"]["videos"]
    assert hard["generator"]["frame_noise_sd"] > normal["generator"]["frame_noise_sd"]
    assert (tmp_path / "h" / "oracle.json").is_file()
    assert any((tmp_path / "h" / ".oracle" / "test_labels").glob("*.npy"))
    with pytest.raises(ConfigError, match="difficulty"):
        write_expr(tmp_path / "x", scale="tiny", difficulty="brutal")
