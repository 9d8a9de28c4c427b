"""Temporal smoothing of per-frame probabilities, within videos only."""

from __future__ import annotations

import numpy as np
import pytest

from abaw.expr import CLASSES
from abaw.expr.smoothing import (
    SmoothingConfig,
    kernel,
    smooth_by_video,
    smooth_predictions,
    smooth_probs,
)
from abaw.predictions import Predictions


def _direct(x, bounds, k):
    """Per-frame weighted mean over the kernel, truncated at the video's ends."""
    half = len(k) // 2
    out = np.zeros_like(x)
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        for i in range(s, e):
            lo, hi = max(s, i - half), min(e, i + half + 1)
            wts = k[lo - i + half : hi - i + half]
            out[i] = (wts[:, None] * x[lo:hi]).sum(0) / wts.sum()
    return out


@pytest.mark.parametrize("kind", ["moving", "gaussian"])
def test_constant_signal_is_unchanged(kind):
    x = np.tile(np.array([0.1, 0.2, 0.7]), (50, 1))
    got = smooth_probs(x, np.array([0, 3, 3, 20, 50]), kind=kind, width=15)
    np.testing.assert_allclose(got, x, atol=1e-6)


@pytest.mark.parametrize("kind", ["moving", "gaussian"])
def test_matches_direct_formula_and_keeps_rows_normalised(kind):
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(8), size=60)
    bounds = np.array([0, 7, 7, 8, 40, 60])
    got = smooth_probs(x, bounds, kind=kind, width=9)
    np.testing.assert_allclose(got, _direct(x, bounds, kernel(kind, 9)), atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(got, x)


def test_videos_do_not_leak_into_each_other():
    x = np.zeros((30, 2))
    x[:, 0] = 1.0
    x[10:, :] = [0.0, 1.0]  # video 1 (rows 10..29) is all class 1, video 0 all class 0
    got = smooth_probs(x, np.array([0, 10, 30]), kind="gaussian", width=21)
    np.testing.assert_array_equal(got, x)


def test_none_and_width_one_are_identity():
    x = np.random.default_rng(1).random((12, 3))
    np.testing.assert_allclose(
        smooth_probs(x, np.array([0, 12]), kind="none", width=9), x, rtol=1e-6
    )
    np.testing.assert_allclose(
        smooth_probs(x, np.array([0, 12]), kind="moving", width=1), x, rtol=1e-6
    )


def test_predictions_smoothed_per_video_in_any_row_order():
    rng = np.random.default_rng(2)
    videos = np.array(["a"] * 20 + ["b_left"] * 15)
    frames = np.concatenate([np.arange(1, 21), np.arange(1, 16)])
    probs = rng.dirichlet(np.ones(8), size=35).astype(np.float32)
    ref = smooth_probs(probs, np.array([0, 20, 35]), kind="moving", width=5)
    perm = rng.permutation(35)
    pred = Predictions(
        "expr", "test", {"video": videos[perm], "frame": frames[perm]}, probs[perm], CLASSES
    )
    got = smooth_predictions(pred, kind="moving", width=5)
    np.testing.assert_allclose(got.values, ref[perm], atol=1e-6)
    assert got.keys["video"].tolist() == videos[perm].tolist()
    assert got.meta["smoothing"] == {"kind": "moving", "width": 5}


@pytest.mark.parametrize("shuffle", [False, True])
def test_smooth_by_video_equals_smooth_predictions(shuffle):
    """The ensembler's per-video smoothing (no copy when rows are in order) in any row order."""
    rng = np.random.default_rng(3)
    videos = np.array(["a"] * 20 + ["b"] * 15 + ["c"] * 9)
    frames = np.concatenate([np.arange(1, 21), np.arange(1, 16), np.arange(1, 10)])
    probs = rng.dirichlet(np.ones(8), size=len(videos)).astype(np.float32)
    perm = rng.permutation(len(videos)) if shuffle else np.arange(len(videos))
    pred = Predictions(
        "expr", "test", {"video": videos[perm], "frame": frames[perm]}, probs[perm], CLASSES
    )
    want = smooth_predictions(pred, kind="gaussian", width=9).values
    got = smooth_by_video(pred.values, pred.keys["video"], pred.keys["frame"], "gaussian", 9)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert smooth_by_video(pred.values, videos, frames, "none", 9) is pred.values


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="predict.kind"):
        SmoothingConfig(kind="median")
    with pytest.raises(ValueError, match="predict.width"):
        SmoothingConfig(kind="moving", width=0)
