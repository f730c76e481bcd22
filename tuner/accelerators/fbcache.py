"""FirstBlockCache: run the first transformer block; when its output residual changed by less
than `threshold` (relative L1) since the last full step, reuse the other blocks' cached residual.

Adaptive: whether a step is reused depends on the model's own residuals, so its speed on random
weights means nothing (at the default 0.05 a random FLUX reused nothing: 0.99x on an H200).

Range: diffusers' default is 0.05; ParaAttention, where the method comes from, uses 0.08 for
FLUX (about 2x on FLUX.1-dev, 28 steps, 1024², per diffusers' ParaAttention guide). 0.02-0.30 by
0.02 spans from stricter than the default to almost four times ParaAttention's; far beyond,
reuse approaches the forced-reuse ceiling (threshold 10 on the random FLUX: 14.8x), which no
quality budget keeps. No two thresholds are known to
compute the same thing (the decision depends on the residuals), so `canonical` merges none.
"""

from __future__ import annotations

from .base import DecimalKnob
from .cache import DiffusersCache, others


class FirstBlockCache(DiffusersCache):
    name = "fbcache"
    space = {"threshold": DecimalKnob("0.02", "0.30", "0.02")}
    skips_by_data = True  # a step is skipped where this batch's first block changed little
    conflicts = others(name)
    on_unet = "FirstBlockCache fails at apply on a UNet: IndexError: pop from empty list"

    def config(self, pipe, params):
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=params["threshold"])
