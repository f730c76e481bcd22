"""Stable Diffusion 1.x and 2.x: a UNet conditioned on one CLIP text encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..accelerators import combos_for
from .base import Family


class StableDiffusion(Family):
    name = "sd"
    title = "SD1.x/2.x"
    pipeline_class = "StableDiffusionPipeline"
    denoiser_name = "unet"
    denoiser_title = "UNet"
    denoiser_class = "UNet2DConditionModel"
    has = ("unet",)
    lacks = ("text_encoder_2",)
    combos = combos_for("unet", only=True)
    builds_with = {"safety_checker": None, "feature_extractor": None,
                   "requires_safety_checker": False}
    loads_with = {"safety_checker": None, "requires_safety_checker": False}
    # What `encode_prompt` returns, in order, as the call's keyword arguments.
    embeddings: tuple[str, ...] = ("prompt_embeds", "negative_prompt_embeds")

    def encode(self, pipe, prompts: Sequence[str], *, guidance: bool) -> dict[str, Any]:
        encoded = pipe.encode_prompt(prompts, device=pipe.device, num_images_per_prompt=1,
                                     do_classifier_free_guidance=guidance)
        return {n: e for n, e in zip(self.embeddings, encoded) if e is not None}

    def native_size_of(self, source: str) -> tuple[int, int]:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        sample = UNet2DConditionModel.load_config(source, subfolder=self.denoiser_name)[
            "sample_size"]
        vae_blocks = len(AutoencoderKL.load_config(source, subfolder="vae")["block_out_channels"])
        side = sample * 2 ** (vae_blocks - 1)
        return side, side

    def holds_checkpoint(self, kind: str) -> bool:
        """Every model type but SDXL's ("xl_base", "xl_refiner", ...): v1, v2, inpainting and
        the others load as StableDiffusionPipeline (the registry asks this family last)."""
        return not kind.startswith("xl")

    def checkpoint_size(self, kind: str) -> tuple[int, int]:
        side = 768 if kind == "v2" else 512
        return side, side


SD = StableDiffusion()

__all__ = ["SD", "StableDiffusion"]
