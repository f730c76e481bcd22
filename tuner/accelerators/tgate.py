"""T-GATE: stop computing cross-attention (and classifier-free guidance) after `gate_step`, and
reuse self-attention every `sp_interval` steps before the gate and every `fi_interval` after it,
once `warmup` steps have run in full.

tgate generates through its own `pipe.tgate(...)` method and leaves its patched attention
`forward`s and caches behind; its footprint declares them, so `patch` takes them back. With
DeepCache it must run through tgate's DeepCache loaders, which reset DeepCache at the gate (plain
DeepCache + T-GATE crashes when the first step after the gate is a cached one), so T-GATE absorbs
DeepCache.

On PixArt-α/Σ (a transformer) tgate's own PixArt loaders apply it the same way, on the
transformer's attention modules; DeepCache has no transformer to run on there.

tgate's attention caches also outlive a generation: on DeepCache's cached steps the deep blocks
are skipped, so their attention modules reach a "reuse" step without having cached anything in
the current call, and reused the previous call's tensors (other images, or a crash at another
batch size). Every generation therefore starts from the state of a fresh application.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping

from .base import Accelerator, Footprint, Generate, IntKnob, NoEffect, Params, Unsupported

# tgate's loaders for transformer pipelines, by pipeline class (its SD and SDXL loaders: below).
TRANSFORMER_LOADERS = {"PixArtSigmaPipeline": "TgatePixArtSigmaLoader",
                       "PixArtAlphaPipeline": "TgatePixArtAlphaLoader"}


def changes_anything(params: Params, steps: int) -> bool:
    """Whether T-GATE's step schedule reuses anything, or drops guidance, within `steps` steps."""
    from tgate.tgate_utils import tgate_scheduler

    if params["gate_step"] < steps:
        return True
    cached = {"ca": False, "sa": False}
    for step in range(steps):
        ca, sa, _ = tgate_scheduler(cur_step=step, gate_step=params["gate_step"],
                                    sp_interval=params["sp_interval"],
                                    fi_interval=params["fi_interval"], warm_up=params["warmup"])
        for kind, flags in (("ca", ca), ("sa", sa)):
            if flags["reuse"] and cached[kind]:
                return True
            cached[kind] |= flags["cache"]
    return False


def _forget_caches(pipe) -> None:
    """The state a fresh application starts from: no attention cache, DeepCache at step 0."""
    for module in _denoiser(pipe).modules():
        if type(module).__name__ == "Attention":
            module.__dict__.pop("cache", None)
    if "deepcache" in pipe.__dict__:  # as tgate itself resets it at the gate
        pipe.deepcache.disable()
        pipe.deepcache.enable()


def _denoiser(pipe):
    return pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer


def _is_sdxl(pipe) -> bool:
    """tgate has one loader for SD pipelines and one for SDXL's."""
    from ..families import SDXL, family_of  # the families name the accelerators' combos

    return family_of(pipe) is SDXL


class TGate(Accelerator):
    name = "tgate"
    space = {"gate_step": IntKnob(5, 19), "sp_interval": IntKnob(2, 9),
             "fi_interval": IntKnob(1, 5), "warmup": IntKnob(1, 3)}
    absorbs = ("deepcache",)
    denoisers = ("unet", "transformer")
    # The loaders add `pipe.tgate` (and `pipe.deepcache`, the DeepCache helper they enable) and
    # replace `forward` on every attention module, which keeps its `cache` there.
    footprint = Footprint(pipe=("tgate", "deepcache"),
                          modules={"unet": ("forward", "cache"),
                                   "transformer": ("forward", "cache")})

    def check(self, pipe, params, *, steps, absorbed):
        kind = type(pipe).__name__
        if getattr(pipe, "unet", None) is None and kind not in TRANSFORMER_LOADERS:
            raise Unsupported(f"tgate has loaders for SD, SDXL and PixArt-α/Σ pipelines, not "
                              f"for a {kind}")
        if not absorbed and not changes_anything(params, steps):
            raise NoEffect(f"tgate gate_step={params['gate_step']}, warmup={params['warmup']} "
                           f"reuse nothing within {steps} steps")

    def canonical(self, pipe, params, *, steps, height, width):
        # tgate_scheduler gates at step gate_step - 1 and after (and tgate's DeepCache loaders
        # reset DeepCache there): a gate at or beyond steps + 1 is never reached, so every such
        # gate runs the same steps, and fi_interval (after the gate) plays no part in them.
        if params["gate_step"] > steps:
            return {**params, "gate_step": steps + 1, "fi_interval": 1}
        return params

    @contextlib.contextmanager
    def attach(self, pipe, params: Params, generate: Generate, *,
               absorbed: Mapping[str, Params]):
        import tgate

        if generate != pipe.__call__:
            raise TypeError("tgate replaces the pipeline call, so it must be applied first")
        deepcache = absorbed.get("deepcache")
        if type(pipe).__name__ in TRANSFORMER_LOADERS:
            getattr(tgate, TRANSFORMER_LOADERS[type(pipe).__name__])(pipe)
        elif deepcache is None:
            loader = tgate.TgateSDXLLoader if _is_sdxl(pipe) else tgate.TgateSDLoader
            loader(pipe)
        else:
            loader = (tgate.TgateSDXLDeepCacheLoader if _is_sdxl(pipe)
                      else tgate.TgateSDDeepCacheLoader)
            loader(pipe, **deepcache)
        tgate_call = functools.partial(
            pipe.tgate, gate_step=params["gate_step"], sp_interval=params["sp_interval"],
            fi_interval=params["fi_interval"], warm_up=params["warmup"])

        def run(*args, **kwargs):
            _forget_caches(pipe)
            return tgate_call(*args, **kwargs)

        try:
            yield run
        finally:
            if deepcache is not None:
                pipe.deepcache.disable()

