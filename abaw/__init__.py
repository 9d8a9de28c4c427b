"""abaw: from ABAW challenge features to a tuned, ensembled, validated submission.

Two tracks share one data contract, one trainer, one tuner and one ensembler:
ERI (Hume-Reaction, 7 intensities) and Expr (Aff-Wild2, 8 per-frame classes).

The public API is re-exported here and imported lazily on first use, so
`import abaw` (and the CLI's start-up) stays cheap::

    import abaw
    study = abaw.run_study("sweeps/eri-lstm.toml", "data/eri", trials=20)
    abaw.kept_trials(study, 5)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # tuning (abaw tune / abaw studies)
    "run_study": "abaw.tune",
    "load_study": "abaw.tune",
    "open_storage": "abaw.tune",
    # what a study holds (the contract for ensemble / report)
    "kept_trials": "abaw.trials",
    "trial_predictions": "abaw.trials",
    "download_trial_file": "abaw.trials",
    "study_info": "abaw.trials",
    # training one configuration (abaw train)
    "train_sweep": "abaw.train",
    "fit": "abaw.train",
    "TrainConfig": "abaw.train",
    "FitResult": "abaw.train",
    "resolve_device": "abaw.train",
    "run_sections": "abaw.train",
    "load_checkpoint": "abaw.checkpoint",
    "rebuild_model": "abaw.checkpoint",
    # ensembling, submitting, reporting, the demo (abaw ensemble / submit / report / demo)
    "build_ensemble": "abaw.ensemble",
    "load_ensemble": "abaw.ensemble",
    "validate": "abaw.submit",
    "make_report": "abaw.report",
    "run_demo": "abaw.demo",
    # tracks, sweeps, predictions
    "get_track": "abaw.track",
    "track_names": "abaw.track",
    "DataCache": "abaw.track",
    "load_sweep": "abaw.sweep",
    "build_configs": "abaw.sweep",
    "Predictions": "abaw.predictions",
    # errors
    "AbawError": "abaw.errors",
    "ConfigError": "abaw.errors",
    "DataError": "abaw.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'abaw' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
