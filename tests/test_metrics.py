import types

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from tuner.metrics import CLIPScorer, load_clip_scorer, psnr, ssim, to_uint8

PROMPTS = ["a red car", "two dogs in a park", "a bowl of soup", "a city at night"]


def random_images(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


def add_noise(images, scale, seed=1):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=g) * scale
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------------------------
# to_uint8


def test_to_uint8_matches_diffusers_rounding():
    x = torch.tensor([0.0, 0.5 / 255, 1.5 / 255, 0.2, 0.999, 1.0, -0.3, 1.7]).view(1, 1, 1, 8)
    x = x.expand(1, 3, 1, 8).contiguous()
    expected = np.clip((x.numpy() * 255).round(), 0, 255).astype(np.uint8)
    out = to_uint8(x)
    assert out.dtype == torch.uint8
    assert np.array_equal(out.numpy(), expected)
    assert out[0, 0, 0].tolist() == [0, 0, 2, 51, 255, 255, 0, 255]
    rand = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(to_uint8(rand).numpy(), (rand.numpy() * 255).round().astype(np.uint8))
    assert torch.equal(to_uint8(rand.half()), to_uint8(rand.half().float()))


# --------------------------------------------------------------------------------------------
# CLIP score


@pytest.fixture(scope="module")
def tiny_scorers():
    return CLIPScorer.from_preset("tiny-clip", "cpu", seed=0), load_clip_scorer("tiny-clip", "cpu",
                                                                               torch.float32)


def test_clip_score_tiny_is_deterministic_and_in_range(tiny_scorers):
    a, b = tiny_scorers
    images = random_images(4, 40, 56)  # not square, not 32: resized and center-cropped
    scores = a.score(images, PROMPTS)
    assert scores.dtype == torch.float64 and scores.device.type == "cpu"
    assert scores.shape == (4,)
    assert torch.equal(scores, b.score(images, PROMPTS))
    assert ((scores >= 0) & (scores <= 100)).all()
    # batching does not change the result
    a.batch_size = 3
    try:
        assert torch.allclose(a.score(images, PROMPTS), scores, atol=1e-4)
    finally:
        a.batch_size = 32


def test_clip_preprocess_shape(tiny_scorers):
    scorer = tiny_scorers[0]
    for h, w in [(32, 32), (40, 56), (64, 20), (16, 16)]:
        pixels = scorer.preprocess(random_images(2, h, w))
        assert pixels.shape == (2, 3, 32, 32)
    # an image of the model's size is only rescaled and normalised
    images = random_images(1, 32, 32)
    expected = (images / 255 - scorer.mean) / scorer.std
    assert torch.allclose(scorer.preprocess(images), expected)


class StubCLIP(torch.nn.Module):
    """get_image_features gives each image's mean pixel value minus 0.5 times a fixed direction;
    get_text_features gives that direction (negated for prompts starting with "not")."""

    def __init__(self):
        super().__init__()
        self.direction = torch.nn.Parameter(torch.tensor([1.0, 2.0, 2.0]))
        self.config = types.SimpleNamespace(vision_config=types.SimpleNamespace(image_size=8))
        self.text_calls = 0

    def get_image_features(self, pixel_values):
        mean = pixel_values.flatten(1).mean(1, keepdim=True)
        return types.SimpleNamespace(pooler_output=mean * self.direction)  # transformers 5 style

    def get_text_features(self, input_ids, attention_mask=None):
        self.text_calls += 1
        return input_ids[:, :1].float() * self.direction  # a plain tensor: transformers 4 style


def stub_tokenizer(prompts, **kwargs):
    assert kwargs["max_length"] == 77 and kwargs["padding"] == "max_length"
    ids = torch.tensor([[-1 if p.startswith("not") else 1] for p in prompts])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_clip_score_formula_and_clamp_at_zero():
    model = StubCLIP()
    scorer = CLIPScorer(model, stub_tokenizer, mean=(0.5,) * 3, std=(1.0,) * 3)
    bright = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)  # features +direction/2
    images = torch.cat([bright, bright])
    scores = scorer.score(images, ["a thing", "not a thing"])
    assert scores.tolist() == [pytest.approx(100.0), 0.0]  # cosine 1, cosine -1 -> exactly 0
    assert scores[1].item() == 0.0


def test_clip_text_embeddings_are_cached():
    model = StubCLIP()
    calls = []

    def tokenizer(prompts, **kwargs):
        calls.append(list(prompts))
        return stub_tokenizer(prompts, **kwargs)

    scorer = CLIPScorer(model, tokenizer, batch_size=2)
    images = random_images(3, 8, 8)
    prompts = ["a", "b", "not c"]
    first = scorer.score(images, prompts)
    assert model.text_calls == 2 and len(calls) == 2  # two batches of at most 2 prompts
    for seed in range(3):
        scorer.score(random_images(3, 8, 8, seed=seed), list(prompts))
    assert torch.equal(scorer.score(images, tuple(prompts)), first)
    assert model.text_calls == 2 and len(calls) == 2
    scorer.score(images, ["x", "y", "z"])
    assert model.text_calls == 4


def test_clip_score_rejects_mismatched_inputs(tiny_scorers):
    with pytest.raises(ValueError):
        tiny_scorers[0].score(random_images(2, 32, 32), PROMPTS)
    with pytest.raises(ValueError):
        tiny_scorers[0].score(torch.rand(4, 3, 32, 32), PROMPTS)


# --------------------------------------------------------------------------------------------
# PSNR and SSIM


def test_psnr():
    images = random_images(3, 32, 24)
    same = psnr(images, images.clone())
    assert same.dtype == torch.float64 and torch.isinf(same).all()
    values = [psnr(images, add_noise(images, s)) for s in (2, 8, 32)]
    assert all(torch.isfinite(v).all() for v in values)
    assert (values[0] > values[1]).all() and (values[1] > values[2]).all()
    # against the definition
    a, b = images[:1].double(), add_noise(images, 8)[:1].double()
    expected = 10 * np.log10(255 ** 2 / ((a - b) ** 2).mean().item())
    assert values[1][0].item() == pytest.approx(expected, rel=1e-12)


def skimage_ssim(a, b):
    return np.array([structural_similarity(x, y, channel_axis=0, gaussian_weights=True,
                                           sigma=1.5, use_sample_covariance=False,
                                           data_range=255)
                     for x, y in zip(a.numpy(), b.numpy())])


@pytest.mark.parametrize("h,w", [(64, 64), (13, 17)])
def test_ssim_matches_skimage(h, w):
    a = random_images(3, h, w, seed=0)
    b = add_noise(a, 40, seed=5)
    c = random_images(3, h, w, seed=7)  # unrelated images: SSIM near 0
    for x, y in [(a, b), (a, c)]:
        ours = ssim(x, y)
        assert ours.dtype == torch.float64 and ours.shape == (3,)
        assert np.abs(ours.numpy() - skimage_ssim(x, y)).max() < 1e-6


def test_ssim_properties():
    images = random_images(2, 32, 40)
    smooth = torch.nn.functional.avg_pool2d(images.float(), 5, 1, 2).round().to(torch.uint8)
    assert torch.allclose(ssim(smooth, smooth.clone()), torch.ones(2, dtype=torch.float64))
    noisy = add_noise(smooth, 10)
    assert torch.equal(ssim(smooth, noisy), ssim(noisy, smooth))
    values = [ssim(smooth, add_noise(smooth, s)) for s in (2, 10, 40)]
    assert (values[0] > values[1]).all() and (values[1] > values[2]).all()
    assert (values[0] < 1).all()


def test_ssim_small_images_use_smaller_window():
    images = random_images(2, 6, 9)
    noisy = add_noise(images, 20)
    value = ssim(images, noisy)
    assert torch.isfinite(value).all() and (value < 1).all()
    assert torch.allclose(ssim(images, images), torch.ones(2, dtype=torch.float64))
    # with a 5x5 window on a 5-pixel-high image the map is a single row
    assert ssim(random_images(1, 5, 5), random_images(1, 5, 5, seed=3)).shape == (1,)
