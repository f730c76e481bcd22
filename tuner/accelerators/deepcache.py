"""DeepCache: reuse the UNet's deep features between full steps, recompute only a shallow branch.

`cache_interval` N runs a full UNet every N-th step; `cache_branch_id` b picks the skip branch
that stays live (block b // 3, layer b % 3 of the down path).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from .base import Accelerator, Generate, IntKnob, Params, Unsupported, restoring


def scheduler_timesteps(pipe, steps: int) -> list[float]:
    scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    return [float(t) for t in scheduler.timesteps]


class DeepCache(Accelerator):
    name = "deepcache"
    space = {"cache_interval": IntKnob(2, 5), "cache_branch_id": IntKnob(0, 3)}

    def check(self, pipe, params, *, steps, absorbed):
        # The helper finds the current step with list(timesteps).index(t): a schedule that
        # repeats a timestep (Heun, KDPM2) would make it count steps wrongly.
        timesteps = scheduler_timesteps(pipe, steps)
        if len(set(timesteps)) != len(timesteps):
            raise Unsupported(f"deepcache needs distinct timesteps; "
                              f"{type(pipe.scheduler).__name__} repeats some")
        blocks = len(pipe.unet.down_blocks)
        if params["cache_branch_id"] // 3 >= blocks:
            raise Unsupported(f"deepcache.cache_branch_id={params['cache_branch_id']} needs more "
                              f"than the UNet's {blocks} down blocks")

    @contextlib.contextmanager
    def patch(self, pipe, params: Params, generate: Generate, *,
              absorbed: Mapping[str, Params]):
        from DeepCache import DeepCacheSDHelper

        with restoring(pipe):
            # A fresh helper each time: enabling one helper twice recurses forever.
            helper = DeepCacheSDHelper(pipe=pipe)
            helper.set_params(**params)
            helper.enable()
            try:
                yield generate
            finally:
                helper.disable()
