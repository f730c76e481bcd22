"""FLUX.1 (black-forest-labs/FLUX.1-dev, -schnell): a rectified-flow transformer with double- and
single-stream blocks, conditioned on a T5 sequence and CLIP's pooled embedding.

Guidance comes in two kinds, and the transformer's config says which:
* FLUX.1-dev is guidance-distilled (`guidance_embeds`): the scale is an input of the
  transformer, one batch per step, no negative prompts (`guidance_scale`);
* a transformer without that embedding (FLUX.1-schnell, the trained toy `tiny-shapes-dit`) is
  guided, when at all, by true classifier-free guidance: `true_cfg_scale` with the empty
  negative prompt, a second batch per step. The toy was trained with 10 % empty captions for
  it, and generates so (tools/train_tiny_dit.py); schnell is run at scale 1 (none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..accelerators import COMBOS
from .base import Family

# The diffusers caches that serve FluxTransformer2DModel (`enable_cache`); each is a combo of
# one accelerator of the same name once registered.
CACHES = ("fbcache", "taylorseer", "magcache", "fastercache", "pab")
# T5's longest sequence in FluxPipeline (its `max_sequence_length` limit).
MAX_SEQUENCE = 512


class Flux(Family):
    name = "flux"
    title = "FLUX.1"
    pipeline_class = "FluxPipeline"
    denoiser_name = "transformer"
    denoiser_title = "transformer"
    denoiser_class = "FluxTransformer2DModel"
    has = ("transformer", "text_encoder_2")
    lacks = ("text_encoder_3", "unet")
    size_multiple = 16
    size_reason = "the VAE's 8 x the 2x2 patches FluxPipeline packs the latents into"
    schedulers = ("FlowMatchEuler",)  # rectified flow

    @property
    def combos(self) -> tuple[str, ...]:
        """The caches registered as combos (read when asked: a cache registered later counts)."""
        return tuple(c for c in CACHES if c in COMBOS)

    def embedded_guidance(self, pipe) -> bool:
        """Whether the transformer takes the guidance scale as an input (FLUX.1-dev)."""
        return bool(self.denoiser(pipe).config.guidance_embeds)

    def sequence_length(self, pipe) -> int:
        """The T5 sequence the model runs with: its tokenizer's length, at most FluxPipeline's
        512 (FLUX.1-dev's tokenizer says 512; the toy was trained at 16)."""
        return min(MAX_SEQUENCE, int(pipe.tokenizer_2.model_max_length))

    def classifier_free(self, pipe, guidance_scale: float) -> bool:
        return guidance_scale > 1 and not self.embedded_guidance(pipe)

    def call_options(self, pipe, guidance_scale: float) -> dict[str, Any]:
        length = {"max_sequence_length": self.sequence_length(pipe)}
        if self.embedded_guidance(pipe):
            return {"guidance_scale": guidance_scale, **length}
        return {"true_cfg_scale": guidance_scale, **length}

    def encode(self, pipe, prompts: Sequence[str], *, guidance: bool) -> dict[str, Any]:
        """prompt_embeds and pooled_prompt_embeds (the text ids encode_prompt also returns are
        not an argument of the call: it makes them again from the embeddings' length), and the
        empty negative prompt's with `guidance` (true CFG)."""
        def encoded(texts):
            return pipe.encode_prompt(texts, prompt_2=None, device=pipe.device,
                                      num_images_per_prompt=1,
                                      max_sequence_length=self.sequence_length(pipe))[:2]

        embeds, pooled = encoded(list(prompts))
        found = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if guidance:
            negative, negative_pooled = encoded([""] * len(prompts))
            found.update(negative_prompt_embeds=negative,
                         negative_pooled_prompt_embeds=negative_pooled)
        return found

    def native_size(self, pipe) -> tuple[int, int]:
        """The VAE's sample size (1024 for FLUX.1, 64 for the toy): the transformer has none,
        and FluxPipeline's own default (1024) does not know a smaller model."""
        side = int(pipe.vae.config.sample_size)
        return side, side

    def native_size_of(self, source: str) -> tuple[int, int]:
        from diffusers import AutoencoderKL

        side = int(AutoencoderKL.load_config(source, subfolder="vae")["sample_size"])
        return side, side

    def holds_checkpoint(self, kind: str) -> bool:
        """diffusers' FLUX model types: "flux-dev", "flux-schnell", "flux-fill", ..."""
        return kind.startswith("flux")

    def checkpoint_size(self, kind: str) -> tuple[int, int]:
        return 1024, 1024


FLUX = Flux()

__all__ = ["CACHES", "FLUX", "Flux"]
