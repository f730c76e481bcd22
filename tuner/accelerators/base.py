"""The interface every accelerator implements, and the exact-undo guard they share.

An accelerator declares its knobs (`space`) and how it is applied (`patch`): a context manager
that patches an already-loaded pipeline, yields the callable that generates with it, and on exit
leaves the pipeline exactly as it found it. An accelerator implements `attach` (the library's own
application) and declares what it sets on the pipeline (`footprint`); `patch` records that state
before and puts it back after, so the undo is exact even where a library's own is not. Combining
accelerators is stacking their context managers; an accelerator that applies another one itself
declares it through `absorbs`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # importing the registry (the CLI, the report) must not import torch
    import torch

Params = Mapping[str, Any]
Generate = Callable[..., Any]


class AcceleratorError(Exception):
    """A configuration that cannot be evaluated, with a one-line reason."""


class NoEffect(AcceleratorError):
    """The configuration would leave the pipeline's computation unchanged."""


class Unsupported(AcceleratorError):
    """The accelerator cannot run on this pipeline or scheduler."""


@dataclass(frozen=True)
class IntKnob:
    low: int
    high: int

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1))


@dataclass(frozen=True)
class DecimalKnob:
    """Evenly spaced decimals (0.1, 0.2, ...), offered as exact choices.

    A float range with a step would hand out values such as 0.30000000000000004, which then get
    stored in the study and printed; a list of exact decimals cannot drift.
    """

    low: str
    high: str
    step: str

    def values(self) -> list[float]:
        low, high, step = Decimal(self.low), Decimal(self.high), Decimal(self.step)
        count = int((high - low) / step) + 1
        return [float(low + i * step) for i in range(count)]


@dataclass(frozen=True)
class ChoiceKnob:
    """One of a few named choices (Optuna's categorical distribution), in the order given."""

    choices: tuple[str, ...]

    def values(self) -> list[str]:
        return list(self.choices)


Knob = IntKnob | DecimalKnob | ChoiceKnob


class Accelerator(ABC):
    name: ClassVar[str]
    space: ClassVar[Mapping[str, Knob]]
    # Everything `attach` may set on a pipeline (below): restored exactly after each application.
    footprint: ClassVar[Footprint]
    # Accelerators this one applies itself when both are in a combo (their params are passed in).
    absorbs: ClassVar[tuple[str, ...]] = ()
    # Accelerators this one cannot run with: name -> the reason (`Unsupported` before any work).
    conflicts: ClassVar[Mapping[str, str]] = {}
    # The denoisers the accelerator can patch: "unet", "transformer".
    denoisers: ClassVar[tuple[str, ...]] = ("unet",)
    # Whether `denoising_steps` may differ from the steps asked for (the step count is a knob):
    # the registry's `apply` then calls the outermost callable with `denoising_steps`' count.
    sets_steps: ClassVar[bool] = False
    # Whether which denoising steps it skips depends on the data (a cache that decides from each
    # batch's residuals): the same step of two runs is then not the same computation, so
    # its runs are timed whole, without step times (timing.step_envelope compares step p of one
    # run with step p of its neighbours, which take other batches).
    skips_by_data: ClassVar[bool] = False
    # Devices where a study's combos gain this accelerator as an on/off knob; () for none.
    optional_on: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, seed: int = 0):
        self.seed = seed  # for accelerators that draw random numbers

    @staticmethod
    def preparation_seconds() -> float:
        """Seconds this accelerator spent in this process preparing outside any timed work
        (capturing, compiling, calibrating): the evaluator takes them out of the run they fell
        in. 0 for accelerators that prepare nothing."""
        return 0.0

    def denoising_steps(self, params: Params, *, steps: int) -> int:
        """The denoising steps a generation asked for `steps` runs under this accelerator:
        `steps` itself unless the accelerator sets the step count. The registry passes the
        result to the other accelerators' `check` and `canonical`."""
        return steps

    def check(self, pipe, params: Params, *, steps: int, absorbed: Mapping[str, Params]) -> None:
        """Raise `NoEffect` or `Unsupported` before any work if the config cannot be evaluated."""

    def canonical(self, pipe, params: Params, *, steps: int, height: int, width: int) -> Params:
        """Params that select the same computation for `steps` steps at `height` x `width`
        pixels map to the same canonical form (and different computations to different ones)."""
        return params

    @contextlib.contextmanager
    def patch(self, pipe, params: Params, generate: Generate, *,
              absorbed: Mapping[str, Params]) -> Iterator[Generate]:
        """Apply to `pipe`; yield the callable to generate with; undo exactly on exit (what the
        footprint declares is put back as it was, however the block ends)."""
        with restoring(pipe, self.footprint), self.attach(pipe, params, generate,
                                                          absorbed=absorbed) as run:
            yield run

    @abstractmethod
    def attach(self, pipe, params: Params, generate: Generate, *,
               absorbed: Mapping[str, Params]) -> contextlib.AbstractContextManager[Generate]:
        """The library's own application: patch `pipe` (setting nothing the footprint does not
        declare, the accelerators in `absorbed` included), yield the callable to generate with,
        and on exit release what the library holds; `patch` restores the footprint after it."""

    def accepted(self) -> dict:
        """The knobs whose values a configuration may hold (`validate`): those of `space`."""
        return self.space

    def validate(self, params: Params) -> None:
        accepted = self.accepted()
        unknown = set(params) - set(accepted)
        missing = set(accepted) - set(params)
        if unknown or missing:
            wrong = [f"missing {', '.join(sorted(missing))}"] if missing else []
            wrong += [f"unknown {', '.join(sorted(unknown))}"] if unknown else []
            raise AcceleratorError(f"{self.name} takes {sorted(accepted)}; got "
                                   f"{sorted(params)} ({'; '.join(wrong)})")
        for key, knob in accepted.items():
            value = params[key]
            wrong_type = isinstance(value, bool) or (isinstance(knob, IntKnob)
                                                     and not isinstance(value, int))
            if wrong_type or value not in knob.values():
                shown = f"{knob.low}-{knob.high}" if isinstance(knob, IntKnob) else knob.values()
                raise AcceleratorError(f"{self.name}.{key}={value!r} is outside {shown}")


# ---------------------------------------------------------------------------------------------
# Exact undo. Libraries patch a pipeline by setting instance attributes (a module's `forward`, a
# cache tensor, a method on the pipeline), swapping a module's `__class__` or registering forward
# hooks, and not all of them take everything back. Each accelerator therefore declares what it
# sets (its `Footprint`), and instead of trusting the library's own undo, `restoring` records that
# state before the patch and puts it back after. The idea is Hugging Face's model hooks
# (`hooks/hooks.py` of its diffusion library: a `ModelHook` owns its state and its
# `reset_state`, the `HookRegistry` knows only the hooks' interface): here the accelerator owns
# the declaration, and this module knows only its shape, never a library or what it sets.

_MISSING = object()


@dataclass(frozen=True)
class Footprint:
    """What an accelerator's patch may set on a pipeline, by name.

    `pipe`: attributes of the pipeline object itself. `components`: attributes of its other
    components, by component (`{"scheduler": ("step",)}`). `modules`: instance attributes that
    may be set on any module of a component's module tree (`{"unet": ("forward",)}`); the
    classes and the forward hooks of those modules are recorded too, whatever is declared.
    `classes`: the names of classes the patch gives those modules, so that `traces` can tell a
    patched module from a plain one.

    Contract: everything the patch changes is declared here; `restoring` then puts the pipeline
    back exactly, however the patch ends, and `traces` of a plain pipeline is empty.
    """

    pipe: tuple[str, ...] = ()
    components: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    modules: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()

    def __or__(self, other: Footprint) -> Footprint:
        def merged(a: Mapping[str, tuple[str, ...]], b: Mapping[str, tuple[str, ...]]):
            return {key: _union(a.get(key, ()), b.get(key, ())) for key in {**a, **b}}

        return Footprint(pipe=_union(self.pipe, other.pipe),
                         components=merged(self.components, other.components),
                         modules=merged(self.modules, other.modules),
                         classes=_union(self.classes, other.classes))


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return a + tuple(x for x in b if x not in a)


@dataclass
class _Attributes:
    """Instance attributes of one object, as they were (`_MISSING` where absent)."""

    owner: Any
    values: dict[str, Any]

    @classmethod
    def of(cls, owner: Any, names: tuple[str, ...]) -> _Attributes:
        return cls(owner, {a: owner.__dict__.get(a, _MISSING) for a in names})

    def put_back(self) -> None:
        for attr, value in self.values.items():
            if value is _MISSING:
                self.owner.__dict__.pop(attr, None)
            else:
                self.owner.__dict__[attr] = value


@dataclass
class _ModuleState:
    attributes: _Attributes
    cls: type
    hooks: tuple[tuple[int, ...], tuple[int, ...]]

    @classmethod
    def of(cls, module: torch.nn.Module, names: tuple[str, ...]) -> _ModuleState:
        return cls(_Attributes.of(module, names), module.__class__,
                   (tuple(module._forward_pre_hooks), tuple(module._forward_hooks)))

    def put_back(self) -> None:
        module = self.attributes.owner
        module.__class__ = self.cls
        self.attributes.put_back()
        for hooks, keep in zip((module._forward_pre_hooks, module._forward_hooks), self.hooks):
            for key in [k for k in hooks if k not in keep]:
                del hooks[key]


def _components(pipe, declared: Mapping[str, tuple[str, ...]]
                ) -> Iterator[tuple[str, Any, tuple[str, ...]]]:
    """(name, component, attribute names) for the declared components that `pipe` has: a
    footprint may name a component other pipelines have and this one lacks."""
    for name, names in declared.items():
        component = getattr(pipe, name, None)
        if component is not None:
            yield name, component, names


@contextlib.contextmanager
def restoring(pipe, footprint: Footprint) -> Iterator[None]:
    """Record the state of `pipe` that `footprint` declares; put it back on exit, however the
    block ends. The objects are resolved on entry: what is restored is what was there."""
    saved: list[_Attributes | _ModuleState] = [_Attributes.of(pipe, footprint.pipe)]
    saved += [_Attributes.of(component, names)
              for _, component, names in _components(pipe, footprint.components)]
    saved += [_ModuleState.of(module, names)
              for _, tree, names in _components(pipe, footprint.modules)
              for module in tree.modules()]
    try:
        yield
    finally:
        for state in saved:
            state.put_back()


def traces(pipe, footprint: Footprint) -> list[str]:
    """What a patch with `footprint` would have left on `pipe`: empty for a plain pipeline."""
    found = [f"pipe.{a}" for a in footprint.pipe if a in pipe.__dict__]
    for where, component, names in _components(pipe, footprint.components):
        found += [f"{where}.{a}" for a in names if a in component.__dict__]
    for root, tree, names in _components(pipe, footprint.modules):
        for name, module in tree.named_modules():
            where = name or root
            found += [f"{where}.{a}" for a in names if a in module.__dict__]
            if type(module).__name__ in footprint.classes:
                found.append(f"{where}: {type(module).__name__} class")
            if module._forward_pre_hooks or module._forward_hooks:
                found.append(f"{where}: forward hooks")
    return found
