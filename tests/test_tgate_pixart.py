"""T-GATE on PixArt-Σ (a transformer), through tgate's PixArt loader: it changes the output, its
undo is bit-identical and declared, and it is refused with DeepCache and on FLUX.

A tiny random PixArt-Σ (2 blocks, 8x8 latents), prompt embeddings given: no text encoder.
"""

from __future__ import annotations

import pytest
import torch

from tuner.accelerators import (COMBOS, Unsupported, apply, check, combos_for, denoisers_of,
                                leftovers)

STEPS = 6
TGATE = {"gate_step": 5, "sp_interval": 2, "fi_interval": 1, "warmup": 1}  # gate: step 5 of 6


@pytest.fixture(scope="module")
def pixart():
    from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline,
                           PixArtTransformer2DModel)

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=2, attention_head_dim=8, num_attention_heads=2, in_channels=4,
        out_channels=8, cross_attention_dim=16, caption_channels=32,
        norm_type="ada_norm_single", use_additional_conditions=False, patch_size=2)
    vae = AutoencoderKL(block_out_channels=[8], layers_per_block=1, latent_channels=4,
                        norm_num_groups=8, down_block_types=["DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D"])
    pipe = PixArtSigmaPipeline(tokenizer=None, text_encoder=None, vae=vae,
                               transformer=transformer, scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    mask = torch.ones(2, 8)
    pipe.embeds = {"prompt_embeds": torch.randn(2, 8, 32), "prompt_attention_mask": mask,
                   "negative_prompt_embeds": torch.randn(2, 8, 32),
                   "negative_prompt_attention_mask": mask, "negative_prompt": None}
    yield pipe
    assert leftovers(pipe) == []


def generate(pipe, run=None) -> torch.Tensor:
    with torch.inference_mode():
        return (run or pipe)(**pipe.embeds, num_inference_steps=STEPS, height=8, width=8,
                             output_type="latent", use_resolution_binning=False,
                             generator=[torch.Generator("cpu").manual_seed(s) for s in (1, 2)]
                             ).images


def test_tgate_alone_is_a_transformer_combo_only():
    assert COMBOS["tgate"] == ("tgate",)
    assert denoisers_of("tgate") == ("unet", "transformer")
    assert "tgate" in combos_for("transformer")
    assert "tgate" not in combos_for("unet", only=True)  # on a UNet it runs with DeepCache


def test_tgate_on_pixart_changes_output_and_undoes_exactly(pixart):
    from footprints import differences, snapshot, undeclared

    from tuner.accelerators.tgate import TGate

    base = generate(pixart)
    first = snapshot(pixart)
    generate(pixart)
    second = snapshot(pixart)
    with apply(pixart, {"tgate": TGATE}, steps=STEPS) as run:
        out = generate(pixart, run)
        inside = snapshot(pixart)
        assert torch.equal(generate(pixart, run), out)
    assert not torch.equal(out, base)
    assert leftovers(pixart) == []
    assert torch.equal(generate(pixart), base)
    assert undeclared((first, second), inside, TGate.footprint) == []
    assert differences(second, snapshot(pixart)) <= differences(first, second)


def test_tgate_on_pixart_is_refused_with_deepcache(pixart):
    config = {"tgate": TGATE, "deepcache": {"cache_interval": 2, "cache_branch_id": 0}}
    with pytest.raises(Unsupported, match="deepcache needs a UNet"):
        check(pixart, config, steps=STEPS)
    assert leftovers(pixart) == []


def test_tgate_is_refused_on_a_pipeline_it_has_no_loader_for():
    from types import SimpleNamespace

    flux = type("FluxPipeline", (), {})()
    flux.transformer = SimpleNamespace()
    with pytest.raises(Unsupported, match="PixArt-α/Σ pipelines, not for a FluxPipeline"):
        check(flux, {"tgate": TGATE}, steps=STEPS)
