"""The challenge metrics equal the organisers' reference implementations."""

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import f1_score

from abaw.metrics import confusion_matrix, macro_f1, mean_pearson


@pytest.mark.parametrize("seed", range(5))
def test_mean_pearson_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    y = rng.random((200, 7))
    p = 0.3 * y + rng.normal(size=(200, 7))
    score = mean_pearson(y, p, columns=[f"e{i}" for i in range(7)])
    ref = [pearsonr(y[:, j], p[:, j])[0] for j in range(7)]
    assert abs(score.value - np.mean(ref)) < 1e-9
    for j in range(7):
        assert abs(score.per_column[f"e{j}"] - ref[j]) < 1e-9
    assert score.notes == []


def test_mean_pearson_large_offsets_and_scale():
    rng = np.random.default_rng(1)
    y = rng.random((500, 3)) * 1e6 + 1e9
    p = y * 2.5 - 7e8 + rng.normal(scale=1e5, size=y.shape)
    score = mean_pearson(y, p)
    ref = np.mean([pearsonr(y[:, j], p[:, j])[0] for j in range(3)])
    assert abs(score.value - ref) < 1e-9


def test_constant_prediction_is_zero_and_noted():
    rng = np.random.default_rng(0)
    y = rng.random((50, 2))
    p = rng.random((50, 2))
    p[:, 1] = 0.37  # a constant column: Pearson undefined (scipy returns NaN)
    score = mean_pearson(y, p, columns=["a", "b"])
    assert score.per_column["b"] == 0.0
    assert abs(score.per_column["a"] - pearsonr(y[:, 0], p[:, 0])[0]) < 1e-9
    assert abs(score.value - score.per_column["a"] / 2) < 1e-12
    assert len(score.notes) == 1 and "b" in score.notes[0]


def test_constant_labels_are_zero():
    y = np.ones((10, 1))
    p = np.arange(10.0)[:, None]
    assert mean_pearson(y, p).value == 0.0


@pytest.mark.parametrize("bad", ["shape", "nan", "one"])
def test_mean_pearson_rejects_bad_input(bad):
    y = np.zeros((5, 7))
    p = np.zeros((5, 7))
    if bad == "shape":
        p = np.zeros((5, 6))
    elif bad == "nan":
        p[0, 0] = np.nan
    else:
        y, p = y[:1], p[:1]
    with pytest.raises(ValueError):
        mean_pearson(y, p)


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(-1, 8, size=3000)
    p = np.where(rng.random(3000) < 0.4, np.clip(y, 0, 7), rng.integers(0, 8, size=3000))
    keep = y != -1
    ref = f1_score(y[keep], p[keep], average="macro", labels=range(8), zero_division=0)
    per = f1_score(y[keep], p[keep], average=None, labels=range(8), zero_division=0)
    score = macro_f1(y, p)
    assert abs(score.value - ref) < 1e-9
    assert np.allclose(list(score.per_column.values()), per, atol=1e-9)


def test_macro_f1_absent_classes_count_as_zero():
    y = np.array([0, 0, 4, 4, -1])
    p = np.array([0, 0, 4, 4, 3])
    score = macro_f1(y, p)
    assert abs(score.value - 2 / 8) < 1e-12
    ref = f1_score(y[:4], p[:4], average="macro", labels=range(8), zero_division=0)
    assert abs(score.value - ref) < 1e-12


def test_macro_f1_rejects_out_of_range():
    with pytest.raises(ValueError):
        macro_f1(np.array([0, 8]), np.array([0, 1]))
    with pytest.raises(ValueError):
        macro_f1(np.array([0, 1]), np.array([0, -1]))


def test_confusion_matrix_counts():
    cm = confusion_matrix(np.array([0, 1, 1, 7]), np.array([0, 1, 2, 7]))
    assert cm.sum() == 4 and cm[1, 2] == 1 and cm[7, 7] == 1 and cm.shape == (8, 8)
