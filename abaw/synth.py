"""`abaw synth`: synthetic data sets in the real on-disk layouts of both tracks.

The real data sets are licensed; these stand-ins are written in exactly the
layouts of docs/data.md so the real loaders are what tests and demos exercise.
Each data set carries `oracle.json`: the score of the ideal (latent-state)
predictor, the ceiling every result is reported against.

Track-specific writers live in `abaw/eri/synth.py` and `abaw/expr/synth.py`, reached
through `Track.synth`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from abaw.errors import AbawError
from abaw.track import get_track


def main(args: argparse.Namespace) -> int:
    """CLI: write the data set, then print a short summary."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise AbawError(f"{out}: folder is not empty; choose another --out or pass --force")
    features = [f.strip() for f in args.features.split(",")] if args.features else None
    get_track(args.track).synth(args, out, features)
    return 0
