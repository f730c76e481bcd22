"""Stable Diffusion XL: the SD UNet family with a second text encoder, whose pooled
embeddings condition the UNet too."""

from __future__ import annotations

from .sd import StableDiffusion


class StableDiffusionXL(StableDiffusion):
    name = "sdxl"
    title = "SDXL"
    pipeline_class = "StableDiffusionXLPipeline"
    has = ("unet", "text_encoder_2")
    lacks = ()
    builds_with = {"add_watermarker": False}
    loads_with = {}
    embeddings = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                  "negative_pooled_prompt_embeds")

    def holds_checkpoint(self, kind: str) -> bool:
        return kind.startswith("xl")

    def checkpoint_size(self, kind: str) -> tuple[int, int]:
        return 1024, 1024


SDXL = StableDiffusionXL()

__all__ = ["SDXL", "StableDiffusionXL"]
