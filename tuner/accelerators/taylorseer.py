"""TaylorSeer: compute the transformer fully every `cache_interval` steps and predict the
features in between with a Taylor expansion of order `max_order` over the last full steps
(Liu et al. 2025, "From Reusing to Forecasting", arXiv:2503.06923). `use_lite_mode` (1) caches
only the output projection and skips the blocks outright during predicted steps.

diffusers' schedule (hooks/taylorseer_cache.py): step s (from 0) is computed when
s < `disable_cache_before_step`, or (s - before - 1) % interval == 0; the others are predicted.

Ranges, with their reasons:
* `cache_interval` 2-8: diffusers' default is 5; TaylorSeer's FLUX implementations take
  intervals of 2-6 (the authors report 4.99x fewer operations on FLUX.1-dev, "lossless", at
  their most aggressive point); 8 goes past them. On an H200 (random FLUX.1-dev, 1024², 28
  steps) interval 5 gave 1.52x, interval 3 1.41x, and lite mode at interval 3 2.51x: the speed
  is in lite mode more than in the interval.
* `disable_cache_before_step` 1-5: default 3 (full steps to start the expansion from); 1 lets
  prediction start as early as a first-order factor allows.
* `max_order` 1-3: default 1; the FLUX implementations take orders 1-3 (each order keeps one
  more tensor per hooked module).
* `use_lite_mode` 0-1: the probe's 2.51x.
`disable_cache_after_step` stays None (the default): predictions run to the last step.

`canonical`: settings with the same computed steps within `steps` run the same computation:
the interval is clamped where the next full step would fall beyond the schedule.
"""

from __future__ import annotations

from .base import IntKnob
from .cache import DiffusersCache, others


def computed_steps(params, *, steps: int) -> tuple[int, ...]:
    """The steps (from 0) TaylorSeer computes fully; the others are predicted."""
    before, interval = params["disable_cache_before_step"], params["cache_interval"]
    return tuple(s for s in range(steps)
                 if s < before or (s - before - 1) % interval == 0)


class TaylorSeer(DiffusersCache):
    name = "taylorseer"
    space = {"cache_interval": IntKnob(2, 8), "disable_cache_before_step": IntKnob(1, 5),
             "max_order": IntKnob(1, 3), "use_lite_mode": IntKnob(0, 1)}
    conflicts = others(name)
    on_unet = "TaylorSeer attaches nothing to a UNet's blocks"

    def skips(self, params, *, steps):
        return len(computed_steps(params, steps=steps)) < steps

    def canonical(self, pipe, params, *, steps, height, width):
        # Past `before`, full steps fall at before + 1 + k * interval: an interval that puts the
        # second one at or beyond the last step computes what any larger interval computes.
        last = max(steps - params["disable_cache_before_step"] - 1, 1)
        return {**params, "cache_interval": min(params["cache_interval"], last),
                "disable_cache_before_step": min(params["disable_cache_before_step"], steps)}

    def config(self, pipe, params):
        from diffusers import TaylorSeerCacheConfig

        return TaylorSeerCacheConfig(
            cache_interval=params["cache_interval"],
            disable_cache_before_step=params["disable_cache_before_step"],
            max_order=params["max_order"], use_lite_mode=bool(params["use_lite_mode"]))
