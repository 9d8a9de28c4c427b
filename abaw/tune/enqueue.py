"""What a study runs before the sampler chooses: the sweep's defaults first, interrupted trials again.

- A NEW study's first trial is the sweep's `[fixed]` configuration (the searched keys only,
  each value inside its distribution), so a budget of a few trials never ends below the
  recommended settings: TPE's random start-up can sample a 1e-5 learning rate, the defaults
  do not. `abaw tune --no-default-first` leaves the first trial to the sampler.
- On resume, a trial stopped by Ctrl-C is enqueued again with the same parameters (like a
  crashed one, recovery.py), unless `--no-retry-interrupted`.

Both use Optuna's public `Study.enqueue_trial`; the enqueued trial waits in the study and the
next `ask` of any worker takes it, so trial counting (`--trials N`) is unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState

from abaw import trials as T
from abaw.sweep import ParamSpec

INTERRUPTED = "interrupted (Ctrl-C)"  # the fail reason of a trial stopped by Ctrl-C


def inside(spec: ParamSpec, value: Any) -> bool:
    """Whether `value` lies in the distribution of `spec` (Optuna would use it, not resample)."""
    if spec.type == "categorical":
        # 1 == 1.0 as Optuna sees it; True is not 1
        return any(
            value == c and isinstance(value, bool) == isinstance(c, bool) for c in spec.choices
        )
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if spec.type == "int" and not float(value).is_integer():
        return False
    low, high = spec.low, spec.high
    if low is None or high is None or not low <= value <= high:
        return False
    if spec.step:
        k = (value - low) / spec.step
        return abs(k - round(k)) < 1e-8
    return True


def fixed_params(
    space: dict[str, ParamSpec], configs: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """(the [fixed] value of each searched key inside its distribution, the keys left out).

    Values are read from the built configs, so a searched key absent from `[fixed]` takes
    the default `abaw train` would use; one outside its range (or unset, e.g. `data.max_len`
    chosen from the data) is left to the sampler.
    """
    params, left = {}, []
    for key, spec in space.items():
        section, _, name = key.partition(".")
        value = getattr(configs.get(section), name, None)
        if spec.type == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if inside(spec, value):
            params[key] = value
        else:
            left.append(key)
    return params, left


def enqueue_fixed_first(
    study: optuna.Study, space: dict[str, ParamSpec], configs: dict[str, Any]
) -> tuple[dict[str, Any], list[str]] | None:
    """Enqueue the [fixed] configuration as the first trial of a new study.

    Returns (params, keys left to the sampler), or None when the study already has trials
    (a resume, or another worker created it first) or no searched key has a usable value.
    """
    if study.user_attrs.get(T.STUDY_FIXED_FIRST) or study.get_trials(deepcopy=False):
        return None
    params, left = fixed_params(space, configs)
    if not params:
        return None
    study.set_user_attr(T.STUDY_FIXED_FIRST, True)  # first, so a worker joining now skips it
    study.enqueue_trial(params, user_attrs={T.TRIAL_FIXED_CONFIG: True})
    return params, left


def retry_interrupted(study: optuna.Study, *, trials: int | None = None) -> list[int]:
    """Enqueue each Ctrl-C'd trial once more with its parameters; returns their numbers.

    A trial is repeated once (its retry records `abaw_retry_of`); an interrupted retry is
    repeated in turn. Nothing is enqueued when the study already holds `trials` finished ones.
    """
    all_trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in all_trials)
    if trials is not None and finished >= trials:
        return []
    repeated = {t.user_attrs.get(T.TRIAL_RETRY_OF) for t in all_trials}
    out = []
    for t in all_trials:
        reason = str(t.user_attrs.get(T.TRIAL_FAIL_REASON, ""))
        if (
            t.state == TrialState.FAIL
            and reason.startswith(INTERRUPTED)
            and t.number not in repeated
            and t.params
        ):
            attrs: dict[str, Any] = {T.TRIAL_RETRY_OF: t.number}
            if t.user_attrs.get(T.TRIAL_FIXED_CONFIG):
                attrs[T.TRIAL_FIXED_CONFIG] = True
            study.enqueue_trial(dict(t.params), user_attrs=attrs)
            out.append(t.number)
    return out


def first_trials(
    study: optuna.Study,
    space: dict[str, ParamSpec],
    configs: dict[str, Any],
    *,
    default_first: bool,
    retry: bool,
    trials: int | None,
) -> list[str]:
    """Enqueue what runs before the sampler chooses; one line per decision for the user."""
    from abaw.tune.view import fmt_value

    lines = []
    if retry:
        again = retry_interrupted(study, trials=trials)
        if again:
            lines.append(
                f"retrying interrupted trial(s) {', '.join(map(str, again))} with the same "
                "parameters (--no-retry-interrupted: leave them failed)"
            )
    if default_first:
        first = enqueue_fixed_first(study, space, configs)
        if first:
            params, left = first
            shown = " ".join(f"{k.split('.')[-1]}={fmt_value(v)}" for k, v in params.items())
            lines.append(
                f"first trial: the sweep's [fixed] values ({shown})"
                + (f"; sampled: {', '.join(left)}" if left else "")
                + " (--no-default-first: let the sampler choose)"
            )
    return lines
