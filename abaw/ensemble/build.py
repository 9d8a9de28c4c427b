"""`build_ensemble`: members -> recipe fitted on devel -> honest estimate -> streamed test side.

Every choice (member selection and weights, stacking, the track's post-processing) is one
`Pipeline` fitted on devel; the honest estimate refits the whole pipeline on one half of devel
and scores it on the other, both ways. The track object supplies everything track-specific:
the scorers, the halves, the post-processing and the methods it allows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from abaw.ensemble.honest import honest_scores
from abaw.ensemble.manifest import build_manifest, ensemble_dir, write_ensemble
from abaw.ensemble.predictions import Member, attach, collect_members
from abaw.ensemble.recipes import (
    BestSingleRecipe,
    Pipeline,
    Recipe,
    check_method,
    make_recipe,
)
from abaw.ensemble.verdict import BEST_SINGLE, Verdict, record_written, selection_entry
from abaw.errors import AbawError, ConfigError
from abaw.io import writable_dir
from abaw.predictions import Predictions
from abaw.track import Track, get_track


@dataclass
class EnsembleResult:
    """What `build_ensemble` made: the manifest, ensembled predictions, and where they are."""

    manifest: dict[str, Any]
    devel: Predictions
    test: Predictions | None
    members: list[Member]
    pipeline: Pipeline  # what is written: recipe + post-processing (`stream_test` applies it)
    out_dir: Path | None = None
    verdict: Verdict | None = None  # the honest comparison, and whether the ensemble was written
    ensemble: Pipeline | None = None  # the fitted ensemble, also when it lost and is not written


def build_ensemble(
    track: str,
    *,
    name: str,
    studies: Sequence[str] = (),
    predictions: Sequence[str | os.PathLike[str]] = (),
    top_k: int = 5,
    method: str = "greedy",
    storages: Sequence[str | None] = (None,),
    runs: str | os.PathLike[str] = "runs",
    artifacts: str | os.PathLike[str] | None = None,
    force: bool = False,
    post: bool = True,
    seed: int = 0,
    members: list[Member] | None = None,
    write: bool = True,
    keep_ensemble: bool = False,
) -> EnsembleResult:
    """Collect members, fit the recipe on devel, estimate the honest gain, stream the test side.

    Writes `<runs>/ensembles/<name>/` (predictions-devel.npz, predictions-test.npz,
    manifest.json) atomically unless `write` is False; refuses to replace it without `force`.
    When the honest gain is not positive the written predictions are the best single
    member's (same post-processing), unless `keep_ensemble` (verdict.py).
    """
    tr = get_track(track)  # an unknown track is a ConfigError naming the registered ones
    check_method(tr, method)
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    out_dir = ensemble_dir(runs, name)
    if write and out_dir.exists() and not force:
        raise AbawError(f"{out_dir} exists; choose another --name or pass --force to replace it")
    if write:  # a file or read-only folder in the way: said now, not after the fitting
        writable_dir(out_dir.parent, "ensembles folder (<runs>/ensembles)")
    if members is None:
        members = collect_members(
            track,
            studies,
            top_k=top_k,
            storages=storages,
            runs=runs,
            artifacts=artifacts,
            files=predictions,
        )
    result = fit_devel(
        tr, members, name=name, method=method, post=post, seed=seed, keep=keep_ensemble
    )
    if write:
        result.test = write_ensemble(
            out_dir,
            manifest=result.manifest,
            devel=result.devel,
            members=members,
            pipeline=result.pipeline,
            force=force,
        )
        result.out_dir = out_dir
    return result


def fit_devel(
    track: Track,
    members: list[Member],
    *,
    name: str,
    method: str,
    post: bool,
    seed: int,
    keep: bool = False,
) -> EnsembleResult:
    """The devel side: members aligned and scored, the pipeline fitted, the honest estimate,
    and the verdict: the ensemble, or the best single member when the ensemble does not win."""
    labels = _scored_devel(track, members)
    ref = members[0].devel
    xs = [m.devel.values for m in members]

    def pipeline(recipe: Recipe) -> Pipeline:
        return Pipeline(recipe, track.postprocessor(columns=ref.columns, enabled=post, seed=seed))

    fitted = pipeline(make_recipe(method, scorer=track.scorer, seed=seed)).fit(xs, labels, ref.keys)
    dev_values = fitted.predict(xs, ref.keys)
    halves = track.devel_halves(ref.keys, seed=seed)
    # The best single member gets the same post-processing, fitted on the same half, so the
    # gain shown is the ensemble's, not the smoothing's.
    single = pipeline(BestSingleRecipe(scorer=track.scorer, seed=seed))
    honest = honest_scores(
        [fitted, single], xs, labels, ref.keys, halves, lambda y, v: track.score_values(y, v).value
    )
    manifest = build_manifest(
        track,
        name=name,
        method=method,
        pipeline=fitted,
        members=members,
        score=track.score_values(labels, dev_values, ref.columns),
        honest=honest,
        halves=halves,
        seed=seed,
    )
    names = [m.name for m in members]
    selection = selection_entry(fitted.recipe, names)
    if selection:
        manifest["selection"] = selection
    sc = manifest["scores"]
    verdict = Verdict(
        sc["honest_ensemble"],
        sc["honest_best_single"],
        sc["best_single_member"],
        len(members),
        keep,
        used=int((np.abs(fitted.recipe.weights_).sum(axis=1) > 0).sum()),
    )
    written = fitted
    if verdict.written == BEST_SINGLE:
        written = single.clone().fit(xs, labels, ref.keys)
        dev_values = written.predict(xs, ref.keys)
    written_score = track.score_values(labels, dev_values, ref.columns)
    record_written(manifest, verdict, written=written, written_score=written_score)
    meta = {"ensemble": name, "method": manifest["method_used"]}
    devel = Predictions(track.name, "devel", dict(ref.keys), dev_values, ref.columns, labels, meta)
    return EnsembleResult(manifest, devel, None, members, written, verdict=verdict, ensemble=fitted)


def _scored_devel(track: Track, members: list[Member]) -> np.ndarray:
    """Align every member to the first, score each on devel; returns the devel labels."""
    for mem in members[1:]:
        attach(members[0], mem)
    ref = members[0].devel
    if ref.labels is None:
        raise AbawError("no member's devel predictions carry labels; the ensemble cannot be scored")
    labels = track.cast_labels(ref.labels)
    for mem in members:
        mem.devel_score = track.score_values(labels, mem.devel.values, ref.columns).value
    return labels
