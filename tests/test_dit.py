"""Diffusion-transformer families (FLUX.1, SD3/3.5, PixArt-Σ): each family's prompt encoding
gives its pipeline's call what `pipe(prompt=...)` would have computed, families are told from
components, model_index.json and checkpoint types, the presets build, `tuner models` lists
every name, a combo of another family is refused in one line, and `tuner run` answers on the
trained FLUX toy end to end.

All on the CPU at 64 px and 2-4 steps; the full-size presets are only built on the meta device.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping

import pytest
import torch

from tuner import presets
from tuner.accelerators import (ACCELERATORS, COMBOS, Accelerator, DecimalKnob, Footprint,
                                leftovers, register)
from tuner.families import (FLUX, PIXART_SIGMA, SD, SD3, SDXL, family_made_of, family_of,
                            family_of_checkpoint)
from tuner.families.flux import CACHES
from tuner.pipelines import family_named, load_pipeline, native_size, native_size_of

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def dit_pipes():
    pipes = {name: presets.build_pipeline(name) for name in
             ("tiny-flux", "tiny-sd3", "tiny-pixart-sigma")}
    pipes["tiny-shapes-dit"] = load_pipeline("tiny-shapes-dit", device=torch.device("cpu"))
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


def _images(pipe, **kwargs):
    with torch.inference_mode():
        return pipe(**kwargs, num_inference_steps=2, height=64, width=64, output_type="pt",
                    generator=[torch.Generator().manual_seed(7 + i)
                               for i in range(len(PROMPTS))]).images


@pytest.mark.parametrize("name, family, scale", [
    ("tiny-flux", FLUX, 3.5),  # guidance embedding: no negative batch
    ("tiny-shapes-dit", FLUX, 4.0),  # true CFG with the empty negative prompt, as trained
    ("tiny-sd3", SD3, 5.0), ("tiny-pixart-sigma", PIXART_SIGMA, 4.5)])
def test_encoded_prompts_generate_the_images_of_the_prompts(dit_pipes, name, family, scale):
    """What the evaluator passes (the family's embeddings and call options) generates exactly
    what the pipeline generates from the prompts themselves, guided the same way."""
    pipe = dit_pipes[name]
    assert family_of(pipe) is family
    guided = family.classifier_free(pipe, scale)
    with torch.inference_mode():
        embeds = family.encode(pipe, PROMPTS, guidance=guided)
    options = family.call_options(pipe, scale)
    assert guided == (name != "tiny-flux")
    assert ("negative_prompt_embeds" in embeds) == guided
    if family is FLUX:
        assert set(options) == {"max_sequence_length",
                                "true_cfg_scale" if guided else "guidance_scale"}
    if family is PIXART_SIGMA:
        assert {"prompt_attention_mask", "negative_prompt_attention_mask"} <= set(embeds)
    if family is SD3:
        assert {"pooled_prompt_embeds", "negative_pooled_prompt_embeds"} <= set(embeds)
    direct = {**options, "negative_prompt": [""] * len(PROMPTS)} if guided else options
    assert torch.equal(_images(pipe, **embeds, **options), _images(pipe, prompt=PROMPTS,
                                                                  **direct))


def test_the_toy_is_generated_with_true_cfg_at_its_trained_text_length(dit_pipes):
    pipe = dit_pipes["tiny-shapes-dit"]
    assert not FLUX.embedded_guidance(pipe) and FLUX.sequence_length(pipe) == 16
    assert not FLUX.classifier_free(pipe, 1.0)
    assert FLUX.call_options(pipe, 4.0) == {"true_cfg_scale": 4.0, "max_sequence_length": 16}
    flux_dev = dit_pipes["tiny-flux"]
    assert FLUX.embedded_guidance(flux_dev) and not FLUX.classifier_free(flux_dev, 3.5)


def test_families_are_told_from_components_model_index_and_checkpoint_types(dit_pipes):
    index = json.loads((presets.WEIGHTS / "tiny-shapes-dit" / "model_index.json").read_text())
    assert family_made_of(index) is FLUX
    sd3 = {k: [] for k in ("transformer", "vae", "text_encoder", "text_encoder_2",
                           "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3")}
    assert family_made_of(sd3) is SD3
    assert family_made_of({"transformer": [], "text_encoder": [], "tokenizer": [], "vae": []}) \
        is PIXART_SIGMA
    for name, family in (("tiny-sd3", SD3), ("tiny-pixart-sigma", PIXART_SIGMA)):
        assert family_of(dit_pipes[name]) is family
        assert family.denoiser(dit_pipes[name]) is dit_pipes[name].transformer
    for kind, family in (("flux-dev", FLUX), ("flux-schnell", FLUX), ("sd3", SD3),
                         ("sd35_medium", SD3), ("sd35_large", SD3), ("xl_base", SDXL),
                         ("v1", SD)):
        assert family_of_checkpoint(kind) is family, kind
    assert not PIXART_SIGMA.single_file
    assert family_named("black-forest-labs/FLUX.1-dev") is FLUX  # known: no download
    assert family_named("tiny-shapes-dit") is FLUX and family_named("sd3.5-random") is SD3


def test_presets_build_at_their_native_size(dit_pipes):
    for name in ("tiny-flux", "tiny-sd3", "tiny-pixart-sigma", "tiny-shapes-dit"):
        assert native_size(dit_pipes[name]) == native_size_of(name) == (64, 64), name
    assert presets.native_size("flux-random") == presets.native_size("sd3.5-random") == \
        presets.native_size("pixart-sigma-random") == (1024, 1024)
    assert presets.build_pipeline("tiny-flux", seed=3).transformer.state_dict()[
        "proj_out.weight"].equal(presets.build_pipeline("tiny-flux", seed=3).transformer
                                 .state_dict()["proj_out.weight"])


@pytest.mark.parametrize("name, billions", [("flux-random", 11.90), ("sd3.5-random", 2.24),
                                            ("pixart-sigma-random", 0.61)])
def test_full_size_presets_are_their_models_transformers(name, billions):
    """Built on the meta device (no memory, no initialisation): FLUX.1-dev's 11.9 B
    parameters, SD3.5 medium's 2.24 B (and its 0.23 B positional table), PixArt-Σ's 0.61 B."""
    import diffusers

    arch = presets.DIT_ARCHITECTURES[name]
    family = {"flux": FLUX, "sd3": SD3, "pixart-sigma": PIXART_SIGMA}[arch.kind]
    with torch.device("meta"):
        model = getattr(diffusers, family.denoiser_class)(**arch.transformer)
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == billions
    assert arch.small_text and all(t.width in (768, 1280, 4096) for t in arch.text)


def test_models_lists_every_name_with_its_family_combos_and_meaning(capsys):
    from tuner.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    blocks = {b.split("  (")[0]: b for b in out.split("\n") if b and not b.startswith(" ")}
    for name in ("SD1.5", "SD2.1", "SDXL", "black-forest-labs/FLUX.1-dev",
                 "black-forest-labs/FLUX.1-schnell", "stabilityai/stable-diffusion-3.5-medium",
                 "stabilityai/stable-diffusion-3.5-large",
                 "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", *presets.names()):
        assert name in blocks, name
    flux = out.split("flux-random  (")[1].split("\n\n")[0].split("\n")
    assert flux[0].startswith("FLUX.1, random-weight preset")
    assert "timing only" in flux[2] and "never timed" in flux[2]
    assert "real in kind, not in magnitude" in out.split("tiny-shapes-dit  (")[1].split("\n")[2]
    assert "combos: deepcache, deepcache+tome" in out.split("SDXL  (")[1].split("\n")[1]


class _FirstBlockCache(Accelerator):
    """diffusers' FirstBlockCache through `enable_cache`: the least an end-to-end run of a
    FLUX pipeline needs, here until the caches are accelerators of the package."""

    name = "fbcache"
    space = {"threshold": DecimalKnob("0.2", "1.0", "0.4")}
    footprint = Footprint(modules={"transformer": ("forward", "_diffusers_hook",
                                                   "_cache_config")})

    @contextlib.contextmanager
    def attach(self, pipe, params: Mapping, generate, *, absorbed):
        from diffusers import FirstBlockCacheConfig

        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=params["threshold"]))
        try:
            yield generate
        finally:
            pipe.transformer.disable_cache()


@pytest.fixture
def fbcache():
    """A FLUX combo registered for the test (the package's own, where it has one)."""
    if "fbcache" in COMBOS:
        yield
        return
    register(_FirstBlockCache)
    COMBOS["fbcache"] = ("fbcache",)
    try:
        yield
    finally:
        COMBOS.pop("fbcache")
        ACCELERATORS.pop("fbcache")


@pytest.mark.parametrize("pipe, combo, family", [("tiny-shapes-dit", "deepcache", "FLUX.1"),
                                                 ("tiny-sd", "fbcache", "SD1.x/2.x"),
                                                 ("tiny-sd3", "all", "SD3/3.5")])
def test_a_combo_of_another_family_is_refused_in_one_line(fbcache, tmp_path, capsys, pipe,
                                                          combo, family):
    from tuner.cli import main

    assert main(["run", "--pipe", pipe, "--combo", combo, "--device", "cpu", "--studies",
                 str(tmp_path / "s"), "--output", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"to {family} pipelines ({pipe})" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("pipe, flag, value, family, nearest", [
    ("tiny-flux", "--height", "72", "FLUX.1", "64 or 80"),
    ("tiny-shapes-dit", "--width", "100", "FLUX.1", "96 or 112"),
    ("tiny-sd3", "--height", "1000", "SD3/3.5", "992 or 1008"),
    ("tiny-pixart-sigma", "--width", "8", "PixArt-Σ", "16"),
    ("tiny-sd", "--height", "100", "SD1.x/2.x", "96 or 104")])
def test_a_size_the_family_cannot_generate_is_refused_naming_the_nearest(tmp_path, capsys, pipe,
                                                                        flag, value, family,
                                                                        nearest):
    from tuner.cli import main

    assert main(["run", "--pipe", pipe, flag, value, "--device", "cpu", "--studies",
                 str(tmp_path / "s"), "--output", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"tuner: error: {flag} {value} is not")
    assert f"which {family} (" in err and err.endswith(f"needs: nearest {nearest}\n")
    assert list(tmp_path.iterdir()) == []


def test_the_dit_families_size_rule_is_what_their_pipelines_generate(dit_pipes):
    """A multiple of 16 generates at that size; 72 (a multiple of the VAE's 8, not of 16) does
    not: FluxPipeline silently makes 64 px, SD3's and PixArt-Σ's pipelines fail."""
    for name, family in (("tiny-flux", FLUX), ("tiny-sd3", SD3),
                         ("tiny-pixart-sigma", PIXART_SIGMA)):
        pipe = dit_pipes[name]
        assert family_of(pipe) is family and family.size_multiple == 16
        family.check_size(height=80, width=64)
        with pytest.raises(ValueError, match="height 72 is not a multiple of 16"):
            family.check_size(height=72, width=64)
        kwargs = family.encode(pipe, PROMPTS[:1], guidance=False)
        options = {**family.call_options(pipe, 1.0), "num_inference_steps": 1,
                   "output_type": "pt"}
        with torch.inference_mode():
            assert pipe(**kwargs, **options, height=80, width=64).images.shape[-2:] == (80, 64)
            try:
                made = pipe(**kwargs, **options, height=72, width=64).images.shape[-2:]
            except (ValueError, RuntimeError):
                made = None
        assert made != (72, 64)
    assert SD.size_multiple == SDXL.size_multiple == 8


def test_a_flux_family_combo_is_a_cache_and_all_means_the_familys(fbcache):
    from tuner.options import RunOptions

    assert FLUX.combos == tuple(c for c in CACHES if c in COMBOS) and "fbcache" in FLUX.combos
    assert not set(FLUX.combos) & set(SD.combos)
    assert RunOptions(pipe="tiny-shapes-dit").combos == FLUX.combos
    assert RunOptions(pipe="tiny-sd").combos == SD.combos
    assert RunOptions(pipe="tiny-shapes-dit").scheduler == "FlowMatchEuler"
    assert RunOptions(pipe="tiny-sd").scheduler == "DDIM"


def test_tuner_run_answers_on_the_trained_flux_toy(fbcache, tmp_path, capsys):
    from tuner.cli import main

    output = tmp_path / "search_params.json"
    assert main(["run", "--pipe", "tiny-shapes-dit", "--device", "cpu", "--combo", "all",
                 "--trials", "3", "--steps", "4", "--batch-size", "2", "--num-samples", "4",
                 "--timing-pairs", "1", "--max-timing-pairs", "1", "--threads", "1",
                 "--no-progress", "--studies",
                 str(tmp_path / "studies"), "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    (entry,) = results["settings"].values()
    assert entry["setting"]["pipe"] == "tiny-shapes-dit"
    assert entry["setting"]["scheduler"] == "FlowMatchEuler"
    assert entry["setting"]["clip_model"] == "tiny-shapes-clip"
    assert "fbcache" in json.dumps(entry["answers"])
