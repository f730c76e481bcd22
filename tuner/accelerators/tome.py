"""ToMe (tomesd): merge redundant tokens before self-attention, unmerge after.

`ratio` is the share of tokens merged; `max_downsample` limits merging to the transformer blocks
whose feature map is downsampled at most that much (tomesd's levels are 1, 2, 4, 8).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from .base import Accelerator, DecimalKnob, Footprint, Generate, IntKnob, NoEffect, Params

if TYPE_CHECKING:
    import torch


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


def merged_levels(unet, max_downsample: int) -> tuple[int, ...]:
    """The downsampling levels whose transformer blocks tomesd patches for this max_downsample."""
    return tuple(sorted({
        level for level, block in unet_levels(unet)
        if level <= max_downsample and getattr(block, "attentions", None)
    }))


def merged_tokens(pipe, params: Params, *, height: int, width: int) -> tuple[tuple[int, int], ...]:
    """(level, tokens merged) for every level where tomesd merges anything at this image size.

    Replays tomesd's own arithmetic (`compute_merge`, `bipartite_soft_matching_random2d`): a block
    with N tokens counts as downsampled ceil(sqrt(latent tokens // N)) times, which at sizes that
    do not halve evenly is not the power of two it sits at; it merges int(N * ratio) tokens, but at
    most the tokens outside its destination set (one in every 2x2 cell), so high ratios merge the
    same number. A block that merges nothing draws no random numbers, so it is as if unpatched.
    """
    scale = pipe.vae_scale_factor
    latent_h, latent_w = math.ceil(height / scale), math.ceil(width / scale)
    found = []
    for level in sorted({level for level, block in unet_levels(pipe.unet)
                         if getattr(block, "attentions", None)}):
        h, w = latent_h, latent_w
        for _ in range(int(math.log2(level))):  # a stride-2 convolution with padding 1
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        tokens = h * w
        downsample = int(math.ceil(math.sqrt(latent_h * latent_w // tokens)))
        if downsample > params["max_downsample"]:
            continue
        grid_h, grid_w = math.ceil(latent_h / downsample), math.ceil(latent_w / downsample)
        sources = tokens - (grid_h // 2) * (grid_w // 2)
        merged = min(sources, int(tokens * params["ratio"]))
        if merged > 0:
            found.append((level, merged))
    return tuple(found)


class ToMe(Accelerator):
    name = "tome"
    space = {"ratio": DecimalKnob("0.1", "0.9", "0.1"), "max_downsample": IntKnob(1, 4)}
    # tomesd keeps its settings on the UNet, swaps the transformer blocks' class for its
    # `ToMeBlock` and registers a forward pre-hook on the UNet (hooks are always recorded).
    footprint = Footprint(modules={"unet": ("_tome_info",)}, classes=("ToMeBlock",))

    def check(self, pipe, params, *, steps, absorbed):
        if not merged_levels(pipe.unet, params["max_downsample"]):
            raise NoEffect(f"tome.max_downsample={params['max_downsample']} reaches no attention "
                           f"layer of this UNet (it merges nothing)")

    def canonical(self, pipe, params, *, steps, height, width):
        return {"merged": [list(pair) for pair in merged_tokens(pipe, params, height=height,
                                                                width=width)]}

    @contextlib.contextmanager
    def attach(self, pipe, params: Params, generate: Generate, *,
               absorbed: Mapping[str, Params]):
        import tomesd
        import torch

        tomesd.apply_patch(pipe, ratio=params["ratio"], max_downsample=params["max_downsample"])
        info = pipe.unet._tome_info
        device = pipe.unet.device

        def seeded(*args, **kwargs):
            # tomesd forks its generator from the global RNG on first use; a seeded one per call
            # makes every generation reproducible whatever ran before.
            info["args"]["generator"] = torch.Generator(device=device).manual_seed(self.seed)
            return generate(*args, **kwargs)

        try:
            yield seeded
        finally:
            tomesd.remove_patch(pipe)
