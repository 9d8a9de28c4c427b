"""What a study is, checked on every resume: the search it runs and the data set it runs on.

A study's trials are only comparable (for the sampler, the pruner, the top-K and the
ensembler) when they come from one search on one data set. So a study records both when it
is created, and `abaw tune` refuses to resume it with anything else, naming both sides:

- the sweep: its parsed content (track, model, metric, direction, `[fixed]`, `[space]`),
  hashed; comments, formatting and the file's path do not count. Other `--set` values than
  the study was made with are warned about, not refused: cutting `train.epochs` to finish a
  study is common and fair;
- the data set: `Track.data_identity` (root, layout, split sizes, a fingerprint of the
  labels). The same data set at another path (moved, or mounted elsewhere on another
  machine) is accepted with `--data-moved`; any other difference is refused.

A resume also checks that the kept trials' files are still in the artifact store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna

from abaw import trials as T
from abaw.console import warn
from abaw.errors import ConfigError
from abaw.sweep import ParamSpec, Sweep

NEW_STUDY = "start a new study with --study NAME"
_FILES = {
    T.TRIAL_CHECKPOINT: "checkpoint",
    T.predictions_attr("devel"): "devel predictions",
    T.predictions_attr("test"): "test predictions",
}


def _plain(value: Any) -> Any:
    """`value` as it comes back from a storage (JSON: tuples become lists, keys sorted)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def search_identity(sw: Sweep, overrides: dict[str, Any]) -> dict[str, Any]:
    """The search a study runs: what a trial's settings are drawn from."""
    return _plain(
        {
            "track": sw.track,
            "model": sw.model,
            "metric": sw.metric,
            "direction": sw.direction,
            "fixed": sw.fixed,
            "space": {k: _spec(v) for k, v in sw.space.items()},
            "overrides": overrides,
        }
    )


def _spec(spec: ParamSpec) -> dict[str, Any]:
    """A search dimension as its sweep file spells it (no empty fields)."""
    empty = (None, False, ())  # compared by identity or type: a `low` of 0 is not empty
    return {
        k: v
        for k, v in asdict(spec).items()
        if k != "name" and not any(v is e or (type(v) is type(e) and v == e) for e in empty)
    }


def digest(value: Any) -> str:
    """A short sha256 of a plain value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def sweep_digest(search: dict[str, Any]) -> str:
    """The hash a resume must match: the sweep's content, not the --set values."""
    return digest({k: v for k, v in search.items() if k != "overrides"})


def _flat(search: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for part in ("fixed", "space", "overrides"):
        for k, v in (search.get(part) or {}).items():
            out[f"[{part}] {k}" if part != "overrides" else f"--set {k}"] = v
    for k in ("track", "model", "metric", "direction"):
        if k in search:
            out[f"[study] {k}"] = search[k]
    return out


def _differences(old: dict[str, Any], new: dict[str, Any], shown: int = 3) -> str:
    a, b = _flat(old), _flat(new)
    diffs = [
        f"{k} was {json.dumps(a.get(k)) if k in a else 'absent'}, "
        f"now {json.dumps(b.get(k)) if k in b else 'absent'}"
        for k in sorted(set(a) | set(b))
        if a.get(k, ...) != b.get(k, ...)
    ]
    more = f" (and {len(diffs) - shown} more)" if len(diffs) > shown else ""
    return "; ".join(diffs[:shown]) + more


def describe_data(ident: dict[str, Any]) -> str:
    """ "/data/eri (muse; train 36 / devel 12 / test 12 samples; labels 042a919b)"."""
    sizes = " / ".join(f"{k} {v}" for k, v in (ident.get("splits") or {}).items())
    return (
        f"{ident.get('root', '?')} ({ident.get('layout', '?')}; {sizes} "
        f"{ident.get('unit', '')}; labels {str(ident.get('labels', '?'))[:8]})"
    )


def check_resume(
    study: optuna.Study,
    *,
    search: dict[str, Any],
    data: dict[str, Any],
    sweep_path: Path,
    data_moved: bool,
) -> dict[str, Any]:
    """Refuse a resume with another search or data set; return the attributes to record.

    A new study (or one made before these checks) gets both recorded; a study whose data
    set sits at another path is accepted only with `data_moved`.
    """
    attrs, name = study.user_attrs, study.study_name
    record: dict[str, Any] = {}
    old_sha, sha = attrs.get(T.STUDY_SEARCH_SHA), sweep_digest(search)
    before = attrs.get(T.STUDY_SEARCH) or {}
    if old_sha is None:
        record.update({T.STUDY_SEARCH: search, T.STUDY_SEARCH_SHA: sha})
    elif old_sha != sha:
        raise ConfigError(
            f"study {name!r} was made from another sweep: {_differences(before, search)} "
            f"(the study's sweep {old_sha} from {attrs.get(T.STUDY_SWEEP, '?')}; now {sha} from "
            f"{sweep_path}). Trials of two searches are not comparable: {NEW_STUDY}, or resume "
            "with the sweep the study was made with"
        )
    elif before.get("overrides", {}) != search["overrides"]:
        warn(  # a budget cut to finish a study (--set train.epochs=...) is a common, fair use
            f"study {name!r} was made with other --set values: "
            f"{_differences({'overrides': before.get('overrides', {})}, search)}; its "
            "trials mix both (the sampler and the ensemble treat them as one search)"
        )
    old = attrs.get(T.STUDY_DATA_ID)
    if old is None:
        record[T.STUDY_DATA_ID] = data
        return record
    same = {k: v for k, v in old.items() if k != "root"} == {
        k: v for k, v in data.items() if k != "root"
    }
    if not same:
        raise ConfigError(
            f"study {name!r} was tuned on another data set: {describe_data(old)}, but --data is "
            f"{describe_data(data)}. Its trials are not comparable with new ones: {NEW_STUDY}, "
            "or point --data at the study's data set"
        )
    if old.get("root") != data.get("root") and not data_moved:
        raise ConfigError(
            f"study {name!r} was tuned on the data set at {old.get('root')}; --data is "
            f"{data.get('root')}, which holds the same layout, split sizes and labels. If it is "
            "the same data set moved (or mounted at another path on this machine), pass "
            f"--data-moved; if its features differ, {NEW_STUDY}"
        )
    return record


def warn_missing_files(study: optuna.Study, artifacts: Path) -> list[int]:
    """Say which kept trials' files are gone from the artifact store; return their numbers.

    Why at resume: a teammate's cleanup or a removed folder is otherwise only found by
    `abaw ensemble` or `abaw report`, long after the study was "finished".
    """
    gone: dict[int, list[str]] = {}
    for t in T.kept_trials(study):
        for attr, what in _FILES.items():
            artifact = t.user_attrs.get(attr)
            if artifact and not (artifacts / str(artifact)).is_file():
                gone.setdefault(t.number, []).append(what)
    if gone:
        listing = "; ".join(f"trial {n}: {', '.join(w)}" for n, w in sorted(gone.items())[:5])
        more = f" (and {len(gone) - 5} more trials)" if len(gone) > 5 else ""
        warn(
            f"study {study.study_name!r}: files of {len(gone)} kept trial(s) are gone from "
            f"{artifacts} ({listing}{more}). The study resumes, but `abaw ensemble` and "
            "`abaw report` cannot use those trials: restore the files from a backup, or pass "
            "--artifacts DIR if the folder moved"
        )
    return sorted(gone)
