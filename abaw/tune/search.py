"""How the space is searched: the sampler, the pruner and the training seed of each trial."""

from __future__ import annotations

import warnings

import optuna

from abaw.errors import ConfigError

SAMPLERS = ("tpe", "random", "gp")
PRUNERS = ("median", "hyperband", "none")
TRIAL_SEEDS = ("fixed", "per-trial")
# The median pruner lets every trial run a third of its epochs (at least 3, at most 10) ...
MEDIAN_WARMUP = (1 / 3, 3, 10)
MEDIAN_STARTUP_TRIALS = 5  # ... and prunes nothing before this many trials have finished


def trial_seed(seed: int, number: int, mode: str) -> int:
    """The training seed of trial `number`: seed + number ("per-trial") or seed ("fixed")."""
    return seed + number if mode == "per-trial" else seed


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """tpe (multivariate, seeded), random or gp."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"--sampler {name!r}: expected one of {SAMPLERS}")


def median_warmup(max_epochs: int) -> int:
    """Epochs every trial runs before the median pruner may stop it: a third of them, 3 to 10.

    Slow starters (a low learning rate) look bad early and are often the best at the end;
    pruning them at epoch 3 taught TPE to avoid them. A third of 15 epochs reached random
    search's best-of-40 within half its epochs on 16 of 20 seeds, against 14 with a fixed 3;
    none of 21 other variants did better (benchmarks/bench_tune.py, docs/benchmarks.md).
    """
    share, low, high = MEDIAN_WARMUP
    return int(min(high, max(low, round(max_epochs * share))))


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """median (after a warm-up of a third of the epochs and 5 trials), hyperband or none."""
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=median_warmup(max_epochs)
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name!r}: expected one of {PRUNERS}")
