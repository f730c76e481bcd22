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
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Mapping
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


@contextlib.contextmanager
def enabled(transformer, config):
    """`transformer.enable_cache(config)` for the block; `disable_cache()` after, and the block
    hook registries it made removed."""
    had = {id(m) for m in transformer.modules() if "_diffusers_hook" in m.__dict__}
    transformer.enable_cache(config)
    try:
        yield
    finally:
        transformer.disable_cache()
        for module in transformer.modules():
            if id(module) not in had:
                module.__dict__.pop("_diffusers_hook", None)
