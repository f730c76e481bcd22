"""DeepCache: reuse the UNet's deep features between full steps, recompute only a shallow branch.

`cache_interval` N runs a full UNet every N-th step; `cache_branch_id` b picks the skip branch
that stays live (block b // 3, layer b % 3 of the down path).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from .base import Accelerator, Footprint, Generate, IntKnob, Params, Unsupported


def scheduler_timesteps(pipe, steps: int) -> list[float]:
    scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    return [float(t) for t in scheduler.timesteps]


def _find_steps_once(pipe, helper) -> None:
    """Replace the helper's step lookup, `list(scheduler.timesteps).index(t.item())`, by a dict
    built once per generation. On CUDA every comparison of that list was a host sync, O(steps)
    syncs per step; now one per step. Same step numbers, so bit-identical images."""
    forward = helper.function_dict["unet_forward"]
    index: dict[float, int] = {}
    seen: list = [None]

    def wrapped_forward(*args, **kwargs):
        timesteps = pipe.scheduler.timesteps
        if seen[0] is not timesteps:  # a new generation set new timesteps
            index.clear()
            index.update({t: i for i, t in enumerate(timesteps.tolist())})
            seen[0] = timesteps
        helper.cur_timestep = index[float(args[1])]
        return forward(*args, **kwargs)

    pipe.unet.forward = wrapped_forward


class DeepCache(Accelerator):
    name = "deepcache"
    space = {"cache_interval": IntKnob(2, 5), "cache_branch_id": IntKnob(0, 3)}
    # The helper replaces `forward` on the UNet and the blocks it skips; the pipeline keeps the
    # helper, as tgate's DeepCache loaders do.
    footprint = Footprint(pipe=("deepcache",), modules={"unet": ("forward",)})

    def check(self, pipe, params, *, steps, absorbed):
        if getattr(pipe, "unet", None) is None:
            raise Unsupported(f"deepcache needs a UNet; a {type(pipe).__name__} has none")
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

    def canonical(self, pipe, params, *, steps, height, width):
        # A full step runs where (step - start) % interval == 0 and start is the first step
        # since DeepCache was last reset: with interval >= steps only the start itself, whatever
        # the interval (T-GATE's resets at the gate included).
        return {**params, "cache_interval": min(params["cache_interval"], steps)}

    @contextlib.contextmanager
    def attach(self, pipe, params: Params, generate: Generate, *,
               absorbed: Mapping[str, Params]):
        from DeepCache import DeepCacheSDHelper

        # A fresh helper each time: enabling one helper twice recurses forever.
        helper = DeepCacheSDHelper(pipe=pipe)
        helper.set_params(**params)
        helper.enable()
        _find_steps_once(pipe, helper)
        pipe.deepcache = helper  # as tgate's loaders do: graphs replay its step kinds
        try:
            yield generate
        finally:
            helper.disable()
