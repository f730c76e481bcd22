"""Pipelines and CLIP models built from configs with seeded random weights, and the trained
toy ones shipped in the package.

They need no file and no network: the tests and the demo run on the ``tiny-*`` presets, and
the full-size ``*-random`` presets give real timings on a GPU without downloading weights.
Every quality number measured on random weights is meaningless; timings at full size are real
(same kernels, same shapes). The trained presets (``TRAINED``: ``tiny-shapes`` and its CLIP,
made by ``tools/train_tiny.py`` on ``tuner.shapes``) are ordinary diffusers / transformers
folders in ``tuner/weights``: a toy model, but its quality trade-offs are real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the results readers import the preset names without torch
    import torch

SCHEDULER_CONFIG = {  # the noise schedule shared by SD1.5, SD2.1 and SDXL
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}

# ---------------------------------------------------------------------------------------------
# Offline CLIP tokenizer: byte-level BPE with no merges, i.e. one token per byte of the prompt.


def offline_clip_tokenizer():
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols (plus their ``</w>`` forms).

    Ids: bytes 0-255, word-final bytes 256-511, ``<|startoftext|>`` 512, ``<|endoftext|>`` 513.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


TOKENIZER_BOS, TOKENIZER_EOS = 512, 513


def _text_config(hidden: int, layers: int, heads: int, intermediate: int, *, vocab: int,
                 act: str = "quick_gelu", projection: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate, hidden_act=act,
        max_position_embeddings=77, bos_token_id=TOKENIZER_BOS, eos_token_id=TOKENIZER_EOS,
        pad_token_id=TOKENIZER_EOS, projection_dim=projection or hidden,
    )


# ---------------------------------------------------------------------------------------------
# Architectures. `tiny-sd` keeps SD1.5's UNet topology (4 down blocks, 2 layers per block, so
# every DeepCache cache_branch_id means what it means on SD1.5); `tiny-sdxl` keeps SDXL's
# (3 down blocks, text_time embeddings, two text encoders).


@dataclass(frozen=True)
class Architecture:
    kind: str  # its family's name (families.FAMILIES): "sd" or "sdxl"
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: tuple  # arguments of _text_config for text_encoder
    text_2: tuple | None = None  # SDXL's second text encoder (with projection)
    text_act: str = "quick_gelu"
    vocab: int = 49408
    prediction_type: str = "epsilon"


def _sd_unet(channels, heads, cross_dim, sample_size, groups=32, **extra):
    return dict(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=channels, norm_num_groups=groups, cross_attention_dim=cross_dim,
        attention_head_dim=heads,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, **extra,
    )


def _sdxl_unet(channels, heads, layers, cross_dim, time_dim, pooled_dim, sample_size, groups=32):
    return dict(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=channels, norm_num_groups=groups, cross_attention_dim=cross_dim,
        attention_head_dim=heads, transformer_layers_per_block=layers, use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + pooled_dim,
    )


def _vae(channels, groups=32, scaling=0.18215, **extra):
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=channels, norm_num_groups=groups, scaling_factor=scaling,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels), **extra,
    )


ARCHITECTURES: dict[str, Architecture] = {
    "tiny-sd": Architecture(
        "sd", _sd_unet((32, 32, 64, 64), 8, 32, sample_size=16),
        _vae((8, 16, 16, 16), groups=8), text=(32, 2, 4, 64), vocab=1000),
    "tiny-sdxl": Architecture(
        "sdxl", _sdxl_unet((32, 64, 64), (2, 4, 4), (1, 1, 2), 64, 8, 32, sample_size=16),
        _vae((8, 16, 16, 16), groups=8, scaling=0.13025), text=(32, 2, 4, 64),
        text_2=(32, 2, 4, 64), text_act="gelu", vocab=1000),
    "sd1.5-random": Architecture(
        "sd", _sd_unet((320, 640, 1280, 1280), 8, 768, sample_size=64),
        _vae((128, 256, 512, 512)), text=(768, 12, 12, 3072)),
    "sd2.1-random": Architecture(
        "sd", _sd_unet((320, 640, 1280, 1280), (5, 10, 20, 20), 1024, sample_size=96,
                       use_linear_projection=True, upcast_attention=True),
        _vae((128, 256, 512, 512)), text=(1024, 23, 16, 4096), text_act="gelu",
        prediction_type="v_prediction"),
    "sdxl-random": Architecture(
        "sdxl", _sdxl_unet((320, 640, 1280), (5, 10, 20), (1, 2, 10), 2048, 256, 1280,
                           sample_size=128),
        _vae((128, 256, 512, 512), scaling=0.13025, force_upcast=True),
        text=(768, 12, 12, 3072), text_2=(1280, 32, 20, 5120), text_act="gelu"),
}


def is_preset(pipe: str) -> bool:
    """Presets are built with random weights: their quality numbers mean nothing."""
    return pipe in ARCHITECTURES


def native_size(name: str) -> tuple[int, int]:
    """(height, width) a preset generates by default: its UNet's sample size in latents, each
    VAE block but the last halving it."""
    arch = ARCHITECTURES[name]
    side = arch.unet["sample_size"] * 2 ** (len(arch.vae["block_out_channels"]) - 1)
    return side, side


# Trained presets: name -> folder in tuner/weights, loaded with from_pretrained like any model.
WEIGHTS = Path(__file__).resolve().parent / "weights"
TRAINED = {"tiny-shapes": "tiny-shapes"}  # pipelines
TRAINED_CLIP = {"tiny-shapes-clip": "tiny-shapes-clip"}  # CLIP models
CLIP_OF_TRAINED = {"tiny-shapes": "tiny-shapes-clip"}  # the CLIP trained on a pipeline's data


def trained_prompts(pipe: str) -> list[str] | None:
    """The captions a trained preset knows (its own dataset's), for when no prompts are
    given: COCO captions are out of its vocabulary."""
    if pipe != "tiny-shapes":
        return None
    from .shapes import scenes

    return [scene.caption() for scene in scenes()]


def is_trained_preset(pipe: str) -> bool:
    """A pipeline shipped with trained weights: its quality numbers are real (for a toy)."""
    return pipe in TRAINED


def trained_path(name: str) -> str:
    """The folder of a trained pipeline or CLIP preset."""
    return str(WEIGHTS / {**TRAINED, **TRAINED_CLIP}[name])


RANDOM_WEIGHTS_NOTE = ("This model has random weights: its quality numbers (losses, CLIP scores, "
                       "images) mean nothing; timings at full size are real.")


def build_pipeline(name: str, *, seed: int = 0, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None):
    """Build a preset pipeline with seeded random weights (deterministic for a given seed)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from .families import FAMILIES

    arch = ARCHITECTURES[name]
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**arch.unet)
        vae = AutoencoderKL(**arch.vae)
        text_encoder = CLIPTextModel(_text_config(*arch.text, vocab=arch.vocab, act=arch.text_act))
        text_encoder_2 = (CLIPTextModelWithProjection(_text_config(*arch.text_2, vocab=arch.vocab,
                                                                   act=arch.text_act))
                          if arch.text_2 else None)
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG, prediction_type=arch.prediction_type)
    components = {"vae": vae, "text_encoder": text_encoder, "tokenizer": offline_clip_tokenizer(),
                  "unet": unet, "scheduler": scheduler}
    if text_encoder_2 is not None:
        components.update(text_encoder_2=text_encoder_2, tokenizer_2=offline_clip_tokenizer())
    pipe = FAMILIES[arch.kind].build(components)
    if dtype not in (None, torch.float32):
        from diffusers.utils import logging

        previous = logging.get_verbosity()
        logging.set_verbosity_error()  # it warns that a cast is not a typed load; harmless here
        try:
            pipe.to(dtype=dtype)
        finally:
            logging.set_verbosity(previous)
    return pipe


# ---------------------------------------------------------------------------------------------
# CLIP models for scoring.

CLIP_ARCHITECTURES = {
    # (text: hidden, layers, heads, mlp), (vision: hidden, layers, heads, mlp, image, patch), dim
    "tiny-clip": ((32, 2, 4, 64), (32, 2, 4, 64, 32, 8), 32),
    "clip-l-random": ((768, 12, 12, 3072), (1024, 24, 16, 4096, 224, 14), 768),
}


def build_clip(name: str, *, seed: int = 0, device: str | torch.device = "cpu"):
    """A random-weight CLIP model of a preset architecture with its tokenizer and image size."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    text, (v_hidden, v_layers, v_heads, v_mlp, image, patch), dim = CLIP_ARCHITECTURES[name]
    vision = CLIPVisionConfig(hidden_size=v_hidden, num_hidden_layers=v_layers,
                              num_attention_heads=v_heads, intermediate_size=v_mlp,
                              image_size=image, patch_size=patch, projection_dim=dim)
    config = CLIPConfig(text_config=_text_config(*text, vocab=1000, projection=dim).to_dict(),
                        vision_config=vision.to_dict(), projection_dim=dim)
    torch.manual_seed(seed)
    with torch.device(device):
        model = CLIPModel(config)
    return model.eval(), offline_clip_tokenizer()
