"""Expr task: loss masks, focal loss, per-frame predictions for every frame, end-to-end training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from abaw.errors import DataError
from abaw.expr import CLASSES
from abaw.expr.models import FusionConfig
from abaw.expr.smoothing import SmoothingConfig
from abaw.expr.track import TRACK, ExprDataConfig, ExprTask, FocalConfig, class_alpha
from abaw.losses import focal_loss


class _Store:
    def __init__(self, x):
        self.x, self.shape, self.dtype = x, x.shape, x.dtype

    def read(self, a, b):
        return self.x[a:b].astype(np.float32)

    def read_rows(self, idx):
        return self.x[idx].astype(np.float32)


@dataclass
class _Data:
    """A hand-built stand-in with the ExprData attributes the task uses."""

    root: Path
    backbones: list
    dims: dict
    videos: list
    split: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    has_face: np.ndarray
    store: _Store
    test_order: tuple

    def backbone_columns(self, name):
        at = 0
        for b in self.backbones:
            if b == name:
                return slice(at, at + self.dims[b])
            at += self.dims[b]
        raise KeyError(name)

    def class_counts(self, split):
        rows = np.concatenate(
            [
                np.arange(self.offsets[v], self.offsets[v + 1])
                for v in np.flatnonzero(self.split == split)
            ]
        )
        lab = self.labels[rows]
        return np.bincount(lab[lab >= 0], minlength=8)


def _standin(seed=0):
    rng = np.random.default_rng(seed)
    videos = ["t1", "t2", "t3", "d1", "d2_left", "d2_right", "x1", "x2_left", "x2_right"]
    split = np.array(["train"] * 3 + ["devel"] * 3 + ["test"] * 3)
    n = np.array([70, 15, 40, 33, 20, 20, 25, 9, 9])
    offsets = np.concatenate([[0], np.cumsum(n)])
    total = offsets[-1]
    labels = rng.integers(0, 8, total).astype(np.int8)
    labels[5:12] = -1
    labels[offsets[6] :] = -1  # test is unlabelled
    has_face = rng.random(total) > 0.2
    x = rng.standard_normal((total, 10)).astype(np.float16)
    tv = np.repeat(np.arange(6, 9), n[6:])  # video indices, as ExprData.test_order
    tf = np.concatenate([np.arange(1, k + 1) for k in n[6:]])
    perm = rng.permutation(len(tv))
    return _Data(
        Path("standin"),
        ["A", "B"],
        {"A": 6, "B": 4},
        videos,
        split,
        offsets,
        labels,
        has_face,
        _Store(x),
        (tv[perm], tf[perm]),
    )


def _task(data=None, **kw):
    data = data or _standin()
    cfg = {k: kw.pop(k) for k in list(kw) if k in ("model", "loss", "predict")}
    return ExprTask(data, "fusion", {"data": ExprDataConfig(**kw), **cfg}, "cpu")


def _numpy_focal(logits, target, gamma, alpha, eps):
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    p = np.exp(logp)
    keep = target != -1
    c = logits.shape[1]
    total = []
    for lp, pp, t in zip(logp[keep], p[keep], target[keep], strict=True):
        q = np.full(c, eps / c)
        q[t] += 1 - eps
        total.append(alpha[t] * np.sum(-q * (1 - pp) ** gamma * lp))
    return np.mean(total)


@pytest.mark.parametrize("gamma,eps", [(0.0, 0.0), (2.0, 0.0), (2.0, 0.1), (4.5, 0.3)])
def test_focal_loss_matches_numpy_formula(gamma, eps):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((50, 8)) * 3
    target = rng.integers(-1, 8, 50)
    alpha = rng.random(8) * 3
    got = focal_loss(
        torch.tensor(logits),
        torch.tensor(target),
        gamma=gamma,
        alpha=torch.tensor(alpha),
        label_smoothing=eps,
    )
    assert got.item() == pytest.approx(_numpy_focal(logits, target, gamma, alpha, eps), rel=1e-5)


def test_focal_gamma_zero_is_cross_entropy():
    rng = np.random.default_rng(4)
    logits, target = (
        torch.tensor(rng.standard_normal((40, 8))),
        torch.tensor(rng.integers(0, 8, 40)),
    )
    got = focal_loss(logits, target, gamma=0.0, label_smoothing=0.1)
    assert got.item() == pytest.approx(
        F.cross_entropy(logits, target, label_smoothing=0.1).item(), rel=1e-6
    )


def test_class_alpha_inverse_uniform_and_explicit():
    counts = np.array([100, 10, 0, 5, 50, 20, 10, 200])
    w = class_alpha(FocalConfig(alpha="inverse"), counts)
    present = counts > 0
    assert w[2] == 0 and w[present].mean() == pytest.approx(1.0)
    np.testing.assert_allclose(w[present] * counts[present], (w[0] * 100), rtol=1e-6)
    assert class_alpha(FocalConfig(), counts).tolist() == [1.0] * 8
    assert class_alpha(FocalConfig(alpha=[2.0] * 8), counts).tolist() == [2.0] * 8
    with pytest.raises(ValueError, match="loss.alpha"):
        FocalConfig(alpha=[1.0, 2.0])
    with pytest.raises(ValueError, match="loss.gamma"):
        FocalConfig(gamma=6.0)


@pytest.mark.parametrize("loss_on_missing_faces", [True, False])
def test_training_targets_mask_padding_unlabelled_and_missing_faces(loss_on_missing_faces):
    data = _standin()
    task = _task(data, window=16, stride=8, loss_on_missing_faces=loss_on_missing_faces)
    task.batch_size = 4
    n_real = 0
    for batch in task.train_batches(epoch=1, generator=torch.Generator().manual_seed(0)):
        x, pad, y = batch["x"], batch["pad"].numpy(), batch["y"].numpy()
        assert x.shape[1:] == (16, 10) and y.shape == pad.shape
        assert (y[pad] == -1).all()
        n_real += (~pad).sum()
    # Reconstruct the expected targets of every real training frame from the windows.
    win = task.windows["train"]
    rows = np.concatenate([np.arange(r, r + n) for r, n in zip(win.row, win.length, strict=True)])
    want = data.labels[rows].astype(int)
    if not loss_on_missing_faces:
        want[~data.has_face[rows]] = -1
    np.testing.assert_array_equal(np.sort(task._target[rows]), np.sort(want))
    assert n_real == len(rows)


def test_devel_predictions_cover_every_frame_once_in_store_order():
    data = _standin()
    task = _task(data, window=16, eval_stride=5)
    model = task.build_model().eval()
    pred = task.predict(model, "devel")
    assert pred.columns == CLASSES
    assert len(pred) == 33 + 20 + 20
    assert pred.keys["video"].tolist() == ["d1"] * 33 + ["d2_left"] * 20 + ["d2_right"] * 20
    assert pred.keys["frame"].tolist() == list(range(1, 34)) + list(range(1, 21)) * 2
    np.testing.assert_array_equal(pred.labels, data.labels[data.offsets[3] : data.offsets[6]])
    np.testing.assert_allclose(pred.values.sum(1), 1.0, atol=1e-5)
    assert 0.0 <= task.score(pred).value <= 1.0


def test_overlap_averaged_predictions_equal_direct_per_frame_average():
    data = _standin()
    task = _task(data, window=8, eval_stride=3)
    torch.manual_seed(0)
    model = task.build_model().eval()
    got = task.frame_probs(model, "devel")
    x = torch.from_numpy(data.store.x.astype(np.float32))
    sums, counts = np.zeros((73, 8)), np.zeros(73)
    base = data.offsets[3]
    for v in (3, 4, 5):  # direct: run each window separately, add its real frames
        s, e = data.offsets[v], data.offsets[v + 1]
        for start in range(s, e, 3):
            idx = np.minimum(np.arange(start, start + 8), e - 1)
            pad = torch.from_numpy(np.arange(start, start + 8) >= e)[None]
            with torch.no_grad():
                p = torch.softmax(model(x[idx][None], pad), -1)[0].numpy()
            real = min(8, e - start)
            sums[start - base : start - base + real] += p[:real]
            counts[start - base : start - base + real] += 1
            if start + 8 >= e:
                break
    np.testing.assert_allclose(got, sums / counts[:, None], atol=1e-5)


def test_test_predictions_follow_the_frame_list_order():
    data = _standin()
    task = _task(data, window=16)
    model = task.build_model().eval()
    pred = task.predict(model, "test")
    tv, tf = data.test_order
    tv = np.array(data.videos)[tv]
    assert pred.keys["video"].tolist() == tv.tolist() and pred.keys["frame"].tolist() == tf.tolist()
    assert len(set(zip(tv.tolist(), tf.tolist(), strict=True))) == len(pred) == 43
    probs = task.frame_probs(model, "test")  # store order: x1, x2_left, x2_right
    base = {"x1": 0, "x2_left": 25, "x2_right": 34}
    np.testing.assert_allclose(
        pred.values, probs[[base[v] + f - 1 for v, f in zip(tv, tf, strict=True)]]
    )
    assert pred.labels is None


def test_test_list_frame_outside_video_is_a_clear_error():
    data = _standin()
    tv, tf = data.test_order
    tf = tf.copy()
    tf[4] = 999
    data.test_order = (tv, tf)
    task = _task(data, window=16)
    with pytest.raises(DataError, match="entry 5 of the test frame list"):
        task.predict(task.build_model().eval(), "test")


def test_streaming_and_in_memory_paths_agree():
    data = _standin()
    held = _task(data, window=16, eval_stride=4)
    streamed = _task(data, window=16, eval_stride=4, memory_budget_mb=0, chunk_mb=0)
    assert streamed.chunks["devel"].max() > 0 and held.chunks["devel"].max() == 0
    model = held.build_model().eval()
    np.testing.assert_allclose(
        held.frame_probs(model, "devel"), streamed.frame_probs(model, "devel"), atol=1e-6
    )
    g = torch.Generator().manual_seed(0)
    a = sum(int(b["y"].ge(0).sum()) for b in held.train_batches(epoch=1, generator=g))
    b = sum(int(b["y"].ge(0).sum()) for b in streamed.train_batches(epoch=1, generator=g))
    assert a == b > 0


def test_balanced_sampling_favours_rare_class_windows():
    data = _standin()
    data.labels[data.offsets[0] : data.offsets[3]] = 0
    data.labels[80:85] = 3  # one rare-class patch in video t2
    task = _task(data, window=8, stride=8, balanced_sampling=True)
    task.batch_size = 1000
    g = torch.Generator().manual_seed(0)
    hits = [int((b["y"] == 3).any(dim=1).sum()) for b in task.train_batches(epoch=1, generator=g)]
    share = sum(hits) / len(task.windows["train"])
    plain = 1 / len(task.windows["train"])  # one window in uniform order holds the patch
    assert share > 5 * plain


def test_smoothing_section_changes_predictions_within_videos():
    data = _standin()
    raw = _task(data, window=16)
    smooth = _task(data, window=16, predict=SmoothingConfig(kind="gaussian", width=9))
    model = raw.build_model().eval()
    a, b = raw.predict(model, "devel"), smooth.predict(model, "devel")
    assert not np.allclose(a.values, b.values)
    assert b.meta["smoothing"] == {"kind": "gaussian", "width": 9}


def test_track_sections_and_checkpoint_rebuild():
    from abaw.train import TrainConfig, run_sections

    assert "train" not in TRACK.sections("fusion")  # the trainer adds its own section
    secs = run_sections(TRACK, "fusion")
    assert secs["model"] is FusionConfig and secs["train"] is TrainConfig
    assert TRACK.models() == ["fusion"] and TRACK.columns == CLASSES and TRACK.metric == "macro_f1"
    task = _task(model=FusionConfig(fuse="project", project_dim=8))
    model = task.build_model()
    again = TRACK.build_model(task.model_spec)
    again.load_state_dict(model.state_dict())
    assert task.dims == [6, 4]


@pytest.fixture(scope="module")
def tiny_expr(tmp_path_factory):
    from abaw.expr.synth import write_expr

    root = tmp_path_factory.mktemp("expr-tiny")
    write_expr(root, scale="tiny", seed=0)
    return root


def test_real_loader_test_predictions_match_the_frame_list(tiny_expr):
    from abaw.expr.layout import TEST_FRAME_LIST

    task = TRACK.prepare(
        tiny_expr, "fusion", {"data": ExprDataConfig(window=32)}, torch.device("cpu")
    )
    pred = task.predict(task.build_model().eval(), "test")
    lines = (tiny_expr / TEST_FRAME_LIST).read_text().splitlines()
    listed = [
        ln.split(",")[0] for ln in lines if ln.strip() and not ln.startswith("image_location")
    ]
    got = [f"{v}/{f:05d}.jpg" for v, f in zip(pred.keys["video"], pred.keys["frame"], strict=True)]
    assert got == listed  # exactly one prediction per listed frame, in the list's order
    assert any(v.endswith("_left") for v in pred.keys["video"])
    assert np.isfinite(pred.values).all()


def test_tiny_end_to_end_training_beats_majority_class(tiny_expr):
    from abaw.metrics import macro_f1
    from abaw.train import TrainConfig, fit

    configs = {
        "data": ExprDataConfig(window=32, stride=16),
        "model": FusionConfig(dropout=0.1),
        "loss": FocalConfig(gamma=2.0, label_smoothing=0.1),
        "train": TrainConfig(
            optimizer="adamw",
            lr=1e-3,
            batch_size=16,
            epochs=5,
            patience=0,
            ema=False,
            clip_norm=1.0,
            scheduler="none",
        ),
    }
    task = TRACK.prepare(tiny_expr, "fusion", configs, torch.device("cpu"))
    result = fit(task, configs["train"], device=torch.device("cpu"), seed=0)
    devel = task.predict(result.model, "devel")
    train_labels = task._target[task._target >= 0]
    majority = np.bincount(train_labels, minlength=8).argmax()
    baseline = macro_f1(devel.labels, np.full(len(devel), majority)).value
    assert task.score(devel).value == pytest.approx(result.best_score)
    assert result.best_score > baseline + 0.05
    tables = task.summary(devel)
    assert [t.title.split()[0] for t in tables] == ["devel", "confusion"]


def test_class_alpha_sqrt_inverse_and_effective_number():
    counts = np.array([1000, 10, 100, 50, 500, 200, 80, 0])
    inv = class_alpha(FocalConfig(alpha="inverse"), counts)
    sq = class_alpha(FocalConfig(alpha="sqrt_inverse"), counts)
    eff = class_alpha(FocalConfig(alpha="effective", effective_beta=0.99), counts)
    for w in (inv, sq, eff):
        assert w[7] == 0.0 and np.isclose(w[:7].mean(), 1.0)
        assert w[1] > w[2] > w[4] > w[0]  # rarer class, larger weight
    assert sq[1] / sq[0] < inv[1] / inv[0]  # sqrt is milder than inverse
    n = counts[:7].astype(float)
    e = (1 - 0.99) / (1 - 0.99**n)
    np.testing.assert_allclose(eff[:7], e / e.mean(), rtol=1e-5)
    # beta -> 0: uniform; beta -> 1: inverse
    near0 = class_alpha(FocalConfig(alpha="effective", effective_beta=1e-6), counts)
    np.testing.assert_allclose(near0[:7], 1.0, rtol=1e-4)
    near1 = class_alpha(FocalConfig(alpha="effective", effective_beta=1 - 1e-9), counts)
    np.testing.assert_allclose(near1[:7], inv[:7], rtol=1e-3)
    with pytest.raises(ValueError, match="effective_beta"):
        FocalConfig(alpha="effective", effective_beta=1.0)
    with pytest.raises(ValueError, match="sqrt_inverse"):
        FocalConfig(alpha="log")
