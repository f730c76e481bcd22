"""diffusers' own caches on a diffusion transformer: what FirstBlockCache, TaylorSeer, MagCache,
FasterCache and Pyramid Attention Broadcast share.

Each is turned on with `transformer.enable_cache(config)` (diffusers' `CacheMixin`), which
registers `ModelHook`s on the transformer's blocks, and off with `disable_cache()`. The hooks
replace `forward` on the modules they wrap (the undo sets the original back as an instance
attribute) and set `_cache_config` on the transformer: both are declared, so `restoring` takes
them away. The hook registries diffusers leaves on the blocks (`_diffusers_hook`, empty after
the undo) are removed by `attach` itself; the transformer's own registry is left, since a plain
generation makes it too (the pipelines' `cache_context`).

diffusers enables one cache at a time on a transformer, so the caches conflict with each other.
None of them serves a UNet (diffusers 0.42.1, tiny random UNet): each subclass says what happens.

Under true classifier-free guidance a pipeline calls the transformer twice a step, in the cache
contexts "cond" and "uncond". FirstBlockCache, TaylorSeer and MagCache keep a state per context
(diffusers' `StateManager`); PAB and FasterCache keep one `state` for every call, so their call
counter would count branches, not steps, and a skipped call would reuse the other branch's
attention. `enabled` gives those hooks a state per context too (`BranchStates`).
"""

from __future__ import annotations

import contextlib
import functools
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from .base import Accelerator, Footprint, Generate, NoEffect, Params, Unsupported

CACHES = ("fbcache", "taylorseer", "magcache", "fastercache", "pab")

ONE_CACHE = "diffusers enables one cache per transformer"


def others(name: str) -> dict[str, str]:
    """The conflicts of cache `name`: every other cache, with the reason."""
    return {other: ONE_CACHE for other in CACHES if other != name}


def flux_timesteps(pipe, *, steps: int, height: int, width: int) -> list[float] | None:
    """The timesteps a `FluxPipeline` runs for `steps` steps at `height` x `width` (what
    `pipe.current_timestep` returns at each step), computed as its `__call__` does (diffusers
    0.42.1, pipeline_flux.py, "Prepare timesteps") on a copy of its scheduler; None for other
    pipelines, whose schedule is not reproduced here."""
    if type(pipe).__name__ != "FluxPipeline":
        return None
    import numpy as np
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

    scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    config = scheduler.config
    sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
    side = pipe.vae_scale_factor * 2
    mu = calculate_shift((height // side) * (width // side),
                         config.get("base_image_seq_len", 256),
                         config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))
    timesteps, _ = retrieve_timesteps(scheduler, steps, "cpu", sigmas=sigmas, mu=mu)
    return [float(t) for t in timesteps]


def steps_within(pipe, low: float, high: float, *, steps: int, height: int,
                 width: int) -> tuple[int, ...] | None:
    """The steps whose timestep t has low < t < high, as PAB and FasterCache test it; None
    where the pipeline's schedule is not known."""
    timesteps = flux_timesteps(pipe, steps=steps, height=height, width=width)
    return None if timesteps is None else tuple(
        i for i, t in enumerate(timesteps) if low < t < high)


def current_timestep(pipe):
    """The timestep callback PAB and FasterCache need: the pipeline's step being run."""
    return lambda: pipe.current_timestep


class DiffusersCache(Accelerator):
    denoisers = ("transformer",)
    footprint = Footprint(modules={"transformer": ("forward", "_cache_config")})
    # What this cache does on a UNet (why it is refused there).
    on_unet: ClassVar[str]

    def check(self, pipe, params, *, steps, absorbed):
        transformer = getattr(pipe, "transformer", None)
        if transformer is not None and not hasattr(transformer, "enable_cache"):
            import diffusers

            raise Unsupported(f"{self.name} needs a diffusion transformer with diffusers' caches; "
                              f"{type(pipe).__name__}'s transformer, "
                              f"{type(transformer).__name__}, lacks CacheMixin (enable_cache) "
                              f"in diffusers {diffusers.__version__}")
        if transformer is None:
            has = "a UNet" if getattr(pipe, "unet", None) is not None else "no transformer"
            raise Unsupported(f"{self.name} needs a diffusion transformer with diffusers' caches; "
                              f"{type(pipe).__name__} has {has} ({self.on_unet})")
        if transformer.is_cache_enabled:
            raise Unsupported(f"{self.name}: the transformer already has a cache enabled "
                              f"({type(transformer._cache_config).__name__}); {ONE_CACHE}")
        if not self.skips(params, steps=steps):
            raise NoEffect(f"{self.name} {dict(params)} reuses nothing in {steps} steps")

    def skips(self, params: Params, *, steps: int) -> bool:
        """False where the setting provably recomputes every step (a fixed schedule that never
        reuses); True where it may reuse."""
        return True

    @abstractmethod
    def config(self, pipe, params: Params) -> Any:
        """The diffusers config object for `params` on `pipe`."""

    @contextlib.contextmanager
    def attach(self, pipe, params: Params, generate: Generate, *,
               absorbed: Mapping[str, Params]):
        with enabled(pipe.transformer, self.config(pipe, params)):
            yield generate


@functools.cache
def branch_states():
    """`BranchStates`, made when first asked (it subclasses diffusers' `StateManager`)."""
    from diffusers.hooks.hooks import StateManager

    class BranchStates(StateManager):
        """A hook's one `state` kept per cache context, as diffusers' `StateManager` keeps the
        states of FirstBlockCache's hooks: the hook reads and writes `self.state.<name>` as
        before, and each lands on the state of the context being run ("cond", "uncond"), or on
        one of its own outside any context. A `StateManager`, so the pipeline's
        `cache_context` sets its context, and `reset` drops every context's state."""

        def __init__(self, state):
            super().__init__(type(state))
            self._state_cache[None] = state

        def get_state(self):
            name = None if self._context is None else self._context.name
            if name not in self._state_cache:
                self._state_cache[name] = self._state_cls()
            return self._state_cache[name]

        def __getattr__(self, name):  # only for what the manager itself lacks
            if name.startswith("_"):
                raise AttributeError(name)
            return getattr(self.get_state(), name)

        def __setattr__(self, name, value):
            if name.startswith("_"):
                super().__setattr__(name, value)
            else:
                setattr(self.get_state(), name, value)

    return BranchStates


def cache_hooks(transformer, name: str | None = None) -> Iterator[Any]:
    """The hooks diffusers has registered on `transformer` and its modules; only those
    registered as `name`, where given."""
    for module in transformer.modules():
        registry = module.__dict__.get("_diffusers_hook")
        if registry is None:
            continue
        if name is None:
            yield from registry.hooks.values()
        elif (hook := registry.get_hook(name)) is not None:
            yield hook


def states_per_branch(transformer) -> None:
    """Give every cache hook under `transformer` that keeps one `state` for all calls a state
    per cache context (`BranchStates`)."""
    states = branch_states()
    for hook in cache_hooks(transformer):
        state = hook.__dict__.get("state")
        if hook._is_stateful and state is not None and not isinstance(state, states):
            hook.state = states(state)


@contextlib.contextmanager
def enabled(transformer, config):
    """`transformer.enable_cache(config)` for the block, each hook with a state per cache
    context (`states_per_branch`); `disable_cache()` after, and the block hook registries it made
    removed."""
    had = {id(m) for m in transformer.modules() if "_diffusers_hook" in m.__dict__}
    transformer.enable_cache(config)
    try:
        states_per_branch(transformer)
        yield
    finally:
        transformer.disable_cache()
        for module in transformer.modules():
            if id(module) not in had:
                module.__dict__.pop("_diffusers_hook", None)
