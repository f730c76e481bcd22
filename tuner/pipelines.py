"""Loading the pipeline once: model names, schedulers, device and precision."""

from __future__ import annotations

from pathlib import Path

import torch

from . import presets
from .messages import first_line
from .presets import is_preset

MODELS = {
    "SD1.5": "runwayml/stable-diffusion-v1-5",
    "SD2.1": "stabilityai/stable-diffusion-2-1",
    "SDXL": "stabilityai/stable-diffusion-xl-base-1.0",
}

# name -> (diffusers class name, config overrides)
SCHEDULERS = {
    "DDIM": ("DDIMScheduler", {}),
    "DPM-Solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "UniPCMultistepScheduler": ("UniPCMultistepScheduler", {}),
}
SCHEDULER_ALIASES = {"UniPC": "UniPCMultistepScheduler", "DPMSolver++": "DPM-Solver++"}


class PipelineError(ValueError):
    """A pipeline, scheduler or device that cannot be used, with a one-line reason."""


def scheduler_name(name: str) -> str:
    """The canonical scheduler name for `name` (accepting aliases such as UniPC)."""
    canonical = SCHEDULER_ALIASES.get(name, name)
    if canonical not in SCHEDULERS:
        raise PipelineError(f"unknown scheduler {name!r}; choose from "
                            f"{', '.join([*SCHEDULERS, *SCHEDULER_ALIASES])}")
    return canonical


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cuda", "cpu") and not device.startswith("cuda:"):
        raise PipelineError(f"unknown device {device!r}; choose auto, cuda or cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def check_pipe_name(name: str) -> None:
    """Reject what can be rejected before loading: a local-looking path that does not exist."""
    if is_preset(name) or name in MODELS:
        return
    path = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or path.exists() or name.count("/") != 1
    if looks_local and not path.is_dir():
        raise PipelineError(
            f"model {name!r} is not a directory, a hub id (owner/name), one of "
            f"{', '.join(MODELS)} or a preset ({', '.join(presets.ARCHITECTURES)})")


def load_pipeline(name: str, *, device: torch.device, dtype: torch.dtype | None = None,
                  seed: int = 0):
    """The pipeline `name` (model alias, hub id, local path or preset), ready on `device`."""
    check_pipe_name(name)
    dtype = dtype or default_dtype(device)
    if is_preset(name):
        pipe = presets.build_pipeline(name, seed=seed, device=device, dtype=dtype)
    else:
        from diffusers import DiffusionPipeline

        source = MODELS.get(name, name)
        try:
            config = DiffusionPipeline.load_config(source)
            extra = {"safety_checker": None, "requires_safety_checker": False} \
                if "safety_checker" in config else {}
            pipe = DiffusionPipeline.from_pretrained(source, torch_dtype=dtype, **extra).to(device)
        except (OSError, ValueError) as err:
            raise PipelineError(f"cannot load model {name!r}: {first_line(err)}") from err
    if not hasattr(pipe, "unet"):
        raise PipelineError(f"model {name!r} has no UNet; tuner supports SD1.x/2.x/XL pipelines")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def set_scheduler(pipe, name: str) -> None:
    """Swap the pipeline's scheduler, keeping its noise schedule."""
    import diffusers

    class_name, overrides = SCHEDULERS[scheduler_name(name)]
    cls = getattr(diffusers, class_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)


def native_size(pipe) -> tuple[int, int]:
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return side, side


def native_size_of(name: str) -> tuple[int, int]:
    """`native_size` read from the model's configs, without loading any weights."""
    if is_preset(name):
        arch = presets.ARCHITECTURES[name]
        sample, vae_blocks = arch.unet["sample_size"], len(arch.vae["block_out_channels"])
    else:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        source = MODELS.get(name, name)
        try:
            sample = UNet2DConditionModel.load_config(source, subfolder="unet")["sample_size"]
            vae_blocks = len(AutoencoderKL.load_config(source, subfolder="vae")
                             ["block_out_channels"])
        except (OSError, ValueError) as err:
            raise PipelineError(f"cannot read the configs of {name!r}: "
                                f"{first_line(err)}") from err
    side = sample * 2 ** (vae_blocks - 1)
    return side, side
