"""Training losses of both tracks.

ERI (paper Eq. 8): `alpha * MSE(intensities, y) + beta * CE(class_logits, y == 1)`.
Labels are max-normalised per sample, so at least one emotion equals 1.0; the
class term teaches the model which emotion dominates. When several emotions tie
at 1.0 the target is spread evenly over them (soft-label cross-entropy).

Expr (paper Eq. 9): multi-class focal loss `-alpha_t (1 - p_t)^gamma log p_t`
with a per-class alpha vector; gamma = 0 gives weighted cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def eri_loss(
    intensities: torch.Tensor,
    class_logits: torch.Tensor | None,
    target: torch.Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 0.01,
    regression: str = "mse",
) -> torch.Tensor:
    """ERI loss for a batch.

    Args:
        intensities: (B, 7) predictions in [0, 1] (after sigmoid).
        class_logits: (B, 7) raw class-head outputs, or None when the model has no class head.
        target: (B, 7) labels in [0, 1], max-normalised.
        alpha: weight of the regression term.
        beta: weight of the class term (0 disables it).
        regression: "mse" or "bce" (binary cross-entropy on intensities).
    """
    target = target.to(intensities.dtype)
    if regression == "mse":
        reg = F.mse_loss(intensities, target)
    elif regression == "bce":
        reg = F.binary_cross_entropy(intensities.clamp(1e-6, 1 - 1e-6), target)
    else:
        raise ValueError(f"regression must be 'mse' or 'bce', got {regression!r}")
    loss = alpha * reg
    if beta and class_logits is not None:
        top = (target >= 1.0 - 1e-6).to(class_logits.dtype)
        # Rows without an exact 1.0 (should not happen after max-normalisation) use their argmax.
        none = top.sum(dim=1) == 0
        if none.any():
            top[none] = F.one_hot(target[none].argmax(dim=1), target.shape[1]).to(top.dtype)
        soft = top / top.sum(dim=1, keepdim=True)
        ce = -(soft * F.log_softmax(class_logits.float(), dim=1)).sum(dim=1).mean()
        loss = loss + beta * ce
    return loss


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -1,
) -> torch.Tensor:
    """Mean multi-class focal loss over the frames whose target is not `ignore_index`.

    Args:
        logits: (N, C) raw scores.
        target: (N,) class indices, `ignore_index` for frames to skip.
        gamma: focusing parameter in [0, 5]; 0 gives (weighted) cross-entropy.
        alpha: (C,) non-negative per-class weights (alpha_t = alpha[target]), or None for 1.
        label_smoothing: eps; the target distribution is (1 - eps) one-hot + eps / C, and
            the focal term is applied to each class's log-probability with its own p.

    Returns 0 (with a gradient path) when no frame is labelled.
    """
    if not 0.0 <= gamma <= 5.0:
        raise ValueError(f"gamma must be in [0, 5], got {gamma}")
    logits = logits.float()
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    logits = logits[valid]
    t = target[valid].long()
    c = logits.shape[1]
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    if label_smoothing > 0:
        q = torch.full_like(logp, label_smoothing / c)
        q.scatter_add_(
            1, t[:, None], torch.full_like(t[:, None], 1.0 - label_smoothing, dtype=logp.dtype)
        )
    else:
        q = F.one_hot(t, c).to(logp.dtype)
    per_class = -q * (1.0 - p).pow(gamma) * logp
    if alpha is not None:
        per_class = per_class * alpha.to(per_class)[t][:, None]
    return per_class.sum(dim=1).mean()
