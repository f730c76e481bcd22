"""From the accelerators' declared knobs to Optuna's search space and samplers."""

from __future__ import annotations

import itertools
import json
import random

import optuna

from .. import accelerators
from ..accelerators import ACCELERATORS, ChoiceKnob, DecimalKnob, IntKnob, Knob


def _suggest(trial: optuna.trial.BaseTrial, name: str, knob: Knob):
    if isinstance(knob, IntKnob):
        return trial.suggest_int(name, knob.low, knob.high)
    if isinstance(knob, DecimalKnob | ChoiceKnob):  # exact decimals as choices; see DecimalKnob
        return trial.suggest_categorical(name, knob.values())
    raise TypeError(f"no Optuna distribution for {knob!r}")


def suggest(trial: optuna.trial.BaseTrial, combo: str, *,
            device: str = "cpu") -> dict[str, dict]:
    """Sample one configuration of `combo` on `device`: {accelerator: {knob: value}}."""
    return {name: {key: _suggest(trial, f"{name}.{key}", knob)
                   for key, knob in ACCELERATORS[name].space.items()}
            for name in accelerators.members(combo, device=device)}


def config_key(config) -> str:
    """A stable string for a (canonical) configuration."""
    return json.dumps({k: dict(sorted(v.items())) for k, v in sorted(config.items())})


def canonical_key(pipe, config, *, steps: int, height: int, width: int) -> str:
    return config_key(accelerators.canonical(pipe, config, steps=steps, height=height,
                                             width=width))


def distinct_points(pipe, combo: str, *, steps: int, height: int, width: int) -> int:
    """How many configurations of `combo` run different computations on `pipe` (for `steps`
    steps at `height` x `width`).

    Canonical forms are per accelerator at a given step count, so the count is a product of
    small counts; where a member sets the step count (the solver), a sum over its points of
    the others' product at the steps each runs.
    """
    names = accelerators.members(combo, device=accelerators.device_of(pipe))
    setters = [n for n in names if _sets_steps(n)]
    others = [n for n in names if n not in setters]
    if not setters:
        return _product(pipe, others, steps=steps, height=height, width=width)
    total, at = 0, {}  # the others' count depends on the step count alone
    for points in itertools.product(*(_points(n) for n in setters)):
        runs = accelerators.steps_of(dict(zip(setters, points)), steps=steps)
        if runs not in at:
            at[runs] = _product(pipe, others, steps=runs, height=height, width=width)
        total += at[runs]
    return total


def _points(name: str) -> list[dict]:
    knobs = ACCELERATORS[name].space
    return [dict(zip(knobs, values))
            for values in itertools.product(*(k.values() for k in knobs.values()))]


def _sets_steps(name: str) -> bool:
    return ACCELERATORS[name].sets_steps


def _product(pipe, names, *, steps: int, height: int, width: int) -> int:
    total = 1
    for name in names:
        accelerator = ACCELERATORS[name]()
        total *= len({config_key({name: accelerator.canonical(
            pipe, p, steps=steps, height=height, width=width)}) for p in _points(name)})
    return total


def random_point(combo: str, rng: random.Random, *, device: str = "cpu") -> dict[str, object]:
    """A uniformly drawn point of `combo`'s space on `device`, as Optuna's flat params."""
    return {key: rng.choice(values)
            for key, values in accelerators.grid(combo, device=device).items()}


SAMPLERS = ("tpe", "random", "grid", "gp")


def make_sampler(kind: str, combo: str, *, seed: int,
                 device: str = "cpu") -> optuna.samplers.BaseSampler:
    if kind == "grid":
        return optuna.samplers.GridSampler(accelerators.grid(combo, device=device), seed=seed)
    if kind == "tpe":
        # constant_liar keeps parallel workers from proposing the same point at the same time.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ValueError(f"unknown sampler {kind!r}; choose from {', '.join(SAMPLERS)}")


__all__ = ["SAMPLERS", "canonical_key", "config_key", "distinct_points", "make_sampler",
           "random_point", "suggest"]
