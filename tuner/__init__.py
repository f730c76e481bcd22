"""tuner: find the fastest DeepCache / ToMe / T-GATE settings of a Stable Diffusion pipeline
within an image-quality budget; `tuner.accelerate(pipe, "search_params.json")` applies them."""

__all__ = ["AccelerateError", "Accelerated", "NotFinal", "TunedElsewhere", "accelerate"]


def __getattr__(name):  # lazy: `import tuner` (and the CLI) must not import torch
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")


def __dir__():  # the lazy names too, so that dir(tuner) and completion find them (PEP 562)
    return sorted(set(globals()) | set(__all__))
