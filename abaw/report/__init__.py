"""`abaw report`: one self-contained HTML page and PNG figures for a study or an ensemble.

A team with a deadline wants to see, at a glance and without a server, whether a
search converged, which settings mattered, where pruning cut, and how the best
model (or the ensemble) does per emotion or per class. The page embeds every
figure as a base64 PNG (no network, no JavaScript) and the same PNGs are
written beside it for slides and chat.

One job per module (this file holds the entry point and re-exports):

- study.py: a study's figures and tables (Contract A: abaw/trials.py);
- ensemble.py: an ensemble's weights and scores (Contract B, read with the ensembler's loader);
- devel.py: the per-column figures and scores of devel predictions, asked of the track;
- figures.py: Optuna's plots and the learning curves; html.py: the page itself.

Python: `make_report(study=...)` or `make_report(ensemble=...)`; `abaw demo` calls it once
per track.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from abaw.errors import AbawError, DataError
from abaw.io import folder_problem, safe_name
from abaw.report.ensemble import ensemble_report
from abaw.report.html import Report
from abaw.report.study import study_report

__all__ = ["Report", "make_report"]


def make_report(
    *,
    study: str | optuna.Study | None = None,
    ensemble: str | None = None,
    storage: str | None = None,
    runs: str | os.PathLike[str] = "runs",
    artifacts: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> Report:
    """Write the HTML page and PNG figures of one study or one ensemble.

    Args:
        study: a study name (opened from `storage`) or an `optuna.Study` already open.
        ensemble: an ensemble name under `<runs>/ensembles/` (exclusive with `study`).
        storage: Optuna storage URL; None = the local journal file under `runs`.
        runs: the run directory.
        artifacts: artifact store folder; None = the one the study records.
        out: output folder; default `<runs>/reports/<name>/`.
    """
    if (study is None) == (ensemble is None):
        raise AbawError("give exactly one of a study or an ensemble to report on")
    if artifacts is not None:  # a report would otherwise only note "unreadable" for the files
        where = "the artifact folder (--artifacts)"
        bad = folder_problem(artifacts, where)
        if bad is not None or not Path(artifacts).is_dir():
            raise bad or DataError(artifacts, "folder not found", expected=where, found="nothing")
    runs = Path(runs)
    if ensemble is not None:
        dest = Path(out) if out else runs / "reports" / safe_name(ensemble, what="ensemble name")
        return ensemble_report(ensemble, runs, dest)
    if isinstance(study, optuna.Study):
        st = study
    else:
        from abaw.tune import load_study

        st = load_study(study, storage=storage, runs=runs)
    dest = Path(out) if out else runs / "reports" / safe_name(st.study_name, what="study name")
    return study_report(st, dest, artifacts)
