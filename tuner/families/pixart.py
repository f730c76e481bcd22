"""PixArt-Σ (PixArt-alpha/PixArt-Sigma-XL-2-1024-MS): a DiT conditioned on one T5 encoder whose
attention mask the call takes beside the embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Family


class PixArtSigma(Family):
    name = "pixart-sigma"
    title = "PixArt-Σ"
    pipeline_class = "PixArtSigmaPipeline"
    denoiser_name = "transformer"
    denoiser_title = "transformer"
    denoiser_class = "PixArtTransformer2DModel"
    has = ("transformer", "text_encoder", "tokenizer")
    lacks = ("text_encoder_2", "unet")
    # T-GATE through its PixArt loaders; the diffusers caches do not serve
    # PixArtTransformer2DModel (no `enable_cache`).
    size_multiple = 16
    size_reason = "the VAE's 8 x the transformer's 2x2 patches"
    schedulers = ("DPM-Solver++", "DDIM", "UniPCMultistepScheduler")  # its own first
    combos = ("tgate",)
    # What `encode_prompt` returns, in order, as the call's keyword arguments.
    embeddings = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                  "negative_prompt_attention_mask")

    def encode(self, pipe, prompts: Sequence[str], *, guidance: bool) -> dict[str, Any]:
        """The embeddings and masks of the prompts as given (no caption cleaning, which needs
        packages the call only warns about)."""
        encoded = pipe.encode_prompt(list(prompts), do_classifier_free_guidance=guidance,
                                     negative_prompt="", num_images_per_prompt=1,
                                     device=pipe.device, clean_caption=False)
        return {n: e for n, e in zip(self.embeddings, encoded) if e is not None}

    def call_options(self, pipe, guidance_scale: float) -> dict[str, Any]:
        """Without resolution binning: the call would otherwise generate at the nearest of its
        trained aspect ratios and resize, and the setting's size is what is measured. Its
        default negative prompt ("") is in the embeddings already: the call refuses both."""
        return {"guidance_scale": guidance_scale, "use_resolution_binning": False,
                "negative_prompt": None}

    def native_size_of(self, source: str) -> tuple[int, int]:
        from diffusers import AutoencoderKL, PixArtTransformer2DModel

        sample = PixArtTransformer2DModel.load_config(source, subfolder="transformer")[
            "sample_size"]
        blocks = len(AutoencoderKL.load_config(source, subfolder="vae")["block_out_channels"])
        side = sample * 2 ** (blocks - 1)
        return side, side

    single_file = False  # diffusers loads no PixArt pipeline from a single file

    def holds_checkpoint(self, kind: str) -> bool:
        return False

    def checkpoint_size(self, kind: str) -> tuple[int, int]:
        raise ValueError("PixArt-Σ has no single-file checkpoint")


PIXART_SIGMA = PixArtSigma()

__all__ = ["PIXART_SIGMA", "PixArtSigma"]
