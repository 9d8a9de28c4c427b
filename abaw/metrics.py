"""The two challenge metrics, computed exactly as the organisers' evaluation code does.

ERI: Pearson r per emotion over all samples of a split, then the mean of the 7
(EIHW/MuSe2022 eval.py `mean_pearsons`). Expr: sklearn's macro F1 over the 8
classes (labels=range(8)) on annotated frames only (label -1 excluded).

Pearson is undefined when a column of predictions (or labels) is constant.
scipy returns NaN there and the challenge mean would then be NaN; we define it
as 0.0 (no linear relation can be measured), which is what a constant
predictor deserves, and report which columns were constant so it is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EXPR_NUM_CLASSES = 8

# How people say each metric name (tables, headings, log lines); a sweep's own metric
# that is not listed here is shown as it is spelled.
METRIC_LABELS = {"mean_pearson": "mean Pearson", "macro_f1": "macro F1"}


def metric_label(metric: str | None) -> str:
    """The readable name of a metric ("mean_pearson" -> "mean Pearson"), for every table."""
    if not metric:
        return "score"
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


@dataclass(frozen=True)
class Score:
    """A metric value with its per-column breakdown."""

    value: float
    per_column: dict[str, float]
    notes: list[str] = field(default_factory=list)


def pearson_columns(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r of each column; returns (r, undefined_mask). Undefined columns get r = 0.

    Computed in float64 with centred sums, which matches scipy.stats.pearsonr to ~1e-12.
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"y_true and y_pred must be 2-D of one shape, got {t.shape} and {p.shape}")
    if t.shape[0] < 2:
        raise ValueError(f"Pearson needs at least 2 samples, got {t.shape[0]}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("y_true and y_pred must be finite (NaN or inf found)")
    tc = t - t.mean(axis=0)
    pc = p - p.mean(axis=0)
    # Normalise each column before the dot product to avoid overflow/underflow.
    tn = np.linalg.norm(tc, axis=0)
    pn = np.linalg.norm(pc, axis=0)
    # A column is constant when its spread is zero relative to its magnitude.
    scale_t = np.maximum(np.abs(t).max(axis=0), 1e-300)
    scale_p = np.maximum(np.abs(p).max(axis=0), 1e-300)
    undefined = (tn <= 1e-13 * scale_t * np.sqrt(len(t))) | (
        pn <= 1e-13 * scale_p * np.sqrt(len(p))
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.einsum("ij,ij->j", tc / np.where(tn > 0, tn, 1), pc / np.where(pn > 0, pn, 1))
    r = np.clip(r, -1.0, 1.0)
    r[undefined] = 0.0
    return r, undefined


def mean_pearson(
    y_true: np.ndarray, y_pred: np.ndarray, columns: list[str] | tuple[str, ...] | None = None
) -> Score:
    """ERI metric: mean over emotions of the Pearson r between labels and predictions.

    Args:
        y_true: (n_samples, n_emotions) labels.
        y_pred: (n_samples, n_emotions) predictions.
        columns: emotion names for the per-column breakdown.
    """
    r, undefined = pearson_columns(y_true, y_pred)
    names = list(columns) if columns is not None else [str(i) for i in range(len(r))]
    if len(names) != len(r):
        raise ValueError(f"{len(names)} column names for {len(r)} columns")
    notes = [
        f"Pearson undefined for {n} (constant values); counted as 0"
        for n, u in zip(names, undefined, strict=True)
        if u
    ]
    return Score(float(r.mean()), {n: float(v) for n, v in zip(names, r, strict=True)}, notes)


def macro_f1(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int = EXPR_NUM_CLASSES,
    columns: list[str] | tuple[str, ...] | None = None,
) -> Score:
    """Expr metric: unweighted mean of per-class F1 over classes 0..num_classes-1.

    Frames whose label is -1 (not annotated) are excluded. A class absent from
    both labels and predictions scores F1 = 0, as sklearn's f1_score with
    labels=range(8) and zero_division=0 does.
    """
    t = np.asarray(y_true).astype(np.int64, copy=False).ravel()
    p = np.asarray(y_pred).astype(np.int64, copy=False).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    keep = t != -1
    t, p = t[keep], p[keep]
    if ((t < 0) | (t >= num_classes)).any():
        raise ValueError(f"labels must be -1 or in 0..{num_classes - 1}")
    if ((p < 0) | (p >= num_classes)).any():
        raise ValueError(f"predictions must be in 0..{num_classes - 1}")
    cm = confusion_matrix(t, p, num_classes)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    names = list(columns) if columns is not None else [str(i) for i in range(num_classes)]
    return Score(float(f1.mean()), {n: float(v) for n, v in zip(names, f1, strict=True)})


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = EXPR_NUM_CLASSES
) -> np.ndarray:
    """Counts[i, j] = frames of true class i predicted as j (labels -1 must be removed first)."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )
