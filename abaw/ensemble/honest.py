"""The honest estimate: everything fitted on one half of devel, scored on the other, both ways.

The devel score of an ensemble is optimistic: its weights and post-processing were chosen on
the same rows. Each pipeline (the ensemble's, and the best single member's with the same
post-processing, so the gain shown is the ensemble's and not the smoothing's) is cloned,
fitted on one half and scored on the other; the track says how devel is halved (ERI: random
samples; Expr: whole videos, about half the frames each).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from abaw.ensemble.recipes import Pipeline
from abaw.track import Keys


def honest_scores(
    pipelines: Sequence[Pipeline],
    xs: Sequence[np.ndarray],
    labels: np.ndarray,
    keys: Keys,
    halves: Sequence[np.ndarray],
    score: Callable[[np.ndarray, np.ndarray], float],
) -> list[list[float]]:
    """Per pipeline, its held-out score on each half (fitted on the other half).

    `score(labels, values)` is the challenge metric; each half's arrays are cut once and
    shared by every pipeline.
    """
    out: list[list[float]] = [[] for _ in pipelines]
    for fit_rows, eval_rows in (halves, halves[::-1]):
        fit_xs = [x[fit_rows] for x in xs]
        eval_xs = [x[eval_rows] for x in xs]
        fit_keys = {k: v[fit_rows] for k, v in keys.items()}
        eval_keys = {k: v[eval_rows] for k, v in keys.items()}
        for scores, pipeline in zip(out, pipelines, strict=True):
            fitted = pipeline.clone().fit(fit_xs, labels[fit_rows], fit_keys)
            scores.append(score(labels[eval_rows], fitted.predict(eval_xs, eval_keys)))
    return out
