"""Where a tuned trial's files are, for every stage after `abaw tune`.

The one contract between the tuner and the stages that read its results
(ensemble, report, demo). A study in any Optuna storage carries, in its user
attributes, what it is (track, model, metric, sweep, data, artifact store); each
kept trial carries the artifact IDs of its checkpoint and its devel and test
predictions. So a worker on another machine, or the ensembler, finds everything
through the storage URL alone (plus a shared artifact folder).

Study user attributes (set by `abaw tune` when it creates the study):
    abaw_track, abaw_model, abaw_metric   strings
    abaw_sweep, abaw_data                 absolute paths (informational)
    abaw_artifacts                        absolute path of the FileSystemArtifactStore root
    abaw_keep                             K of `--keep`: files are kept for the top-K completed trials
    abaw_search, abaw_search_sha256       the search (sweep content + --set values); the sweep's hash
    abaw_data_identity                    the data set: root, layout, split sizes, label hash
                                          (`abaw tune` refuses to resume with another of either)
    abaw_fixed_first                      True when the sweep's [fixed] trial was enqueued first

Trial user attributes:
    abaw_kept            True when the trial's files were written (it entered the top-K on
                         completion). Optuna freezes a finished trial's attributes, so a
                         trial displaced later keeps the flag while its files are deleted:
                         `kept_trials` also requires a rank within the study's top `abaw_keep`.
    abaw_checkpoint      artifact ID of checkpoint.pt          (kept trials)
    abaw_predictions_devel, abaw_predictions_test   artifact IDs of the .npz files (kept trials)
    abaw_best_epoch, abaw_epochs_run, abaw_seconds  numbers (completed trials)
    abaw_setup_seconds   seconds to build the trial's task (data loaded once per worker)
    abaw_seed            the training seed of the trial (--seed, or seed + number per trial)
    abaw_fail_reason     one line (failed trials)
    abaw_fixed_config    True on the trial `abaw tune` enqueued first in a new study: the
                         sweep's [fixed] values of the searched keys (docs/tuning.md)
    abaw_retry_of        the number of the interrupted (Ctrl-C) trial this one repeats

An artifact ID is only ever written to a trial after its upload completed, so a
recorded ID always points at a whole file.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import FrozenTrial, TrialState

from abaw.errors import AbawError, DataError
from abaw.io import describe_path, ensure_dir
from abaw.predictions import Predictions

STUDY_TRACK = "abaw_track"
STUDY_MODEL = "abaw_model"
STUDY_METRIC = "abaw_metric"
STUDY_SWEEP = "abaw_sweep"
STUDY_DATA = "abaw_data"
STUDY_ARTIFACTS = "abaw_artifacts"
STUDY_KEEP = "abaw_keep"
STUDY_SEARCH = "abaw_search"  # the search: sweep content and --set values (abaw/tune/identity.py)
STUDY_SEARCH_SHA = "abaw_search_sha256"  # the sweep content's sha256: a resume must match it
STUDY_DATA_ID = "abaw_data_identity"  # root, layout, split sizes, label fingerprint
STUDY_FIXED_FIRST = "abaw_fixed_first"  # True once the [fixed] trial was enqueued (new study)

TRIAL_KEPT = "abaw_kept"
TRIAL_CHECKPOINT = "abaw_checkpoint"
TRIAL_BEST_EPOCH = "abaw_best_epoch"
TRIAL_EPOCHS_RUN = "abaw_epochs_run"
TRIAL_SECONDS = "abaw_seconds"
TRIAL_FAIL_REASON = "abaw_fail_reason"
TRIAL_SETUP_SECONDS = "abaw_setup_seconds"
TRIAL_SEED = "abaw_seed"  # the training seed of the trial (abaw tune --trial-seeds)
TRIAL_FIXED_CONFIG = "abaw_fixed_config"  # the new study's first trial: the [fixed] values
TRIAL_RETRY_OF = "abaw_retry_of"  # the interrupted trial a retry repeats (same parameters)

SPLITS = ("devel", "test")


def predictions_attr(split: str) -> str:
    """The trial user attribute holding the artifact ID of `split`'s predictions."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return f"abaw_predictions_{split}"


def default_artifacts_dir(runs: str | os.PathLike[str]) -> Path:
    """The artifact store folder used when `--artifacts` is not given: `<runs>/artifacts`."""
    return Path(runs) / "artifacts"


def artifact_store(root: str | os.PathLike[str]) -> FileSystemArtifactStore:
    """A file-system artifact store rooted at `root` (created if missing)."""
    root = ensure_dir(root, "artifact folder (--artifacts)")
    return FileSystemArtifactStore(str(root))


def study_info(study: optuna.Study) -> dict[str, Any]:
    """The abaw facts about a study (track, model, metric, ...), or {} for a foreign study."""
    attrs = study.user_attrs
    keys = (
        STUDY_TRACK,
        STUDY_MODEL,
        STUDY_METRIC,
        STUDY_SWEEP,
        STUDY_DATA,
        STUDY_ARTIFACTS,
        STUDY_KEEP,
    )
    return {k.removeprefix("abaw_"): attrs[k] for k in keys if k in attrs}


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with a finite value, best first (ties: lower trial number first).

    The one ranking: the tuner's top-K retention, `kept_trials` and every leaderboard use it,
    so "the top K" means the same trials everywhere.
    """
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    return sorted(done, key=lambda t: (sign * float(t.value), t.number))


def kept_trials(study: optuna.Study, k: int | None = None) -> list[FrozenTrial]:
    """Completed trials whose files are kept, best first (ties: lower trial number first).

    Kept = flagged `abaw_kept` and ranked within the top `abaw_keep` of all completed
    trials (the tuner deletes the files of trials displaced from there).
    """
    done = ranked_trials(study)
    keep = study.user_attrs.get(STUDY_KEEP)
    if isinstance(keep, int):
        done = done[:keep]
    trials = [t for t in done if t.user_attrs.get(TRIAL_KEPT)]
    return trials if k is None else trials[:k]


def _resolve_artifacts(study: optuna.Study, artifacts: str | os.PathLike[str] | None) -> Path:
    if artifacts is not None:
        return Path(artifacts)
    recorded = study.user_attrs.get(STUDY_ARTIFACTS)
    if not recorded:
        raise AbawError(
            f"study {study.study_name!r} records no artifact folder; pass --artifacts DIR"
        )
    return Path(recorded)


def download_trial_file(
    study: optuna.Study,
    trial: FrozenTrial,
    attr: str,
    dest: str | os.PathLike[str],
    *,
    artifacts: str | os.PathLike[str] | None = None,
) -> Path:
    """Copy the artifact recorded under `trial.user_attrs[attr]` to `dest` (atomically)."""
    artifact_id = trial.user_attrs.get(attr)
    where = f"study {study.study_name!r}, trial {trial.number}"
    if not artifact_id:
        raise AbawError(f"{where}: no {attr.removeprefix('abaw_')} file is recorded (not kept?)")
    root = _resolve_artifacts(study, artifacts)
    src = root / str(artifact_id)
    if not src.is_file():
        raise DataError(
            src,
            f"{where}: its {attr.removeprefix('abaw_').replace('_', ' ')} file is gone",
            expected="the file `abaw tune` wrote to the artifact folder",
            found=describe_path(src) or "nothing",
            hint="Restore the artifact folder from a backup, or pass --artifacts DIR if it "
            "moved (a resumed `abaw tune` lists every kept trial whose files are gone)",
        )
    dest = ensure_dir(Path(dest).parent, "temporary folder") / Path(dest).name
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    os.unlink(tmp)  # download_artifact refuses to overwrite
    try:
        download_artifact(
            artifact_store=artifact_store(root), file_path=tmp, artifact_id=artifact_id
        )
        os.replace(tmp, dest)
    except Exception as e:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(
            root / artifact_id,
            f"{where}: its {attr.removeprefix('abaw_')} artifact cannot be read",
            found=f"{type(e).__name__}: {e}",
        ) from None
    return dest


def trial_predictions(
    study: optuna.Study,
    trial: FrozenTrial,
    split: str,
    *,
    artifacts: str | os.PathLike[str] | None = None,
) -> Predictions:
    """A kept trial's predictions on `split` ("devel" or "test"), read from the artifact store."""
    with tempfile.TemporaryDirectory(prefix="abaw-trial-") as tmp:
        path = download_trial_file(
            study,
            trial,
            predictions_attr(split),
            Path(tmp) / f"predictions-{split}.npz",
            artifacts=artifacts,
        )
        pred = Predictions.load(path)
    pred.meta.setdefault("study", study.study_name)
    pred.meta.setdefault("trial", trial.number)
    return pred
