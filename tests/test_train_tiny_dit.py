"""tools/train_tiny_dit.py end to end on the CPU, at toy step counts: a few training steps, the
export, the exported folder loaded offline by FluxPipeline, and diffusers' caches applied to it
through `transformer.enable_cache` and undone bit for bit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).resolve().parents[1] / "tools" / "train_tiny_dit.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("train_tiny_dit", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tool, tmp_path_factory):
    out = tmp_path_factory.mktemp("dit")
    tool.main(["train", "--out", str(out / "run"), "--dit-steps", "2", "--dit-batch", "4",
               "--warmup", "1", "--log-every", "1"])
    return tool.export(out / "run" / "checkpoint.safetensors", out / "weights")


@pytest.fixture(scope="module")
def pipe(exported, monkeypatch_module):
    from diffusers import FluxPipeline

    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    pipe = FluxPipeline.from_pretrained(exported)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as m:
        yield m


def generate(pipe, steps: int) -> torch.Tensor:
    return pipe(["a small red circle in the top left", "a large blue cross at the bottom"],
                num_inference_steps=steps, height=64, width=64, output_type="pt",
                max_sequence_length=pipe.tokenizer_2.model_max_length,
                generator=torch.Generator().manual_seed(0)).images


def test_the_export_is_a_flux_pipeline_with_the_shipped_vae_and_the_training_log(tool, exported,
                                                                                pipe):
    from diffusers import FluxPipeline, FluxTransformer2DModel

    assert isinstance(pipe, FluxPipeline)
    assert isinstance(pipe.transformer, FluxTransformer2DModel)
    shipped = tool.shipped_vae().state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in pipe.vae.state_dict().items())
    assert pipe.tokenizer_2.model_max_length == tool.TEXT_LENGTH
    log = json.loads((exported / "training.json").read_text())
    assert log["stages"]["dit"]["steps"] == 2 and log["text_length"] == tool.TEXT_LENGTH
    image = generate(pipe, 2)
    assert image.shape == (2, 3, 64, 64) and torch.isfinite(image).all()


def cache_configs(pipe, steps: int) -> dict:
    """One configuration per cache, each set to act within `steps` steps."""
    from diffusers import (FasterCacheConfig, FirstBlockCacheConfig, MagCacheConfig,
                           PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig)
    from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

    def now():
        return pipe.current_timestep

    return {
        "fbcache": FirstBlockCacheConfig(threshold=10.0),  # reuses every step after the first
        "taylorseer": TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1),
        "magcache": MagCacheConfig(mag_ratios=FLUX_MAG_RATIOS, num_inference_steps=steps,
                                   threshold=10.0, max_skip_steps=2, retention_ratio=0.0),
        # FasterCache's default timestep range (-1, 681): a range that lets it skip at the
        # second step fails (`TypeError`: it extrapolates from two outputs it has not cached yet)
        "fastercache": FasterCacheConfig(current_timestep_callback=now,
                                         is_guidance_distilled=True, tensor_format="BCHW"),
        "pab": PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1001),
            current_timestep_callback=now),
    }


@pytest.mark.parametrize("cache", ["fbcache", "taylorseer", "magcache", "fastercache", "pab"])
def test_each_cache_acts_on_the_exported_pipeline_and_disable_cache_undoes_it_bit_for_bit(
        pipe, cache):
    steps = 4
    plain = generate(pipe, steps)
    pipe.transformer.enable_cache(cache_configs(pipe, steps)[cache])
    try:
        cached = generate(pipe, steps)
    finally:
        pipe.transformer.disable_cache()
    assert not torch.equal(cached, plain)  # the cache skipped something
    assert torch.equal(generate(pipe, steps), plain)
