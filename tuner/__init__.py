"""tuner: find the fastest DeepCache / ToMe / T-GATE settings of a Stable Diffusion pipeline
within an image-quality budget; `tuner.accelerate(pipe, "search_params.json")` applies them."""


def __getattr__(name):  # lazy: `import tuner` (and the CLI) must not import torch
    if name in ("accelerate", "AccelerateError", "Accelerated"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")


__all__ = ["AccelerateError", "Accelerated", "accelerate"]
