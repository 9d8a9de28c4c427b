"""The one prediction format round-trips exactly, without pickle, and aligns rows by key."""

import numpy as np
import pytest

from abaw.errors import DataError
from abaw.predictions import Predictions


def _eri(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return Predictions(
        "eri",
        "devel",
        {"id": np.array([f"[{i:05d}]" for i in range(n)])},
        rng.random((n, 7)),
        tuple("ABCDEFG"),
        labels=rng.random((n, 7)),
        meta={"model": "fusion", "trial": 3},
    )


def test_round_trip_eri(tmp_path):
    p = _eri()
    path = p.save(tmp_path / "p.npz")
    q = Predictions.load(path)
    assert q.track == "eri" and q.split == "devel" and q.columns == p.columns
    assert q.meta == {"model": "fusion", "trial": 3}
    assert np.array_equal(q.keys["id"], p.keys["id"])
    assert np.array_equal(q.values, p.values) and np.array_equal(q.labels, p.labels)
    # Plain arrays only: loading with allow_pickle=False must work on every member.
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_round_trip_expr_keys(tmp_path):
    p = Predictions(
        "expr",
        "test",
        {"video": np.array(["a", "a", "b_left"]), "frame": np.array([1, 2, 1])},
        np.full((3, 8), 0.125),
        tuple(str(i) for i in range(8)),
    )
    q = Predictions.load(p.save(tmp_path / "x.npz"))
    assert q.key_tuples() == [("a", 1), ("a", 2), ("b_left", 1)] and q.labels is None


def test_order_by_reorders_rows():
    p = _eri()
    perm = np.array([3, 0, 4, 1, 2])
    shuffled = Predictions(
        p.track, p.split, {"id": p.keys["id"][perm]}, p.values[perm], p.columns, p.labels[perm]
    )
    back = shuffled.order_by(p)
    assert np.array_equal(back.values, p.values) and np.array_equal(back.labels, p.labels)


def test_order_by_missing_row_raises():
    p = _eri()
    other = _eri()
    other.keys["id"][0] = "[99999]"
    with pytest.raises(ValueError, match="99999"):
        p.order_by(other)


def test_shape_checks():
    with pytest.raises(ValueError):
        Predictions("eri", "devel", {"id": np.array(["a"])}, np.zeros((1, 6)), tuple("ABCDEFG"))
    with pytest.raises(ValueError):
        Predictions(
            "eri", "devel", {"id": np.array(["a", "b"])}, np.zeros((1, 7)), tuple("ABCDEFG")
        )


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.npz"):
        Predictions.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        Predictions.load(bad)


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    path = _eri(seed=0).save(tmp_path / "p.npz")
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError):
        _eri(seed=1).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]  # no temp file left behind
