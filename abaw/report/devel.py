"""The per-column part of a report: the track's figures and scores of labelled devel predictions.

Which scores (Pearson r per emotion, F1 per class) and which figures (scatter, confusion
matrix) is the track's business (`Track.column_scores`, `Track.report_figures`).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from abaw.predictions import Predictions
from abaw.report.html import table
from abaw.track import get_track


def devel_part(pred: Predictions, out: Path, what: str) -> tuple[dict[str, Path], list[str]]:
    """(figures, HTML sections) of devel predictions; empty when they cannot be scored."""
    track = get_track(pred.track)
    figures = track.report_figures(pred, out, what=what)
    per = track.column_scores(pred)
    if per is None:
        return figures, []
    label = track.score_label
    rows = [[c, v] for c, v in per.items()] + [["mean", float(np.mean(list(per.values())))]]
    return figures, [
        f"<h3>Devel {label} per column, {html.escape(what)}</h3>",
        table(["column", label], rows),
    ]
