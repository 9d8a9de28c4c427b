"""How members are combined: small estimators in the scikit-learn style.

A recipe's parameters are stored by `__init__`; `fit(xs, labels)` chooses per-member,
per-column weights (and an intercept) on labelled devel rows; `predict(xs)` is the weighted
sum. `clone()` is an unfitted copy, so the honest estimate refits the same recipe on each half
of devel. Values are `intercept + sum_m weights[m] * member_m`:

- `mean`: every member weight 1/M.
- `greedy`: Caruana et al. (2004) ensemble selection with replacement on devel, initialised
  with the best few members; the best prefix of the trajectory is kept; weights = counts.
- `stack` (tracks that allow it): per column, non-negative linear weights (plus an intercept)
  fitted with scikit-learn; used only when its cross-validated score beats greedy's, else greedy.

`Pipeline` is a recipe followed by the track's post-processing: the whole of what is fitted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from abaw.errors import ConfigError
from abaw.track import Keys, PostProcessor, Scorer, Track, get_track, track_names

METHODS = ("mean", "greedy", "stack")
ScorerFor = Callable[[np.ndarray], Scorer]  # labels of some rows -> the metric of their values


def check_method(track: Track, method: str) -> None:
    """Refuse a method that does not exist or that `track` does not allow (one sentence)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method not in track.ensemble_methods:
        owners = [t.title for t in map(get_track, track_names()) if method in t.ensemble_methods]
        raise ConfigError(
            f"--method {method} is for {' and '.join(owners)}; "
            f"use {' or '.join(track.ensemble_methods)} for {track.title}"
        )


def combine(weights: np.ndarray, intercept: np.ndarray, xs: Sequence[np.ndarray]) -> np.ndarray:
    """Weighted sum of member arrays: intercept + sum_m weights[m] * xs[m] (float32)."""
    out = np.tile(intercept.astype(np.float64), (len(xs[0]), 1))
    for w, x in zip(weights, xs, strict=True):
        if w.any():
            out += w * x
    return out.astype(np.float32)


def greedy_counts(xs: Sequence[np.ndarray], score: Scorer, n_init: int, steps: int) -> np.ndarray:
    """Caruana ensemble selection with replacement; returns counts of the best prefix."""
    picks, _, kept = greedy_path(xs, score, n_init, steps)
    return np.bincount(picks[:kept], minlength=len(xs)).astype(np.float64)


def greedy_path(
    xs: Sequence[np.ndarray], score: Scorer, n_init: int, steps: int
) -> tuple[list[int], list[float], int]:
    """The selection trajectory: (member picked at each step, score after it, steps kept).

    Starts from the `n_init` best members (best first), then adds, with replacement, the
    member whose addition scores best; the kept prefix is the shortest with the best score.
    A member that is never picked gets weight 0 although it may score well alone: at every
    step another member raised the score more (a near copy of a member already in adds
    little; a weaker but different one can add more). The report shows this trajectory.
    """
    m = len(xs)
    single = np.array([score(x) for x in xs])
    order = np.argsort(-single, kind="stable")
    picks: list[int] = []
    total = np.zeros_like(xs[0], dtype=np.float64)
    traj: list[float] = []
    for i in order[: max(1, min(n_init, m))]:
        picks.append(int(i))
        total += xs[i]
        traj.append(score(total / len(picks)))
    for _ in range(steps):
        k = len(picks) + 1
        cand = [score((total + x) / k) for x in xs]
        j = int(np.argmax(cand))
        picks.append(j)
        total += xs[j]
        traj.append(cand[j])
    best = int(np.argmax(traj))  # first maximum: the shortest best prefix
    return picks, [float(x) for x in traj], best + 1


class Recipe:
    """Base of the combination methods.

    Args:
        scorer: labels -> a fast scalar metric of values of those rows (`Track.scorer`).
        n_init: greedy starts from this many best members.
        steps: greedy selection steps (None: twice the number of members).
        seed: seed of stacking's cross-validation folds.

    Fitted: `weights_` (M, C), `intercept_` (C,), `counts_` (greedy selection counts or None),
    `method_used_` and `notes_`.
    """

    method = ""

    def __init__(
        self, *, scorer: ScorerFor, n_init: int = 3, steps: int | None = None, seed: int = 0
    ) -> None:
        self.scorer, self.n_init, self.steps, self.seed = scorer, n_init, steps, seed
        self.weights_ = np.zeros((0, 0))
        self.intercept_ = np.zeros(0)
        self.counts_: np.ndarray | None = None
        self.selection_: dict[str, Any] | None = None  # greedy: the selection trajectory
        self.method_used_ = self.method
        self.notes_: list[str] = []

    def get_params(self) -> dict[str, Any]:
        """The `__init__` arguments (scikit-learn's convention)."""
        return {
            "scorer": self.scorer,
            "n_init": self.n_init,
            "steps": self.steps,
            "seed": self.seed,
        }

    def clone(self) -> Recipe:
        """An unfitted copy with the same parameters."""
        return type(self)(**self.get_params())

    def fit(self, xs: Sequence[np.ndarray], labels: np.ndarray) -> Recipe:
        """Choose the weights on these labelled rows; returns self."""
        raise NotImplementedError

    def predict(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        """The weighted sum of the members' values (no post-processing)."""
        return combine(self.weights_, self.intercept_, xs)

    def _set(
        self,
        weights: np.ndarray,
        intercept: np.ndarray,
        counts: np.ndarray | None = None,
        used: str | None = None,
    ) -> None:
        """Store the fitted state (`used`: the method actually used, if not this one)."""
        self.weights_, self.intercept_, self.counts_ = weights, intercept, counts
        self.method_used_ = used or self.method


class MeanRecipe(Recipe):
    """Every member weight 1/M."""

    method = "mean"

    def fit(self, xs: Sequence[np.ndarray], labels: np.ndarray) -> MeanRecipe:
        m, c = len(xs), xs[0].shape[1]
        self.notes_ = []
        self._set(np.full((m, c), 1.0 / m), np.zeros(c))
        return self


class GreedyRecipe(Recipe):
    """Ensemble selection with replacement; weights are the best prefix's counts / its size."""

    method = "greedy"

    def fit(self, xs: Sequence[np.ndarray], labels: np.ndarray) -> GreedyRecipe:
        m, c = len(xs), xs[0].shape[1]
        steps = 2 * m if self.steps is None else self.steps
        picks, scores, kept = greedy_path(xs, self.scorer(labels), self.n_init, steps)
        counts = np.bincount(picks[:kept], minlength=m).astype(np.float64)
        self.selection_ = {"start": min(self.n_init, m), "picks": picks, "scores": scores}
        self.selection_["kept"] = kept
        self.notes_ = []
        self._set(np.repeat((counts / counts.sum())[:, None], c, 1), np.zeros(c), counts, "greedy")
        return self


class StackRecipe(GreedyRecipe):
    """Per-column non-negative linear stacking, used only when it beats greedy in 5-fold CV."""

    method = "stack"

    def fit(self, xs: Sequence[np.ndarray], labels: np.ndarray) -> StackRecipe:
        super().fit(xs, labels)
        stacked = self._stack_or_none(xs, labels)
        if stacked is not None:
            self._set(*stacked, None, "stack")
        return self

    def _stack_or_none(
        self, xs: Sequence[np.ndarray], labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(weights, intercept) if stacking beats greedy on out-of-fold predictions, else None."""
        from sklearn.model_selection import KFold

        n, notes = len(labels), self.notes_
        if n < 20:
            notes.append("stack: too few devel rows for cross-validation; used greedy")
            return None
        steps = 2 * len(xs) if self.steps is None else self.steps
        oof_s = np.zeros_like(xs[0], dtype=np.float64)
        oof_g = np.zeros_like(xs[0], dtype=np.float64)
        for tr, te in KFold(5, shuffle=True, random_state=self.seed).split(np.arange(n)):
            w, b = _stack_fit(xs, labels, tr)
            oof_s[te] = b + sum(w[i] * xs[i][te] for i in range(len(xs)))
            counts = greedy_counts([x[tr] for x in xs], self.scorer(labels[tr]), self.n_init, steps)
            oof_g[te] = sum(counts[i] / counts.sum() * xs[i][te] for i in range(len(xs)))
        score = self.scorer(labels)
        # Stacking is offered only for [0, 1] intensities (Track.ensemble_methods): scored
        # clipped, as the track's post-processing writes them.
        s_stack = score(np.clip(oof_s, 0, 1))
        s_greedy = score(oof_g)
        if s_stack <= s_greedy:
            notes.append(
                f"stack: cross-validated {s_stack:.4f} <= greedy {s_greedy:.4f}; fell back to greedy"
            )
            return None
        notes.append(f"stack: cross-validated {s_stack:.4f} > greedy {s_greedy:.4f}")
        return _stack_fit(xs, labels, np.arange(n))


def _stack_fit(
    xs: Sequence[np.ndarray], labels: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column LinearRegression(positive=True) of the labels on the members' values."""
    from sklearn.linear_model import LinearRegression

    m, c = len(xs), xs[0].shape[1]
    w, b = np.zeros((m, c)), np.zeros(c)
    for j in range(c):
        a = np.stack([x[rows, j] for x in xs], axis=1)
        reg = LinearRegression(positive=True).fit(a, labels[rows, j])
        w[:, j], b[j] = reg.coef_, reg.intercept_
    return w, b


class BestSingleRecipe(Recipe):
    """The one member that scores best on the rows fitted (the honest estimate's baseline)."""

    method = "single"

    def fit(self, xs: Sequence[np.ndarray], labels: np.ndarray) -> BestSingleRecipe:
        score = self.scorer(labels)
        best = int(np.argmax([score(x) for x in xs]))
        weights = np.zeros((len(xs), xs[0].shape[1]))
        weights[best] = 1.0
        self.notes_ = []
        self._set(weights, np.zeros(xs[0].shape[1]))
        return self


RECIPES: dict[str, type[Recipe]] = {
    "mean": MeanRecipe,
    "greedy": GreedyRecipe,
    "stack": StackRecipe,
}


def make_recipe(method: str, *, scorer: ScorerFor, seed: int = 0) -> Recipe:
    """The unfitted recipe of `method` (see METHODS)."""
    if method not in RECIPES:
        raise ConfigError(f"unknown method {method!r}; choose from {METHODS}")
    return RECIPES[method](scorer=scorer, seed=seed)


class Pipeline:
    """A recipe, then the track's post-processing fitted on the recipe's devel values."""

    def __init__(self, recipe: Recipe, post: PostProcessor) -> None:
        self.recipe, self.post = recipe, post

    def clone(self) -> Pipeline:
        """Unfitted, same settings."""
        return Pipeline(self.recipe.clone(), self.post.clone())

    def fit(self, xs: Sequence[np.ndarray], labels: np.ndarray, keys: Keys) -> Pipeline:
        """Fit the weights, then the post-processing on the weighted sum; returns self."""
        self.recipe.fit(xs, labels)
        self.post.fit(self.recipe.predict(xs), labels, keys)
        return self

    def predict(self, xs: Sequence[np.ndarray], keys: Keys) -> np.ndarray:
        """Post-processed weighted sum of the rows `keys`."""
        return self.post.apply(self.recipe.predict(xs), keys)

    @property
    def notes(self) -> list[str]:
        """What fitting decided (the recipe's notes, then the post-processing's)."""
        return [*self.recipe.notes_, *self.post.notes]
