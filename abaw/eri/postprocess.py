"""ERI post-processing of ensembled intensities (`Track.postprocessor`): clip to [0, 1].

Intensities live in [0, 1]; a weighted sum with an intercept (stacking) can leave that range,
and nothing is gained by predicting outside it. There is nothing to fit, so the manifest's
`postprocess` entry is {}.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ClipPostprocess:
    """Clip values to [0, 1] (a `PostProcessor` with nothing to choose)."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def fit(
        self, values: np.ndarray, labels: np.ndarray, keys: dict[str, np.ndarray]
    ) -> ClipPostprocess:
        """Nothing to choose."""
        return self

    def apply(self, values: np.ndarray, keys: dict[str, np.ndarray]) -> np.ndarray:
        """The values clipped to [0, 1]."""
        return np.clip(values, 0.0, 1.0)

    def clone(self) -> ClipPostprocess:
        """A new clipper."""
        return ClipPostprocess()

    def to_manifest(self) -> dict[str, Any]:
        """{}: nothing was chosen."""
        return {}

    def from_manifest(self, entry: dict[str, Any]) -> ClipPostprocess:
        """A new clipper ({} holds no choice)."""
        return ClipPostprocess()
