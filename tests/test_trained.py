"""The trained preset `tiny-shapes` and its CLIP give a real quality signal.

The CLIP tells generated images apart by their prompts; CLIP-score loss grows with how
aggressive an accelerator is; and the default 2 % budget separates feasible from infeasible
configurations in every combo. Everything runs on the CPU at the tuner's own measurement: images
with one fixed seed each, CLIP score 100 * max(cos, 0), loss (base - accelerated) / base of the
mean scores, which is the mean of the per-image differences over the mean base score.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuner import shapes
from tuner.accelerators import ALL_COMBOS, COMBOS, apply, leftovers
from tuner.metrics import default_clip_model, load_clip_scorer, to_uint8
from tuner.pipelines import load_pipeline, native_size, native_size_of
from tuner.presets import TRAINED, TRAINED_CLIP, is_preset, is_trained_preset, trained_path
from tuner.stats import Interval, relative_loss_interval

STEPS = 25  # at 20, DeepCache N=2 already flips the colour or shape of 3 % of the images
BUDGET = 0.02  # the tuner's default --req-score-loss
PROMPTS = tuple(shapes.prompts(32, seed=0))

DEEPCACHE_MILD = {"cache_interval": 2, "cache_branch_id": 0}
DEEPCACHE_AGGRESSIVE = {"cache_interval": 5, "cache_branch_id": 0}
TOME_MILD = {"ratio": 0.1, "max_downsample": 4}
TOME_AGGRESSIVE = {"ratio": 0.9, "max_downsample": 4}
TGATE_MILD = {"gate_step": 19, "sp_interval": 9, "fi_interval": 1, "warmup": 3}
TGATE_AGGRESSIVE = {"gate_step": 5, "sp_interval": 2, "fi_interval": 5, "warmup": 1}
MILD = {"deepcache": DEEPCACHE_MILD, "tome": TOME_MILD, "tgate": TGATE_MILD}
AGGRESSIVE = {"deepcache": DEEPCACHE_AGGRESSIVE, "tome": TOME_AGGRESSIVE,
              "tgate": TGATE_AGGRESSIVE}


@pytest.fixture(scope="module")
def pipe():
    pipe = load_pipeline("tiny-shapes", device=torch.device("cpu"))
    yield pipe
    assert leftovers(pipe) == []


@pytest.fixture(scope="module")
def scorer():
    return load_clip_scorer(default_clip_model("tiny-shapes"))


@pytest.fixture(autouse=True)
def _pipeline_stays_plain(request):
    yield
    if "pipe" in request.fixturenames:
        assert leftovers(request.getfixturevalue("pipe")) == []


def generate(run, prompts) -> torch.Tensor:
    """uint8 images, image i with seed i, as the tuner's evaluator makes them."""
    generators = [torch.Generator("cpu").manual_seed(i) for i in range(len(prompts))]
    with torch.inference_mode():
        out = run(prompt=list(prompts), num_inference_steps=STEPS, output_type="pt",
                  generator=generators)
    return to_uint8(out.images)


_PLAIN: list[torch.Tensor] = []
_SCORES: dict[str, torch.Tensor] = {}  # config -> CLIP scores of PROMPTS


def plain_images(pipe) -> torch.Tensor:
    if not _PLAIN:
        _PLAIN.append(generate(pipe, PROMPTS))
    return _PLAIN[0]


def scores(pipe, scorer, config=None) -> torch.Tensor:
    """CLIP scores of the images of PROMPTS, plain (config None) or accelerated."""
    key = repr(sorted((config or {}).items()))
    if key not in _SCORES:
        if config is None:
            images = plain_images(pipe)
        else:
            with apply(pipe, config, steps=STEPS) as run:
                images = generate(run, PROMPTS)
        _SCORES[key] = scorer.score(images, PROMPTS)
    return _SCORES[key]


def loss(pipe, scorer, config) -> Interval:
    """Relative CLIP-score loss of `config` against the plain pipeline, from the per-image
    scores paired by seed, with its 95 % interval: as the tuner's evaluator computes it."""
    return relative_loss_interval([float(x) for x in scores(pipe, scorer)],
                                  [float(x) for x in scores(pipe, scorer, config)])


# ---------------------------------------------------------------------------------------------
# The dataset


def test_shapes_are_deterministic_and_captioned_from_their_labels():
    a, b = shapes.sample(6, seed=3), shapes.sample(6, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (6, 3, 64, 64) and 0 <= a.images.min() and a.images.max() <= 1
    assert not torch.equal(a.images, shapes.sample(6, seed=4).images)
    fixed = [shapes.Scene(2, 0, 0, 1), shapes.Scene(0, 5, 8, 0)]
    batch = shapes.sample(2, scene_list=fixed)
    assert batch.captions == ["a large red triangle in the top left",
                              "a small orange circle in the bottom right"]
    assert shapes.scenes()[int(shapes.scene_index(batch.labels)[1])] == fixed[1]
    words = set(shapes.words())
    assert all(set(s.caption().split()) <= words for s in shapes.scenes())


def test_prompts_are_distinct_and_seeded():
    assert len(set(shapes.prompts(540))) == 540
    assert shapes.prompts(16, seed=1) == shapes.prompts(16, seed=1) != shapes.prompts(16)
    assert shapes.prompts(32)[:16] == shapes.prompts(16)  # a longer list extends a shorter
    with pytest.raises(ValueError):
        shapes.prompts(541)
    classes = shapes.class_prompts()
    assert len(set(classes)) == 30 and classes[0] == "a red circle"
    assert classes[len(shapes.COLOURS) * 4 + 5] == "an orange cross"


# ---------------------------------------------------------------------------------------------
# Shipping


def test_trained_presets_are_ordinary_folders_in_the_package():
    assert is_trained_preset("tiny-shapes") and not is_preset("tiny-shapes")
    assert not is_trained_preset("tiny-sd") and not is_trained_preset("tiny-shapes-clip")
    assert default_clip_model("tiny-shapes") == "tiny-shapes-clip"
    assert default_clip_model("tiny-sd") == "tiny-clip"
    assert native_size_of("tiny-shapes") == (64, 64)
    pipe_dir, clip_dir = Path(trained_path("tiny-shapes")), Path(trained_path("tiny-shapes-clip"))
    assert (pipe_dir / "model_index.json").is_file() and (clip_dir / "config.json").is_file()
    for folder in (pipe_dir / "unet", pipe_dir / "vae", pipe_dir / "text_encoder", clip_dir):
        assert list(folder.glob("*.safetensors"))
    files = {f for name in [*TRAINED, *TRAINED_CLIP] for f in Path(trained_path(name)).rglob("*")
             if f.is_file()}
    assert sum(f.stat().st_size for f in files) < 10 * 2 ** 20


def test_weights_are_stored_as_float16_and_load_as_float32(pipe, scorer):
    """Half the bytes shipped (`tools/train_tiny.py`'s export stores them so); the CPU still
    computes in float32."""
    from safetensors import safe_open

    for name in [*TRAINED, *TRAINED_CLIP]:
        for path in Path(trained_path(name)).rglob("*.safetensors"):
            with safe_open(str(path), "pt") as f:
                dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
            assert dtypes == {"F16"}, path
    models = [pipe.unet, pipe.vae, pipe.text_encoder, scorer.model]
    assert {p.dtype for model in models for p in model.parameters()} == {torch.float32}


def test_the_package_data_covers_the_weights():
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["tuner"]
    shipped = {f for pattern in patterns for f in (root / "tuner").glob(pattern)}
    files = {f for f in (root / "tuner" / "weights").rglob("*") if f.is_file()}
    assert files and files <= shipped


def test_they_load_with_from_pretrained_like_any_model(pipe):
    from diffusers import DiffusionPipeline
    from transformers import CLIPModel, CLIPTokenizer

    loaded = DiffusionPipeline.from_pretrained(trained_path("tiny-shapes"))
    assert type(loaded).__name__ == "StableDiffusionPipeline"
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    assert len(pipe.unet.down_blocks) == 4 and pipe.unet.config.layers_per_block == 2
    assert native_size(pipe) == (64, 64)
    model = CLIPModel.from_pretrained(trained_path("tiny-shapes-clip"))
    tokenizer = CLIPTokenizer.from_pretrained(trained_path("tiny-shapes-clip"))
    assert model.config.vision_config.image_size == 64
    assert len(tokenizer("a small red circle in the top left")["input_ids"]) == 10  # words


# ---------------------------------------------------------------------------------------------
# The CLIP tells images apart by their prompts


def test_clip_scores_own_prompts_far_above_shuffled_ones(pipe, scorer):
    own = scores(pipe, scorer)
    shuffled = scorer.score(plain_images(pipe), PROMPTS[1:] + PROMPTS[:1])
    assert (own > shuffled).float().mean() >= 0.9
    assert own.mean() > 2 * shuffled.mean()


def test_clip_retrieves_the_shape_and_colour_of_generated_images(pipe, scorer):
    scene_of = {s.caption(): s for s in shapes.scenes()}
    truth = torch.tensor([scene_of[p].shape * len(shapes.COLOURS) + scene_of[p].colour
                          for p in PROMPTS])
    classes = scorer.text_embeddings(shapes.class_prompts())
    predicted = (scorer.image_embeddings(plain_images(pipe)) @ classes.T).argmax(1)
    assert (predicted == truth).float().mean() >= 0.8


# ---------------------------------------------------------------------------------------------
# Loss grows with aggressiveness; the budget separates configurations


def test_loss_grows_with_deepcache_interval(pipe, scorer):
    # Not only the estimates: the intervals do not overlap.
    assert loss(pipe, scorer, {"deepcache": DEEPCACHE_AGGRESSIVE}).low > \
        loss(pipe, scorer, {"deepcache": DEEPCACHE_MILD}).high


def test_loss_grows_with_tome_ratio(pipe, scorer):
    # ToMe is the weakest knob on this toy: at 0.9 it changes a few images a lot, the rest
    # little, so its interval is wide; its estimate is still well above 0.1's interval.
    assert loss(pipe, scorer, {"tome": TOME_AGGRESSIVE}).value > \
        loss(pipe, scorer, {"tome": TOME_MILD}).high + 0.005


@pytest.mark.parametrize("combo", list(ALL_COMBOS))  # tiny-shapes is a UNet
def test_budget_separates_configurations_of_each_combo(pipe, scorer, combo):
    mild = loss(pipe, scorer, {name: MILD[name] for name in COMBOS[combo]})
    aggressive = loss(pipe, scorer, {name: AGGRESSIVE[name] for name in COMBOS[combo]})
    assert mild.value <= BUDGET < aggressive.low  # feasible, and confidently infeasible
