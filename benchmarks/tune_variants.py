"""Sampler and pruner variants for `bench_tune.py --part efficiency --variant NAME`.

The search-efficiency table in docs/benchmarks.md compares these against the default
(`abaw.tune.make_sampler` / `make_pruner`; `variant` swaps them where the worker looks them
up, in `abaw.tune.worker`). Each variant replaces the TPE sampler, the median pruner, or
both, for the TPE + median run only; random search is unchanged. Two are prototypes that
are not in `abaw`: a Latin-hypercube start-up design in front of TPE and Vizier's median
stopping rule (running means). Neither beat the default, so neither moved.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState


def _tpe(seed: int | None, **kw) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, **kw)


class LatinStartup(optuna.samplers.BaseSampler):
    """The first `n` trials from a Latin hypercube (each parameter's range cut into `n`
    strata, one trial per stratum; a categorical's values equally often), then `main`."""

    def __init__(self, main: optuna.samplers.BaseSampler, n: int, seed: int | None) -> None:
        self._main, self._n, self._seed = main, n, 0 if seed is None else seed

    def _u(self, name: str, number: int) -> float:
        key = hashlib.sha256(f"{self._seed}:{name}".encode()).digest()[:8]
        rng = np.random.default_rng(int.from_bytes(key, "little"))
        perm, jitter = rng.permutation(self._n), rng.random(self._n)
        return float((perm[number] + jitter[number]) / self._n)

    def infer_relative_search_space(self, study, trial):
        if trial.number < self._n:
            return {}
        return self._main.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        if trial.number < self._n:
            return {}
        return self._main.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if trial.number >= self._n:
            return self._main.sample_independent(study, trial, param_name, param_distribution)
        d, u = param_distribution, self._u(param_name, trial.number)
        if isinstance(d, CategoricalDistribution):
            return d.choices[min(int(u * len(d.choices)), len(d.choices) - 1)]
        if d.log:
            value = math.exp(math.log(d.low) + u * (math.log(d.high) - math.log(d.low)))
        elif d.step is not None:
            k = int(round((d.high - d.low) / d.step)) + 1
            value = d.low + min(int(u * k), k - 1) * d.step
        else:
            value = d.low + u * (d.high - d.low)
        if isinstance(d, IntDistribution):
            return int(min(d.high, max(d.low, round(value))))
        return float(min(d.high, max(d.low, value)))

    def before_trial(self, study, trial):
        self._main.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self._main.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self._main.reseed_rng()


class RunningMeanMedianPruner(optuna.pruners.BasePruner):
    """Vizier's median stopping rule: prune when the best value so far is worse than the
    median, over completed trials, of their running means up to the same step."""

    def __init__(self, n_startup_trials: int = 5, n_warmup_steps: int = 5) -> None:
        self.n_startup, self.warmup = n_startup_trials, n_warmup_steps

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.warmup:
            return False
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.n_startup:
            return False
        means = [
            float(np.mean(vals))
            for t in done
            if (vals := [v for s, v in t.intermediate_values.items() if s <= step])
        ]
        mine = [v for s, v in trial.intermediate_values.items() if s <= step]
        maximize = study.direction == StudyDirection.MAXIMIZE
        best = max(mine) if maximize else min(mine)
        if not means or not np.isfinite(best):
            return bool(means)
        ref = float(np.median(means))
        return best < ref if maximize else best > ref


def _median(startup: int, warmup: int) -> Callable[[int], optuna.pruners.BasePruner]:
    return lambda max_epochs: optuna.pruners.MedianPruner(startup, warmup)


def _gamma25(n: int) -> int:
    return min(math.ceil(0.25 * n), 25)


Sampler = Callable[[int | None], optuna.samplers.BaseSampler] | None
Pruner = Callable[[int], optuna.pruners.BasePruner] | None

# name -> (sampler from the study seed, pruner from the trial's epochs); None = the default
VARIANTS: dict[str, tuple[Sampler, Pruner]] = {
    "default": (None, None),
    "warmup-3": (None, _median(5, 3)),
    "warmup-4": (None, _median(5, 4)),
    "warmup-6": (None, _median(5, 6)),
    "warmup-7": (None, _median(5, 7)),
    "startup-5-warmup-2": (lambda s: _tpe(s, n_startup_trials=5), _median(5, 2)),
    "percentile-25": (
        None,
        lambda m: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=3),
    ),
    "percentile-75": (
        None,
        lambda m: optuna.pruners.PercentilePruner(75.0, n_startup_trials=5, n_warmup_steps=5),
    ),
    "patient-1": (
        None,
        lambda m: optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(5, 3), patience=1),
    ),
    "patient-2": (
        None,
        lambda m: optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(5, 3), patience=2),
    ),
    "startup-3": (lambda s: _tpe(s, n_startup_trials=3), _median(5, 3)),
    "startup-5": (lambda s: _tpe(s, n_startup_trials=5), _median(5, 3)),
    "startup-15": (lambda s: _tpe(s, n_startup_trials=15), None),
    "prior-weight-2": (lambda s: _tpe(s, prior_weight=2.0), None),
    "median-startup-10": (None, _median(10, 5)),
    "vizier-3": (None, lambda m: RunningMeanMedianPruner(5, 3)),
    "vizier-5": (None, lambda m: RunningMeanMedianPruner(5, 5)),
    "latin-startup": (
        lambda s: LatinStartup(_tpe(s, multivariate=True, n_startup_trials=10), 10, s),
        None,
    ),
    "independent": (lambda s: _tpe(s, multivariate=False), None),
    "gamma-25": (lambda s: _tpe(s, multivariate=True, gamma=_gamma25), None),
    "ei-64": (lambda s: _tpe(s, multivariate=True, n_ei_candidates=64), None),
    "ei-128": (lambda s: _tpe(s, multivariate=True, n_ei_candidates=128), None),
}


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """Within the block, `abaw tune`'s workers build TPE samplers and median pruners the
    variant's way (in this process: run_study with jobs=1)."""
    import abaw.tune.worker as tune

    if name not in VARIANTS:
        raise SystemExit(f"--variant {name!r}: expected one of {', '.join(VARIANTS)}")
    sampler, pruner = VARIANTS[name]
    real_sampler, real_pruner = tune.make_sampler, tune.make_pruner

    def make_sampler(kind: str, seed: int | None) -> optuna.samplers.BaseSampler:
        return sampler(seed) if kind == "tpe" and sampler else real_sampler(kind, seed)

    def make_pruner(kind: str, max_epochs: int) -> optuna.pruners.BasePruner:
        return pruner(max_epochs) if kind == "median" and pruner else real_pruner(kind, max_epochs)

    tune.make_sampler, tune.make_pruner = make_sampler, make_pruner
    try:
        yield
    finally:
        tune.make_sampler, tune.make_pruner = real_sampler, real_pruner
