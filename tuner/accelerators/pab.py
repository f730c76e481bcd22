"""Pyramid Attention Broadcast: while the timestep is inside a range, compute the transformer
blocks' attention only every `block_skip_range`-th call (of each guidance branch: a state per
branch, `cache.BranchStates`) and broadcast the last result to the calls between (Zhao et al.
2024, "Real-Time Video Generation with Pyramid Attention Broadcast", arXiv:2408.12588). A fixed
schedule: its timing on random weights is real.

Ranges, with their reasons: diffusers' example uses a spatial skip range of 2 and the timestep
range (100, 800), which keeps the first steps (layout) and the last ones (detail) exact; on an
H200, skip 2 gave a random FLUX.1-dev 1.21x. `block_skip_range` 2-5 goes from that to
reusing four calls in five; the range's ends move by 100 on the 1000-step training scale:
`timestep_low` 0-300 (protect fewer or more of the last steps) and `timestep_high` 600-1000
(broadcast earlier or later in the schedule).

`canonical`: an attention module reuses at a call when its timestep is inside the range and
the call is not a multiple of `block_skip_range`; so ranges that hold the same steps of the
schedule compute the same thing (a range wider than the schedule is one form). It needs the
pipeline's own timesteps (FLUX shifts them by the image size): known for FLUX; elsewhere
nothing is merged.
"""

from __future__ import annotations

from .base import IntKnob
from .cache import DiffusersCache, current_timestep, others, steps_within


class PyramidAttentionBroadcast(DiffusersCache):
    name = "pab"
    space = {"block_skip_range": IntKnob(2, 5), "timestep_low": IntKnob(0, 3),
             "timestep_high": IntKnob(6, 10)}
    conflicts = others(name)
    on_unet = ("PAB works on a UNet only through apply_pyramid_attention_broadcast with a "
               "timestep callback of one's own, which is not offered")

    def canonical(self, pipe, params, *, steps, height, width):
        within = steps_within(pipe, 100 * params["timestep_low"], 100 * params["timestep_high"],
                              steps=steps, height=height, width=width)
        if within is None:
            return params
        return {"block_skip_range": params["block_skip_range"], "steps_within": list(within)}

    def config(self, pipe, params):
        from diffusers import PyramidAttentionBroadcastConfig

        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=params["block_skip_range"],
            spatial_attention_timestep_skip_range=(100 * params["timestep_low"],
                                                   100 * params["timestep_high"]),
            current_timestep_callback=current_timestep(pipe))
