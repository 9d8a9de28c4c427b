"""Expr (Aff-Wild2) data, the public entry points: load a data set, inspect it, clear its cache.

`load_expr` (abaw/expr/loader.py) validates the layout and opens, or builds once, the cached
standardised feature store; `inspect_data` (abaw/expr/inspection.py) reports what the loader
finds and every problem, not just the first. They live in their own modules so that the
inspection can use the loader without an import cycle; import them from here. See
docs/data-expr.md for the layout, fill policy and cache.
"""

from __future__ import annotations

from pathlib import Path

from abaw.expr.inspection import inspect_expr
from abaw.expr.layout import CLASSES
from abaw.expr.loader import (
    FILL_POLICIES,
    LOADER_VERSION,
    SPLITS,
    ExprData,
    clear_cache,
    data_identity,
    load_expr,
)
from abaw.expr.store import FeatureStore
from abaw.findings import InspectReport


def inspect_data(
    root: Path,
    *,
    features: list[str] | None = None,
    use_cache: bool = True,
    test_frames: str | Path | None = None,
    test_videos: str | Path | None = None,
) -> InspectReport:
    """What `load_expr` would find in `root`, and every problem (not only the first)."""
    return inspect_expr(
        Path(root),
        features=features,
        use_cache=use_cache,
        test_frames=test_frames,
        test_videos=test_videos,
    )


__all__ = [
    "CLASSES",
    "FILL_POLICIES",
    "LOADER_VERSION",
    "SPLITS",
    "ExprData",
    "FeatureStore",
    "clear_cache",
    "data_identity",
    "inspect_data",
    "load_expr",
]
