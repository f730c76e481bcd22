"""The accelerator registry and the combos the tuner searches.

`apply(pipe, config, steps=...)` patches a pipeline with one combo's settings and undoes it::

    with apply(pipe, {"deepcache": {"cache_interval": 3, "cache_branch_id": 0}}, steps=50) as run:
        images = run(prompt=["a cat"], num_inference_steps=50).images

A new accelerator is one module: a subclass of `Accelerator` with its `name`, its knobs
(`space`), its `footprint` (what it sets on a pipeline, which `patch` restores exactly) and its
`attach` (the library's own application), added with `register`, and named in a combo
(`COMBOS`) to be searched; the base needs no edit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from .base import (Accelerator, AcceleratorError, ChoiceKnob, DecimalKnob, Footprint, Generate,
                   IntKnob, Knob, NoEffect, Params, Unsupported, traces)
from .cache import CACHES
from .deepcache import DeepCache
from .fastercache import FasterCache
from .fbcache import FirstBlockCache
from .graphs import Graphs
from .magcache import MagCache
from .pab import PyramidAttentionBroadcast
from . import solver
from .solver import Solver
from .taylorseer import TaylorSeer
from .tgate import TGate
from .tome import ToMe

# name -> class, in application order (`register`).
ACCELERATORS: dict[str, type[Accelerator]] = {}

COMBOS: dict[str, tuple[str, ...]] = {
    "deepcache": ("deepcache",),
    "deepcache+tome": ("deepcache", "tome"),
    "deepcache+tgate": ("deepcache", "tgate"),
    "deepcache+tome+tgate": ("deepcache", "tome", "tgate"),
    "tgate": ("tgate",),  # PixArt-α/Σ: T-GATE on a transformer, where no DeepCache pairs with it
    # diffusers' caches, one per transformer
    **{name: (name,) for name in CACHES},
}

# The scheduler and the step count as knobs (solver.py), searched only when a run asks for them
# (--search-sched, --search-steps): alone (`steps`), and beside every combo above (`X+steps`).
STEPS = "steps"
SOLVER = Solver.name
COMBOS.update({STEPS: (SOLVER,), **{f"{c}+{STEPS}": (*m, SOLVER) for c, m in COMBOS.items()}})

Config = Mapping[str, Params]  # accelerator name -> its params


def register(cls: type[Accelerator]) -> type[Accelerator]:
    """Add an accelerator to the registry, applied after those already there; returns `cls`.

    An accelerator is self-describing: its name, knobs, footprint and `attach` are all it takes.
    """
    if not isinstance(getattr(cls, "footprint", None), Footprint):
        raise TypeError(f"{cls.__name__} declares no footprint (what its patch sets)")
    if getattr(cls, "name", None) in ACCELERATORS:
        raise ValueError(f"an accelerator named {cls.name!r} is already registered")
    ACCELERATORS[cls.name] = cls
    return cls


# Application order: T-GATE first, since it replaces the pipeline call the others wrap; the
# solver next, so that everything after it sees its scheduler; graphs last, since they capture
# the UNet call the others patched. diffusers' caches hook a transformer's blocks, one at a
# time. The step count a configuration runs is set by `apply` on the outermost call, so every
# accelerator sees it, whatever its place here.
for _accelerator in (TGate, Solver, DeepCache, ToMe, Graphs, FirstBlockCache, TaylorSeer,
                     MagCache, FasterCache, PyramidAttentionBroadcast):
    register(_accelerator)


def capture_seconds() -> float:
    """Seconds spent preparing accelerators outside their timing, in this process (capturing
    CUDA graphs, compiling included; calibrating MagCache): each registered one's own count."""
    return sum(cls.preparation_seconds() for cls in ACCELERATORS.values())


def denoisers_of(combo: str) -> tuple[str, ...]:
    """The denoisers ("unet", "transformer") every accelerator of `combo` can patch."""
    names = COMBOS[combo]
    return tuple(d for d in ("unet", "transformer")
                 if all(d in ACCELERATORS[n].denoisers for n in names))


def combos_for(denoiser: str, *, only: bool = False) -> tuple[str, ...]:
    """The combos whose accelerators all patch a `denoiser`; `only`: and no other denoiser
    (T-GATE alone serves both, but on a UNet it is searched with DeepCache)."""
    return tuple(combo for combo in COMBOS if denoiser in denoisers_of(combo)
                 and (not only or denoisers_of(combo) == (denoiser,))
                 and SOLVER not in COMBOS[combo])


def with_steps(combos) -> tuple[str, ...]:
    """The combos a run searches with the scheduler and step count as knobs: `steps` alone,
    then each of `combos` with them (`deepcache` -> `deepcache+steps`)."""
    found = [STEPS] + [c if SOLVER in COMBOS[c] else f"{c}+{STEPS}" for c in combos
                       if c != STEPS]
    return tuple(dict.fromkeys(found))


def without_steps(combo: str) -> str | None:
    """The combo of accelerators `combo` searches besides the scheduler and step count
    (None for `steps`): what a pipeline family's combos list."""
    if combo == STEPS:
        return None
    return combo.removesuffix(f"+{STEPS}")


def space_label(combo: str) -> str:
    """The searched values of `combo`'s knobs that are the run's choice, not the registry's
    (the solver's), in words; "" for the others. Part of a study's identity."""
    return f"{SOLVER}: {solver.space.label}" if SOLVER in COMBOS[combo] else ""


# What `--combo all` runs: the UNet combos, which every pipeline tuner loads today serves.
ALL_COMBOS = combos_for("unet", only=True)


def footprint() -> Footprint:
    """Everything any registered accelerator may set on a pipeline."""
    found = Footprint()
    for cls in ACCELERATORS.values():
        found |= cls.footprint
    return found


def leftovers(pipe) -> list[str]:
    """What an accelerator may have left on a pipeline: empty for a plain pipeline."""
    return traces(pipe, footprint())


def device_of(pipe) -> str:
    """"cuda", "cpu", ...: the device type of a pipeline (without importing torch)."""
    return str(getattr(pipe, "device", "cpu")).split(":")[0]


def members(combo: str, *, device: str = "cpu") -> tuple[str, ...]:
    """The accelerators a study of `combo` searches on `device`: the combo's own, and those that
    are an on/off knob there (`optional_on`) and conflict with none of them."""
    own = COMBOS[combo]
    return own + tuple(name for name, cls in ACCELERATORS.items()
                       if device in cls.optional_on and not set(cls.conflicts) & set(own))


def combo_of(config: Config) -> str:
    names = set(config) - {n for n, cls in ACCELERATORS.items() if cls.optional_on}
    for combo, members in COMBOS.items():
        if set(members) == names:
            return combo
    return "+".join(n for n in ACCELERATORS if n in names)


def instances(config: Config, *, seed: int = 0) -> list[tuple[Accelerator, Params]]:
    """The accelerators of a config with their params, in application order, validated."""
    unknown = sorted(set(config) - set(ACCELERATORS))
    if unknown:
        raise AcceleratorError(f"unknown accelerator {unknown[0]!r}; "
                               f"choose from {', '.join(ACCELERATORS)}")
    found = []
    for name, cls in ACCELERATORS.items():
        if name in config:
            accelerator = cls(seed=seed)
            accelerator.validate(config[name])
            found.append((accelerator, config[name]))
    return found


def _absorbed(accelerator: Accelerator, config: Config) -> dict[str, Params]:
    return {name: config[name] for name in accelerator.absorbs if name in config}


def skips_by_data(config: Config) -> bool:
    """Whether which steps `config` skips depends on the data (`Accelerator.skips_by_data`)."""
    return any(ACCELERATORS[name].skips_by_data for name in config)


def check(pipe, config: Config, *, steps: int, seed: int = 0) -> None:
    """Raise `NoEffect`/`Unsupported`/`AcceleratorError` if `config` cannot be evaluated."""
    _check(pipe, instances(config, seed=seed), config, steps)


def steps_of(config: Config, *, steps: int) -> int:
    """The denoising steps `config` runs when `steps` are asked for (a solver sets its own)."""
    return _steps(instances(config), steps)


def _steps(members, steps: int) -> int:
    for accelerator, params in members:
        steps = accelerator.denoising_steps(params, steps=steps)
    return steps


def _check(pipe, members, config: Config, steps: int) -> None:
    steps = _steps(members, steps)
    for accelerator, _ in members:
        clash = next((n for n in accelerator.conflicts if n in config), None)
        if clash is not None:
            raise Unsupported(f"{accelerator.name} cannot run with {clash}: "
                              f"{accelerator.conflicts[clash]}")
    for accelerator, params in members:
        accelerator.check(pipe, params, steps=steps, absorbed=_absorbed(accelerator, config))


def canonical(pipe, config: Config, *, steps: int, height: int, width: int) -> dict[str, dict]:
    """Configs that run the same computation on `pipe` (for `steps` steps at `height` x `width`)
    get equal canonical forms; each accelerator's is taken at the steps `config` runs."""
    members = instances(config)
    steps = _steps(members, steps)
    return {a.name: dict(a.canonical(pipe, p, steps=steps, height=height, width=width))
            for a, p in members}


@contextlib.contextmanager
def apply(pipe, config: Config, *, steps: int, seed: int = 0) -> Iterator[Generate]:
    """Patch `pipe` with `config`, yield the callable that generates with it, undo on exit."""
    found = leftovers(pipe)
    if found:
        raise AcceleratorError(f"pipeline is already patched ({', '.join(found[:3])})")
    members = instances(config, seed=seed)
    _check(pipe, members, config, steps)
    absorbed_names = {n for a, _ in members for n in a.absorbs if n in config}
    generate: Generate = pipe.__call__
    with contextlib.ExitStack() as stack:
        for accelerator, params in members:
            if accelerator.name in absorbed_names:
                continue
            generate = stack.enter_context(accelerator.patch(
                pipe, params, generate, absorbed=_absorbed(accelerator, config)))
        if any(accelerator.sets_steps for accelerator, _ in members):
            generate = _at_steps(generate, _steps(members, steps))
        yield generate


def _at_steps(generate: Generate, steps: int) -> Generate:
    """`generate`, called with `steps` steps whatever count the caller asks for. The registry
    sets the count a configuration runs (`denoising_steps`) on the outermost call, so that
    every accelerator's wrapper, whatever its place in the order, sees the count that runs
    (MagCache configures itself for it at the call)."""

    def run(*args, **kwargs):
        return generate(*args, **{**kwargs, "num_inference_steps": steps})

    return run


def grid(combo: str, *, device: str = "cpu") -> dict[str, list]:
    """Every knob of a combo on `device` with all its values, keyed `accelerator.knob`."""
    return {f"{name}.{knob}": ACCELERATORS[name].space[knob].values()
            for name in members(combo, device=device) for knob in ACCELERATORS[name].space}


def grid_size(combo: str, *, device: str = "cpu") -> int:
    size = 1
    for values in grid(combo, device=device).values():
        size *= len(values)
    return size


def split_params(flat: Mapping[str, object]) -> dict[str, dict]:
    """{"deepcache.cache_interval": 3, ...} -> {"deepcache": {"cache_interval": 3}, ...}"""
    config: dict[str, dict] = {}
    for key, value in flat.items():
        name, knob = key.split(".", 1)
        config.setdefault(name, {})[knob] = value
    return config


__all__ = ["ACCELERATORS", "ALL_COMBOS", "COMBOS", "SOLVER", "STEPS", "Accelerator",
           "AcceleratorError", "ChoiceKnob", "Config", "DecimalKnob", "Footprint", "IntKnob",
           "Knob", "NoEffect", "Unsupported", "apply", "canonical", "capture_seconds", "check",
           "combo_of", "combos_for", "denoisers_of", "device_of", "footprint", "grid",
           "grid_size", "instances", "leftovers", "members", "register", "solver", "space_label",
           "split_params", "steps_of", "with_steps", "without_steps"]
