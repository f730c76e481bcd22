"""The interface every accelerator implements, and the exact-undo guard they share.

An accelerator declares its knobs (`space`) and how it is applied (`patch`): a context manager
that patches an already-loaded pipeline, yields the callable that generates with it, and on exit
leaves the pipeline exactly as it found it. Combining accelerators is stacking their context
managers; the one exception (tgate's DeepCache loaders) is declared through `absorbs`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
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


Knob = IntKnob | DecimalKnob


class Accelerator(ABC):
    name: ClassVar[str]
    space: ClassVar[Mapping[str, Knob]]
    # Accelerators this one applies itself when both are in a combo (their params are passed in).
    absorbs: ClassVar[tuple[str, ...]] = ()
    # Accelerators this one cannot run with: name -> the reason (`Unsupported` before any work).
    conflicts: ClassVar[Mapping[str, str]] = {}
    # Devices where a study's combos gain this accelerator as an on/off knob; () for none.
    optional_on: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, seed: int = 0):
        self.seed = seed  # for accelerators that draw random numbers

    def check(self, pipe, params: Params, *, steps: int, absorbed: Mapping[str, Params]) -> None:
        """Raise `NoEffect` or `Unsupported` before any work if the config cannot be evaluated."""

    def canonical(self, pipe, params: Params, *, steps: int, height: int, width: int) -> Params:
        """Params that select the same computation for `steps` steps at `height` x `width`
        pixels map to the same canonical form (and different computations to different ones)."""
        return params

    @abstractmethod
    def patch(self, pipe, params: Params, generate: Generate, *,
              absorbed: Mapping[str, Params]) -> contextlib.AbstractContextManager[Generate]:
        """Apply to `pipe`; yield the callable to generate with; undo exactly on exit."""

    def validate(self, params: Params) -> None:
        unknown = set(params) - set(self.space)
        missing = set(self.space) - set(params)
        if unknown or missing:
            wrong = [f"missing {', '.join(sorted(missing))}"] if missing else []
            wrong += [f"unknown {', '.join(sorted(unknown))}"] if unknown else []
            raise AcceleratorError(f"{self.name} takes {sorted(self.space)}; got "
                                   f"{sorted(params)} ({'; '.join(wrong)})")
        for key, knob in self.space.items():
            value = params[key]
            wrong_type = isinstance(value, bool) or (isinstance(knob, IntKnob)
                                                     and not isinstance(value, int))
            if wrong_type or value not in knob.values():
                raise AcceleratorError(f"{self.name}.{key}={value!r} is outside {knob.values()}")


# ---------------------------------------------------------------------------------------------
# Exact undo. The three libraries patch by setting instance attributes (`forward`, `cache`),
# swapping `__class__` or registering hooks, and not all of them take everything back. Instead of
# trusting each library's own undo, we record the state they touch and put it back.

PATCHED_ATTRIBUTES = ("forward", "cache", "_tome_info")
PIPE_ATTRIBUTES = ("tgate", "deepcache")
_MISSING = object()


@dataclass
class _ModuleState:
    cls: type
    attrs: dict[str, Any]
    hooks: tuple[tuple[int, ...], tuple[int, ...]]


def _module_state(module: torch.nn.Module) -> _ModuleState:
    return _ModuleState(
        cls=module.__class__,
        attrs={a: module.__dict__.get(a, _MISSING) for a in PATCHED_ATTRIBUTES},
        hooks=(tuple(module._forward_pre_hooks), tuple(module._forward_hooks)),
    )


@contextlib.contextmanager
def restoring(pipe) -> Iterator[None]:
    """Record the UNet modules' patchable state and the pipe's attributes; restore them on exit."""
    modules = list(pipe.unet.modules())
    before = [_module_state(m) for m in modules]
    pipe_before = {a: pipe.__dict__.get(a, _MISSING) for a in PIPE_ATTRIBUTES}
    try:
        yield
    finally:
        for module, state in zip(modules, before):
            module.__class__ = state.cls
            for attr, value in state.attrs.items():
                if value is _MISSING:
                    module.__dict__.pop(attr, None)
                else:
                    module.__dict__[attr] = value
            for hooks, keep in zip((module._forward_pre_hooks, module._forward_hooks), state.hooks):
                for key in [k for k in hooks if k not in keep]:
                    del hooks[key]
        for attr, value in pipe_before.items():
            if value is _MISSING:
                pipe.__dict__.pop(attr, None)
            else:
                pipe.__dict__[attr] = value


def leftovers(pipe) -> list[str]:
    """What an accelerator may have left on a pipeline: empty for a plain pipeline."""
    found = [f"pipe.{a}" for a in PIPE_ATTRIBUTES if a in pipe.__dict__]
    for name, module in pipe.unet.named_modules():
        where = name or "unet"
        found += [f"{where}.{a}" for a in PATCHED_ATTRIBUTES if a in module.__dict__]
        if type(module).__name__ == "ToMeBlock":
            found.append(f"{where}: ToMeBlock class")
        if module._forward_pre_hooks or module._forward_hooks:
            found.append(f"{where}: forward hooks")
    return found


def unet_levels(unet) -> Iterator[tuple[int, torch.nn.Module]]:
    """(downsampling factor, block) for every down, mid and up block of a UNet2DConditionModel."""
    factor = 1
    for block in unet.down_blocks:
        yield factor, block
        if getattr(block, "downsamplers", None):
            factor *= 2
    if unet.mid_block is not None:
        yield factor, unet.mid_block
    for block in unet.up_blocks:
        yield factor, block
        if getattr(block, "upsamplers", None):
            factor //= 2
