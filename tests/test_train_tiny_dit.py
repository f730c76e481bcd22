"""tools/train_tiny_dit.py end to end on the CPU, at toy step counts: a few training steps, the
export, the exported folder loaded offline by FluxPipeline, and diffusers' caches applied to it
through `transformer.enable_cache` and undone bit for bit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

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


def generate(pipe, steps: int, cfg: float = 1.0) -> torch.Tensor:
    """Two images; with `cfg` > 1, FluxPipeline's true classifier-free guidance (a second,
    "uncond" transformer call a step)."""
    return pipe(["a small red circle in the top left", "a large blue cross at the bottom"],
                num_inference_steps=steps, height=64, width=64, output_type="pt",
                max_sequence_length=pipe.tokenizer_2.model_max_length, true_cfg_scale=cfg,
                negative_prompt=["", ""] if cfg > 1 else None,
                generator=torch.Generator().manual_seed(0)).images


def test_the_export_is_a_flux_pipeline_with_the_shipped_vae_and_the_training_log(tool, exported,
                                                                                pipe):
    from diffusers import FluxPipeline, FluxTransformer2DModel

    assert isinstance(pipe, FluxPipeline)
    assert isinstance(pipe.transformer, FluxTransformer2DModel)
    shipped = tool.shipped_vae().state_dict()
    # stored as float16: the shipped VAE's weights, rounded once
    assert all(torch.equal(v, shipped[k].half().to(v.dtype))
               for k, v in pipe.vae.state_dict().items())
    stored = [load_file(f) for f in exported.rglob("*.safetensors")]
    assert stored and all(v.dtype == torch.float16 for s in stored for v in s.values()
                          if v.is_floating_point())
    assert pipe.tokenizer_2.model_max_length == tool.TEXT_LENGTH
    log = json.loads((exported / "training.json").read_text())
    assert log["stages"]["dit"]["steps"] == 2 and log["text_length"] == tool.TEXT_LENGTH
    image = generate(pipe, 2)
    assert image.shape == (2, 3, 64, 64) and torch.isfinite(image).all()


def test_the_pipeline_tokenizes_with_tiny_shapes_shipped_tokenizer(pipe):
    from transformers import CLIPTokenizer

    shipped = CLIPTokenizer.from_pretrained(TOOL.parents[1] / "tuner" / "weights" / "tiny-shapes",
                                            subfolder="tokenizer")
    captions = ["a small red circle in the top left", "a photo of a cat", ""]
    for tokenizer in (pipe.tokenizer, pipe.tokenizer_2):
        assert tokenizer(captions)["input_ids"] == shipped(captions)["input_ids"]


def test_training_conditions_the_transformer_as_the_pipeline_does(tool, pipe, tmp_path):
    """The text embeddings the transformer is trained on are those FluxPipeline gives it."""
    from tuner import shapes

    trainer = tool.DitTrainer(tool.parser().parse_args(["train", "--out", str(tmp_path)]))
    trainer.models = {name: getattr(pipe, name) for name in tool.TRAINED}
    rows = torch.tensor([0, 77, len(shapes.scenes())])  # the last row: the empty caption
    captions = [shapes.scenes()[0].caption(), shapes.scenes()[77].caption(), ""]
    with torch.no_grad():
        pooled, sequence = trainer.encode(rows)
        expected, expected_pooled, _ = pipe.encode_prompt(
            captions, prompt_2=None, max_sequence_length=pipe.tokenizer_2.model_max_length)
    assert torch.allclose(sequence, expected, atol=1e-6)
    assert torch.allclose(pooled, expected_pooled, atol=1e-6)


def test_export_of_a_missing_checkpoint_is_one_line_and_writes_nothing(tool, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        tool.main(["export", str(tmp_path / "none.safetensors"), "--to", str(tmp_path / "w")])
    assert exit.value.code != 0
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"no checkpoint at {tmp_path / 'none.safetensors'}")
    assert not (tmp_path / "w").exists()


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


@pytest.mark.parametrize("cfg", [1.0, 4.0])
@pytest.mark.parametrize("cache", ["fbcache", "taylorseer", "magcache", "fastercache", "pab"])
def test_each_cache_acts_on_the_exported_pipeline_and_disable_cache_undoes_it_bit_for_bit(
        pipe, cache, cfg):
    steps = 4
    plain = generate(pipe, steps, cfg)
    pipe.transformer.enable_cache(cache_configs(pipe, steps)[cache])
    try:
        cached = generate(pipe, steps, cfg)
    finally:
        pipe.transformer.disable_cache()
    assert not torch.equal(cached, plain)  # the cache skipped something
    assert torch.equal(generate(pipe, steps, cfg), plain)
