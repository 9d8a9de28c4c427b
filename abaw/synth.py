"""`abaw synth`: synthetic data sets in the real on-disk layouts of every track.

The real data sets are licensed; these stand-ins are written in exactly the
layouts of docs/data.md so the real loaders are what tests and demos exercise.
Each data set carries `oracle.json`: the score of the ideal (latent-state)
predictor, the ceiling every result is reported against.

Track-specific writers live in the wings (`abaw/eri/synth.py`, `abaw/expr/synth.py`),
reached through `Track.synth`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from abaw.errors import AbawError, ConfigError
from abaw.io import folder_problem, writable_dir
from abaw.track import get_track


def synth(
    track: str,
    out: str | os.PathLike[str],
    *,
    scale: str = "small",
    seed: int = 0,
    difficulty: str = "normal",
    features: list[str] | None = None,
    force: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Write a synthetic data set of `track` into `out`; returns its oracle (oracle.json).

    Args:
        track: a registered track name.
        out: the folder to write; a non-empty one is refused unless `force`.
        scale: "tiny" (seconds, tests), "small" (a CPU demo) or "full" (challenge sizes).
        seed: the generator's seed (the output is deterministic per seed).
        difficulty: "normal" or "hard" (fewer training samples, weaker per-step signal).
        features: feature sets / backbones to write (default: the track's choice).
        options: the track's `synth_options` (ERI `layout`; Expr `feature_format`).
    """
    tr = get_track(track)
    unknown = [k for k in options if k not in tr.synth_options]
    if unknown:
        raise ConfigError(
            f"synth: {', '.join(unknown)} is not an option of the {tr.name} track "
            f"(its options: {', '.join(tr.synth_options) or 'none'})"
        )
    out = Path(out)
    bad = folder_problem(out, "a folder for the data set (--out)")
    if bad is not None:
        raise bad
    if out.exists() and any(out.iterdir()) and not force:
        raise AbawError(f"{out}: folder is not empty; choose another --out or pass --force")
    writable_dir(out, "data set folder (--out)")
    return tr.synth(
        out, scale=scale, seed=seed, difficulty=difficulty, features=features, **options
    )
