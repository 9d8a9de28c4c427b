"""The ensemble's test predictions, streamed one member at a time.

Memory: devel arrays of all members are held (devel is small); the test side is read one
member's file at a time (memory-mapped where it lies in the .npz), added to a running weighted
sum and released, so 20 full-scale Expr members cost about one member's test arrays, not 20.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from abaw.ensemble.predictions import Member, check_test_rows
from abaw.ensemble.recipes import Pipeline
from abaw.errors import AbawError
from abaw.predictions import Predictions


def stream_test(track: str, members: Sequence[Member], pipeline: Pipeline) -> Predictions:
    """Test predictions of the ensemble, reading one member's test file at a time.

    Memory: the running sum, one scratch buffer of the same size, the first member's keys,
    and the member being added (its keys are released as soon as they are compared).
    """
    recipe = pipeline.recipe
    total: np.ndarray | None = None
    buf: np.ndarray | None = None
    ref_keys: dict[str, np.ndarray] | None = None
    cols: tuple[str, ...] = ()
    for i, mem in enumerate(members):
        w = recipe.weights_[i]
        if not w.any():
            continue
        p = mem.load_test()
        p = check_test_rows(mem.name, p, ref_keys, cols)
        if ref_keys is None:
            ref_keys, cols = p.keys, p.columns
            total = np.empty(p.values.shape, np.float32)
            total[:] = recipe.intercept_.astype(np.float32)
            buf = np.empty_like(total)
        else:
            p.keys = ref_keys  # release this member's own key arrays before reading its values
        np.multiply(p.values, w.astype(np.float32), out=buf)
        total += buf
        del p
    if total is None or ref_keys is None:
        raise AbawError("no member has a non-zero weight")
    values = pipeline.post.apply(total, ref_keys)
    return Predictions(track, "test", dict(ref_keys), values, cols, None, {})
