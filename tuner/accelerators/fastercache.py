"""FasterCache: below a timestep, compute the blocks' attention only every `block_skip_range`-th
step and approximate the others from the last two (a weighted extrapolation); with classifier-
free guidance batched, also reuse the unconditional branch's frequency components (Lv et al.
2024, "FasterCache: Training-Free Video Diffusion Model Acceleration with High Quality",
arXiv:2410.19355). A fixed schedule: its timing on random weights is real.

FluxPipeline batches no guidance: FLUX.1-dev's is distilled into the model (`guidance_embeds`),
and true CFG calls the transformer once per branch, each with a state of its own
(`cache.BranchStates`). So only the attention reuse applies, per branch: diffusers'
`is_guidance_distilled`, whatever the model's guidance.

Ranges, with their reasons: diffusers' defaults are a block skip range of 2 and attention reuse
below timestep 681; on an H200 they gave a random FLUX.1-dev only 1.07x, so the search goes
further: `block_skip_range` 2-4, and `skip_below` 300-900 by 100 (on the 1000-step training
scale: reuse from later, safer, to earlier, faster). The other knobs keep diffusers' defaults.

`canonical`: attention is approximated only at steps below `skip_below`, every step but each
`block_skip_range`-th; so thresholds that hold the same steps of the schedule compute the same
thing (the other frequency ranges are fixed). It needs the pipeline's own timesteps (FLUX
shifts them by the image size): known for FLUX; elsewhere nothing is merged.
"""

from __future__ import annotations

from .base import IntKnob
from .cache import DiffusersCache, current_timestep, others, steps_within


class FasterCache(DiffusersCache):
    name = "fastercache"
    space = {"block_skip_range": IntKnob(2, 4), "skip_below": IntKnob(3, 9)}
    conflicts = others(name)
    on_unet = ("FasterCache fails on a UNet's first forward: UnboundLocalError ... "
               "hidden_states")

    def canonical(self, pipe, params, *, steps, height, width):
        within = steps_within(pipe, -1, 100 * params["skip_below"], steps=steps, height=height,
                              width=width)
        if within is None:
            return params
        return {"block_skip_range": params["block_skip_range"], "steps_within": list(within)}

    def config(self, pipe, params):
        from diffusers import FasterCacheConfig

        below = 100 * params["skip_below"]
        return FasterCacheConfig(
            spatial_attention_block_skip_range=params["block_skip_range"],
            spatial_attention_timestep_skip_range=(-1, below),
            temporal_attention_timestep_skip_range=(-1, below),
            current_timestep_callback=current_timestep(pipe), tensor_format="BCHW",
            is_guidance_distilled=True)  # no guidance batch (above)
