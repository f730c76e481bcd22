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


# ---------------------------------------------------------------------------------------------
# Diffusion transformers. The full-size presets keep their model's transformer and VAE exactly
# (FLUX.1-dev, SD3.5 medium, PixArt-Σ 1024): those are what every step runs, so their timings
# are real. Their text encoders are NOT the real ones (CLIP-L/G, T5-XXL: 5 B parameters of T5
# alone): each is one small layer with the real output width and the real sequence length, so
# the transformer gets embeddings of the real shapes. Prompts are encoded once, before any
# timing, and never timed, so nothing measured depends on the encoders' size.


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder: "clip" (CLIPTextModel: its pooled output), "clip-projection"
    (CLIPTextModelWithProjection: hidden states and projected pooled output) or "t5"
    (T5EncoderModel: its sequence); `width` is its output width, `length` its tokenizer's."""

    kind: str
    width: int
    length: int = 77


@dataclass(frozen=True)
class DiTArchitecture:
    kind: str  # its family's name (families.FAMILIES): "flux", "sd3" or "pixart-sigma"
    transformer: dict[str, Any]
    vae: dict[str, Any]
    text: tuple[TextEncoder, ...]  # text_encoder, text_encoder_2, text_encoder_3 in order
    scheduler: tuple[str, dict[str, Any]]  # diffusers class name, config
    small_text: bool = True  # the text encoders are stand-ins of the real output width


def _dit_vae(channels, latent, *, scaling, shift=0.0, sample_size, groups=32, quant=True):
    return dict(
        in_channels=3, out_channels=3, latent_channels=latent, layers_per_block=2,
        block_out_channels=channels, norm_num_groups=groups, scaling_factor=scaling,
        shift_factor=shift, sample_size=sample_size, use_quant_conv=quant,
        use_post_quant_conv=quant,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
    )


_FLOW = ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0})
_FLUX_FLOW = ("FlowMatchEulerDiscreteScheduler", {  # FLUX.1-dev's: shift by the image's size
    "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
    "base_image_seq_len": 256, "max_image_seq_len": 4096})
_PIXART_DPM = ("DPMSolverMultistepScheduler", {  # PixArt-Σ's
    "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
    "num_train_timesteps": 1000, "prediction_type": "epsilon"})

DIT_ARCHITECTURES: dict[str, DiTArchitecture] = {
    "tiny-flux": DiTArchitecture(
        "flux", dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                     attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                     pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(2, 2, 4)),
        _dit_vae((8, 16, 16, 16), 4, scaling=1.0, sample_size=64, groups=8),
        (TextEncoder("clip", 32), TextEncoder("t5", 32, 16)), _FLUX_FLOW, small_text=False),
    "tiny-sd3": DiTArchitecture(
        "sd3", dict(sample_size=8, patch_size=2, in_channels=4, num_layers=1,
                    attention_head_dim=8, num_attention_heads=2, joint_attention_dim=64,
                    caption_projection_dim=16, pooled_projection_dim=64, out_channels=4,
                    pos_embed_max_size=16),
        _dit_vae((8, 16, 16, 16), 4, scaling=1.0, sample_size=64, groups=8),
        (TextEncoder("clip-projection", 32), TextEncoder("clip-projection", 32),
         TextEncoder("t5", 64, 16)), _FLOW, small_text=False),
    "tiny-pixart-sigma": DiTArchitecture(
        "pixart-sigma", dict(sample_size=8, num_layers=1, attention_head_dim=8,
                             num_attention_heads=2, in_channels=4, out_channels=8, patch_size=2,
                             cross_attention_dim=16, caption_channels=32,
                             norm_type="ada_norm_single", norm_elementwise_affine=False,
                             norm_eps=1e-6, use_additional_conditions=False),
        _dit_vae((8, 16, 16, 16), 4, scaling=0.13025, sample_size=64, groups=8),
        (TextEncoder("t5", 32, 16),), _PIXART_DPM, small_text=False),
    # FLUX.1-dev: 19 double- and 38 single-stream blocks, 11.9 B parameters; T5 512 tokens.
    "flux-random": DiTArchitecture(
        "flux", dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                     attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                     pooled_projection_dim=768, guidance_embeds=True,
                     axes_dims_rope=(16, 56, 56)),
        _dit_vae((128, 256, 512, 512), 16, scaling=0.3611, shift=0.1159, sample_size=1024,
                 quant=False),
        (TextEncoder("clip", 768), TextEncoder("t5", 4096, 512)), _FLUX_FLOW),
    # SD3.5 medium: 24 MMDiT-X blocks (self-attention in the first 13), 2.5 B parameters.
    "sd3.5-random": DiTArchitecture(
        "sd3", dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                    attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                    caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                    pos_embed_max_size=384, dual_attention_layers=tuple(range(13)),
                    qk_norm="rms_norm"),
        _dit_vae((128, 256, 512, 512), 16, scaling=1.5305, shift=0.0609, sample_size=1024,
                 quant=False),
        (TextEncoder("clip-projection", 768), TextEncoder("clip-projection", 1280),
         TextEncoder("t5", 4096, 256)), _FLOW),
    # PixArt-Σ XL/2 at 1024 px: 28 blocks of width 1152, 0.6 B parameters; T5 300 tokens.
    "pixart-sigma-random": DiTArchitecture(
        "pixart-sigma", dict(sample_size=128, num_layers=28, attention_head_dim=72,
                             num_attention_heads=16, in_channels=4, out_channels=8,
                             patch_size=2, cross_attention_dim=1152, caption_channels=4096,
                             norm_type="ada_norm_single", norm_elementwise_affine=False,
                             norm_eps=1e-6, use_additional_conditions=False),
        _dit_vae((128, 256, 512, 512), 4, scaling=0.13025, sample_size=1024),
        (TextEncoder("t5", 4096, 300),), _PIXART_DPM),
}


def is_preset(pipe: str) -> bool:
    """Presets are built with random weights: their quality numbers mean nothing."""
    return pipe in ARCHITECTURES or pipe in DIT_ARCHITECTURES


def preset_kind(name: str) -> str:
    """The family name (families.FAMILIES) of a random-weight preset."""
    return (ARCHITECTURES.get(name) or DIT_ARCHITECTURES[name]).kind


def native_size(name: str) -> tuple[int, int]:
    """(height, width) a preset generates by default: its denoiser's sample size in latents,
    each VAE block but the last halving it (a FLUX transformer has none: its VAE's size)."""
    if name in DIT_ARCHITECTURES:
        arch = DIT_ARCHITECTURES[name]
        if "sample_size" not in arch.transformer:
            return arch.vae["sample_size"], arch.vae["sample_size"]
        sample, blocks = arch.transformer["sample_size"], arch.vae["block_out_channels"]
    else:
        arch = ARCHITECTURES[name]
        sample, blocks = arch.unet["sample_size"], arch.vae["block_out_channels"]
    side = sample * 2 ** (len(blocks) - 1)
    return side, side


# Trained presets: name -> folder in tuner/weights, loaded with from_pretrained like any model.
WEIGHTS = Path(__file__).resolve().parent / "weights"
# tiny-shapes-dit: a FLUX.1 transformer at toy size (no guidance embedding: true CFG, as
# trained), on the same captions and VAE (tools/train_tiny_dit.py).
TRAINED = {"tiny-shapes": "tiny-shapes", "tiny-shapes-dit": "tiny-shapes-dit"}  # pipelines
TRAINED_CLIP = {"tiny-shapes-clip": "tiny-shapes-clip"}  # CLIP models
CLIP_OF_TRAINED = {"tiny-shapes": "tiny-shapes-clip",  # the CLIP trained on a pipeline's data
                   "tiny-shapes-dit": "tiny-shapes-clip"}


def names() -> list[str]:
    """Every preset pipeline: the trained ones, then the random-weight ones."""
    return [*TRAINED, *ARCHITECTURES, *DIT_ARCHITECTURES]


def trained_prompts(pipe: str) -> list[str] | None:
    """The captions a trained preset knows (its own dataset's), for when no prompts are
    given: COCO captions are out of its vocabulary."""
    if pipe not in TRAINED:
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
SMALL_TEXT_NOTE = ("Its text encoders are small stand-ins of the real output width: prompts are "
                   "encoded once and never timed.")


def build_pipeline(name: str, *, seed: int = 0, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None):
    """Build a preset pipeline with seeded random weights (deterministic for a given seed)."""
    import torch

    if name in DIT_ARCHITECTURES:
        return _cast(build_dit_pipeline(name, seed=seed, device=device), dtype)
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
    return _cast(FAMILIES[arch.kind].build(components), dtype)


def _cast(pipe, dtype):
    import torch

    if dtype not in (None, torch.float32):
        from diffusers.utils import logging

        previous = logging.get_verbosity()
        logging.set_verbosity_error()  # it warns that a cast is not a typed load; harmless here
        try:
            pipe.to(dtype=dtype)
        finally:
            logging.set_verbosity(previous)
    return pipe


def _text_encoder(spec: TextEncoder, *, full_size: bool):
    """A text encoder of `spec`'s output width: at full size one layer, two heads and a narrow
    MLP (a stand-in: prompts are encoded once and never timed); tiny ones as they are."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    if spec.kind == "t5":
        heads, d_kv = (2, 32) if full_size else (4, spec.width // 4)
        return T5EncoderModel(T5Config(
            vocab_size=1000, d_model=spec.width, d_kv=d_kv,
            d_ff=64, num_layers=1, num_heads=heads, relative_attention_num_buckets=8,
            relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
            dropout_rate=0.0, pad_token_id=TOKENIZER_EOS, eos_token_id=TOKENIZER_EOS,
            decoder_start_token_id=TOKENIZER_EOS, is_encoder_decoder=False, use_cache=False))
    heads = 4 if spec.width % 64 else spec.width // 64
    config = _text_config(spec.width, 1 if full_size else 2, heads, 64, vocab=1000, act="gelu")
    return (CLIPTextModel if spec.kind == "clip" else CLIPTextModelWithProjection)(config)


def build_dit_pipeline(name: str, *, seed: int = 0, device: str | torch.device = "cpu"):
    """A diffusion-transformer preset (DIT_ARCHITECTURES) with seeded random weights."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL

    from .families import FAMILIES

    arch = DIT_ARCHITECTURES[name]
    family = FAMILIES[arch.kind]
    torch.manual_seed(seed)
    with torch.device(device):
        denoiser = getattr(diffusers, family.denoiser_class)(**arch.transformer)
        vae = AutoencoderKL(**arch.vae)
        encoders = [_text_encoder(spec, full_size=arch.small_text) for spec in arch.text]
    scheduler_class, scheduler_config = arch.scheduler
    components = {family.denoiser_name: denoiser, "vae": vae,
                  "scheduler": getattr(diffusers, scheduler_class)(**scheduler_config)}
    for i, (spec, encoder) in enumerate(zip(arch.text, encoders)):
        suffix = f"_{i + 1}" if i else ""
        tokenizer = offline_clip_tokenizer()
        tokenizer.model_max_length = spec.length
        components.update({f"text_encoder{suffix}": encoder, f"tokenizer{suffix}": tokenizer})
    return family.build(components)


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
