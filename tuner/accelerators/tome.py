"""ToMe (tomesd): merge redundant tokens before self-attention, unmerge after.

`ratio` is the share of tokens merged; `max_downsample` limits merging to the transformer blocks
whose feature map is downsampled at most that much (tomesd's levels are 1, 2, 4, 8).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch

from .base import (Accelerator, DecimalKnob, Generate, IntKnob, NoEffect, Params, restoring,
                   unet_levels)


def merged_levels(unet, max_downsample: int) -> tuple[int, ...]:
    """The downsampling levels whose transformer blocks tomesd patches for this max_downsample."""
    return tuple(sorted({
        level for level, block in unet_levels(unet)
        if level <= max_downsample and getattr(block, "attentions", None)
    }))


class ToMe(Accelerator):
    name = "tome"
    space = {"ratio": DecimalKnob("0.1", "0.9", "0.1"), "max_downsample": IntKnob(1, 4)}

    def check(self, pipe, params, *, steps, absorbed):
        if not merged_levels(pipe.unet, params["max_downsample"]):
            raise NoEffect(f"tome.max_downsample={params['max_downsample']} reaches no attention "
                           f"layer of this UNet (it merges nothing)")

    def canonical(self, pipe, params):
        # max_downsample 3 patches the same blocks as 2 (levels are powers of two).
        return {"ratio": params["ratio"],
                "max_downsample": max(merged_levels(pipe.unet, params["max_downsample"]),
                                      default=0)}

    @contextlib.contextmanager
    def patch(self, pipe, params: Params, generate: Generate, *,
              absorbed: Mapping[str, Params]):
        import tomesd

        with restoring(pipe):
            tomesd.apply_patch(pipe, ratio=params["ratio"],
                               max_downsample=params["max_downsample"])
            info = pipe.unet._tome_info
            device = pipe.unet.device

            def seeded(*args, **kwargs):
                # tomesd forks its generator from the global RNG on first use; a seeded one per
                # call makes every generation reproducible whatever ran before.
                info["args"]["generator"] = torch.Generator(device=device).manual_seed(self.seed)
                return generate(*args, **kwargs)

            try:
                yield seeded
            finally:
                tomesd.remove_patch(pipe)
