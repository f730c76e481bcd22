"""Stable Diffusion 3 and 3.5 (stabilityai/stable-diffusion-3.5-medium, -large): an MMDiT
conditioned on two CLIP encoders and T5, with classifier-free guidance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Family


class StableDiffusion3(Family):
    name = "sd3"
    title = "SD3/3.5"
    pipeline_class = "StableDiffusion3Pipeline"
    denoiser_name = "transformer"
    denoiser_title = "transformer"
    denoiser_class = "SD3Transformer2DModel"
    has = ("transformer", "text_encoder_3")
    lacks = ("unet",)
    # The diffusers caches do not serve SD3Transformer2DModel (no `enable_cache`) and T-GATE
    # has no SD3 loader: nothing to search yet.
    size_multiple = 16
    size_reason = "the VAE's 8 x the transformer's 2x2 patches"
    schedulers = ("FlowMatchEuler",)  # rectified flow
    combos = ()
    # What `encode_prompt` returns, in order, as the call's keyword arguments.
    embeddings = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                  "negative_pooled_prompt_embeds")

    def encode(self, pipe, prompts: Sequence[str], *, guidance: bool) -> dict[str, Any]:
        encoded = pipe.encode_prompt(list(prompts), prompt_2=None, prompt_3=None,
                                     device=pipe.device, num_images_per_prompt=1,
                                     do_classifier_free_guidance=guidance)
        return {n: e for n, e in zip(self.embeddings, encoded) if e is not None}

    def native_size_of(self, source: str) -> tuple[int, int]:
        from diffusers import AutoencoderKL, SD3Transformer2DModel

        sample = SD3Transformer2DModel.load_config(source, subfolder="transformer")["sample_size"]
        blocks = len(AutoencoderKL.load_config(source, subfolder="vae")["block_out_channels"])
        side = sample * 2 ** (blocks - 1)
        return side, side

    def holds_checkpoint(self, kind: str) -> bool:
        """diffusers' SD3 model types: "sd3", "sd35_medium", "sd35_large"."""
        return kind.startswith(("sd3", "sd35"))

    def checkpoint_size(self, kind: str) -> tuple[int, int]:
        return 1024, 1024


SD3 = StableDiffusion3()

__all__ = ["SD3", "StableDiffusion3"]
