"""Image-quality metrics in torch, on any device: CLIP score, PSNR and SSIM.

Images here are uint8 tensors of shape (N, 3, H, W), which is what a pipeline's output becomes
once quantised the way diffusers saves it (see ``to_uint8``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"  # torchmetrics' default for CLIPScore
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_TOKENS = 77  # CLIP's text context: longer prompts are cut to their first 77 tokens


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] to uint8, as diffusers' ``numpy_to_pil`` does: ``(x*255).round()``.

    ``round`` is half-to-even in both torch and numpy; low-precision inputs are first made
    float32, as diffusers does before going to numpy.
    """
    if images.dtype not in (torch.float32, torch.float64):
        images = images.float()
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


def _check_images(*images: torch.Tensor) -> None:
    for x in images:
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 images of shape (N, 3, H, W), got {x.dtype} "
                             f"{tuple(x.shape)}")
    if len(images) == 2 and images[0].shape != images[1].shape:
        raise ValueError(f"image shapes differ: {tuple(images[0].shape)} vs "
                         f"{tuple(images[1].shape)}")


# ---------------------------------------------------------------------------------------------
# CLIP score


def _features(output) -> torch.Tensor:
    """Projected embeddings from ``get_*_features``: a tensor in transformers 4, a
    ``BaseModelOutputWithPooling`` whose ``pooler_output`` holds them in transformers 5."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise TypeError(f"cannot find embeddings in a {type(output).__name__}")


class CLIPScorer:
    """CLIP score as torchmetrics defines it: ``100 * max(cos(image, text), 0)`` per image."""

    def __init__(self, model, tokenizer, *, image_size: int | None = None,
                 mean: Sequence[float] = OPENAI_CLIP_MEAN, std: Sequence[float] = OPENAI_CLIP_STD,
                 device: str | torch.device | None = None, batch_size: int = 32,
                 text_cache_size: int = 8):
        param = next(model.parameters())
        self.device = torch.device(device) if device is not None else param.device
        self.model = model.to(self.device).eval()
        self.dtype = param.dtype
        self.tokenizer = tokenizer
        self.image_size = int(image_size or model.config.vision_config.image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.batch_size = batch_size
        self._text_cache: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_CLIP_MODEL,
                        device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "CLIPScorer":
        from transformers import CLIPModel, CLIPTokenizer

        model = CLIPModel.from_pretrained(name_or_path, dtype=dtype).to(device)
        return cls(model, CLIPTokenizer.from_pretrained(name_or_path), device=device)

    @classmethod
    def from_preset(cls, name: str, device: str | torch.device = "cpu", seed: int = 0, *,
                    dtype: torch.dtype | None = None) -> "CLIPScorer":
        """A random-weight CLIP of a ``presets.CLIP_ARCHITECTURES`` entry (offline, for tests)."""
        from .presets import build_clip

        model, tokenizer = build_clip(name, seed=seed, device=device)
        if dtype is not None:
            model = model.to(dtype=dtype)
        return cls(model, tokenizer, device=device)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> normalised pixel values, as CLIPImageProcessor prepares them:
        bicubic resize of the shortest edge to ``image_size``, center crop, rescale, normalise.

        The resized image is rounded and clamped to 0..255, as the processor's resize of a uint8
        image gives uint8 again.
        """
        x = images.to(self.device, torch.float32)
        h, w = x.shape[-2:]
        size = self.image_size
        if min(h, w) != size:
            short, long = (h, w) if h <= w else (w, h)
            long = int(size * long / short)  # as transformers' get_resize_output_image_size
            new_hw = (size, long) if h <= w else (long, size)
            x = F.interpolate(x, size=new_hw, mode="bicubic", align_corners=False,
                              antialias=True).round().clamp(0, 255)
            h, w = new_hw
        top, left = (h - size) // 2, (w - size) // 2
        x = x[..., top:top + size, left:left + size]
        return ((x / 255 - self.mean) / self.std).to(self.dtype)

    def truncated(self, prompts: Sequence[str]) -> list[str]:
        """The prompts longer than the TEXT_TOKENS tokens the text encoder reads (the rest of
        each is cut off before scoring)."""
        lengths = [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]
        return [p for p, n in zip(prompts, lengths) if n > TEXT_TOKENS]

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings (float64), cached per tuple of prompts."""
        key = tuple(prompts)
        if key in self._text_cache:
            self._text_cache.move_to_end(key)
            return self._text_cache[key]
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(key), self.batch_size):
                tokens = self.tokenizer(list(key[i:i + self.batch_size]), padding="max_length",
                                        max_length=TEXT_TOKENS, truncation=True,
                                        return_tensors="pt")
                features = self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device))
                chunks.append(_features(features).double())
        embeddings = F.normalize(torch.cat(chunks), dim=-1)
        self._text_cache[key] = embeddings
        if len(self._text_cache) > self._text_cache_size:
            self._text_cache.popitem(last=False)
        return embeddings

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings (float64) of uint8 images."""
        _check_images(images)
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                pixels = self.preprocess(images[i:i + self.batch_size])
                chunks.append(_features(self.model.get_image_features(pixel_values=pixels))
                              .double())
        return F.normalize(torch.cat(chunks), dim=-1)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Per-image CLIP scores (float64, CPU) of uint8 images against their prompts."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        cosine = (self.image_embeddings(images) * self.text_embeddings(prompts)).sum(-1)
        return (100 * cosine).clamp(min=0).cpu()


def default_clip_model(pipe_name: str) -> str:
    """The real CLIP for real models, the one trained with a trained preset, and a random-weight
    one of matching scale for the random-weight presets."""
    from .presets import CLIP_OF_TRAINED, is_preset

    if pipe_name in CLIP_OF_TRAINED:
        return CLIP_OF_TRAINED[pipe_name]
    if is_preset(pipe_name):
        return "tiny-clip" if pipe_name.startswith("tiny") else "clip-l-random"
    return DEFAULT_CLIP_MODEL


def load_clip_scorer(name: str, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> CLIPScorer:
    """A preset CLIP (random weights, see ``presets.CLIP_ARCHITECTURES``; or trained, see
    ``presets.TRAINED_CLIP``) or a pretrained one."""
    from .presets import CLIP_ARCHITECTURES, TRAINED_CLIP, trained_path

    if name in CLIP_ARCHITECTURES:
        return CLIPScorer.from_preset(name, device, dtype=dtype)
    try:
        return CLIPScorer.from_pretrained(trained_path(name) if name in TRAINED_CLIP else name,
                                          device, dtype)
    except (OSError, ValueError) as err:
        from .messages import PipelineError, first_line

        raise PipelineError(f"cannot load CLIP model {name!r}: {first_line(err)}") from err


# ---------------------------------------------------------------------------------------------
# PSNR and SSIM (per image, float64, data range 255)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB; ``inf`` for identical images."""
    _check_images(a, b)
    mse = (a.double() - b.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(255.0 ** 2 / mse)


def _gaussian_blur(size: int, sigma: float, device):
    """A 2-D Gaussian filter ('valid' region) applied as two 1-D passes."""
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    rows, cols = g.view(1, 1, size, 1), g.view(1, 1, 1, size)
    return lambda images: F.conv2d(F.conv2d(images, rows), cols)


def ssim(a: torch.Tensor, b: torch.Tensor, *, chunk: int = 8) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004), as ``skimage.metrics.structural_similarity`` with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255`` and
    ``channel_axis`` computes it: an 11x11 Gaussian window (sigma 1.5), SSIM map on the 'valid'
    region (skimage filters with reflection, then crops the 5 px border that reflection
    touched), averaged over pixels and then channels.

    Images smaller than 11 px in a side (where skimage refuses) use the largest odd window that
    fits, with the same sigma, truncated and renormalised.
    """
    _check_images(a, b)
    win = min(11, min(a.shape[-2:]))
    win -= 1 - win % 2
    blur = _gaussian_blur(win, 1.5, a.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for i in range(0, len(a), chunk):  # bounds memory: ~15 float64 maps per image
        x = a[i:i + chunk].double().flatten(0, 1).unsqueeze(1)  # (n*3, 1, H, W)
        y = b[i:i + chunk].double().flatten(0, 1).unsqueeze(1)
        mx, my = blur(x), blur(y)
        vx = blur(x * x) - mx * mx
        vy = blur(y * y) - my * my
        vxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        out.append(s.flatten(1).mean(1).view(-1, 3).mean(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64, device=a.device)
