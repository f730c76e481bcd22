"""MagCache: skip the transformer's blocks while the accumulated error predicted from the
model's magnitude ratios (how the residual's norm changes from step to step) stays under
`threshold`, at most `max_skip_steps` in a row, never in the first `retention_ratio` of the
steps (Ma et al. 2025, "MagCache: Fast Video Generation with Magnitude-Aware Cache",
arXiv:2506.09045). A skipped step adds the last residual to its input.

The ratios are the model's, for its step count. diffusers ships `FLUX_MAG_RATIOS`, calibrated
on FLUX.1-dev at 28 steps (resampled to other step counts by nearest neighbour, which is only
an approximation); they are used for a FLUX.1-dev architecture at 28 steps. For any other model
or step count the ratios are calibrated once, with diffusers' `calibrate=True` (a generation
that skips nothing and records the ratios), at the first generation of a configuration, and
cached per transformer (its weights), scheduler, step count, size and guidance for the
process. The calibration's seconds are counted apart from the timing (`calibration_seconds`), as
CUDA graphs' capture is.

Under true classifier-free guidance (a FLUX transformer without guidance embeds, run with
`true_cfg_scale`) FluxPipeline calls the transformer twice a step, in the cache contexts "cond"
and "uncond", and diffusers keeps one MagCache state per context, each counting its own steps.
The residuals of the two branches change differently from step to step, so each branch is
calibrated and decides with its own ratios, as MagCache's reference code does for its CFG
models (Wan 2.1: separate ratios and accumulators for the conditional and unconditional calls,
github.com/Zehong-Ma/MagCache). diffusers' config holds one list of ratios: the head block's
hook reads it through `BranchRatios`, which gives the ratios of the branch being run.

Ranges, with their reasons (diffusers' defaults: threshold 0.06, max_skip_steps 3, retention
0.2, which gave a random FLUX.1-dev 1.99x on an H200 with the shipped ratios; MagCache's own
FLUX.1-dev result, 2.8x on an A800, is at threshold 0.24, K 5, retention 0.1, and its
FLUX-Kontext one, 2.0x, at 0.05, 4, 0.2):
* `threshold` 0.02-0.30 by 0.02: from a third of the default to past the published 0.24;
* `max_skip_steps` 1-6: the paper's K, default 3, published 4-5, one more for the fast end;
* `retention_ratio` 0.1-0.4 by 0.1: default 0.2, published 0.1-0.2; fewer protected steps is
  faster, more is safer.
With the ratios given, which steps are skipped is fixed; but they may not be known before the
first generation, so `canonical` merges only what the code path proves equal: retention ratios
that protect the same number of steps, and `max_skip_steps` that cannot bind (at least the
number of steps left after the protected ones).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time

from .base import DecimalKnob, IntKnob
from .cache import DiffusersCache, cache_hooks, enabled, others

_ratios: dict[tuple, dict[str, list[float]]] = {}  # per `calibration_key`, per branch
_spent = {"calibration": 0.0, "calibrations": 0}
SHIPPED_STEPS = 28  # FLUX_MAG_RATIOS' length: the step count they were calibrated at


def calibration_seconds() -> float:
    """Seconds spent calibrating (and enabling) MagCache in this process."""
    return _spent["calibration"]


def calibrations() -> int:
    """How many calibration runs this process made."""
    return _spent["calibrations"]


def clear() -> None:
    _ratios.clear()


def retention_steps(ratio: float, steps: int) -> int:
    """The protected steps, as diffusers counts them (hooks/mag_cache.py)."""
    return int(ratio * steps + 0.5)


def _is_flux_dev(transformer) -> bool:
    config = transformer.config
    return (type(transformer).__name__ == "FluxTransformer2DModel"
            and config.get("num_layers") == 19 and config.get("num_single_layers") == 38
            and bool(config.get("guidance_embeds")))


GUIDANCE = ("guidance_scale", "true_cfg_scale")  # the call options that steer the trajectory


def calibration_key(pipe, *, steps: int, height, width, guidance=()) -> tuple:
    """What ratios depend on: the transformer's weights and architecture, the scheduler and its
    config, the step count, the image size and the guidance (`guidance`: the call's
    `GUIDANCE` options and whether it has negative prompts, which decide the branches)."""
    transformer = pipe.transformer
    config = json.dumps({k: v for k, v in dict(transformer.config).items()
                         if not k.startswith("_")}, sort_keys=True, default=str)
    scheduler = json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str)
    return (id(transformer), next(transformer.parameters()).data_ptr(),
            hashlib.sha256(config.encode()).hexdigest()[:12], type(pipe.scheduler).__name__,
            hashlib.sha256(scheduler.encode()).hexdigest()[:12], steps, height, width,
            tuple(guidance))


def guidance_of(kwargs) -> tuple:
    """The part of a call's keyword arguments `calibration_key` takes as its guidance."""
    return (*(kwargs.get(name) for name in GUIDANCE),
            any(kwargs.get(name) is not None
                for name in ("negative_prompt", "negative_prompt_embeds")))


def computed_steps(ratios, params, *, steps: int) -> tuple[int, ...]:
    """The steps (from 0) one branch computes with these ratios and knobs; it skips the others.
    diffusers' rule (hooks/mag_cache.py, MagCacheHeadHook), in its float32 arithmetic."""
    import torch

    ratios = torch.as_tensor(ratios, dtype=torch.float32)
    kept = retention_steps(params["retention_ratio"], steps)
    ratio, err, run, computed = 1.0, 0.0, 0, []
    for step in range(steps):
        if step >= kept:
            ratio *= ratios[step] if step < len(ratios) else 1.0
            run += 1
            err += abs(1.0 - ratio)
            if computed and err <= params["threshold"] and run <= params["max_skip_steps"]:
                continue
            ratio, err, run = 1.0, 0.0, 0
        computed.append(step)
    return tuple(computed)


def _generators(kwargs) -> list:
    found = kwargs.get("generator")
    return [] if found is None else list(found) if isinstance(found, (list, tuple)) else [found]


def calibrate(pipe, generate, args, kwargs, *, steps: int) -> dict[str, list[float]]:
    """One generation with `calibrate=True` (nothing skipped), the ratios of each of its
    branches (cache contexts: "cond" and "uncond" under true CFG) recorded; the generators in
    `kwargs` are put back to their state, so the next generation is unchanged."""
    from diffusers import MagCacheConfig
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK

    transformer, found = pipe.transformer, {}
    with enabled(transformer, MagCacheConfig(calibrate=True, num_inference_steps=steps)):
        for hook in cache_hooks(transformer, _MAG_CACHE_BLOCK_HOOK):
            if hook.is_tail:
                step = hook._perform_calibration_step

                def record(state, residual, step=step, states=hook.state_manager):
                    step(state, residual)
                    found.setdefault(states.context.name, []).append(
                        state.calibration_ratios[-1])

                hook._perform_calibration_step = record
        states = [g.get_state() for g in _generators(kwargs)]
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # diffusers prints the ratios
                generate(*args, **{**kwargs, "output_type": "latent"})
        finally:
            for g, state in zip(_generators(kwargs), states):
                g.set_state(state)
    counts = {branch: len(ratios) for branch, ratios in found.items()}
    if not found or set(counts.values()) != {steps}:
        raise RuntimeError(f"magcache calibration recorded {counts or 'no'} ratios in "
                           f"{steps} steps")
    return found


class BranchRatios:
    """A MagCacheConfig as the head block's hook reads it, with the ratios of the branch being
    run (its cache context) as `mag_ratios`; everything else is the config's."""

    def __init__(self, config, ratios: dict[str, list[float]], states):
        import torch

        self._config, self._states = config, states
        self._ratios = {branch: torch.tensor(r) for branch, r in ratios.items()}

    def __getattr__(self, name):
        return getattr(self._config, name)

    @property
    def mag_ratios(self):
        branch = self._states.context.name
        if branch not in self._ratios:
            raise RuntimeError(f"magcache: no ratios calibrated for the branch {branch!r} "
                               f"(calibrated: {', '.join(sorted(self._ratios))})")
        return self._ratios[branch]


def per_branch(transformer, ratios: dict[str, list[float]]) -> None:
    """Let the MagCache enabled on `transformer` decide each branch with its own ratios (the
    head hook is removed with the cache by `disable_cache`)."""
    from diffusers.hooks.mag_cache import _MAG_CACHE_LEADER_BLOCK_HOOK

    for hook in cache_hooks(transformer, _MAG_CACHE_LEADER_BLOCK_HOOK):
        hook.config = BranchRatios(hook.config, ratios, hook.state_manager)


class MagCache(DiffusersCache):
    name = "magcache"
    space = {"threshold": DecimalKnob("0.02", "0.30", "0.02"), "max_skip_steps": IntKnob(1, 6),
             "retention_ratio": DecimalKnob("0.1", "0.4", "0.1")}
    conflicts = others(name)
    on_unet = "MagCache attaches nothing to a UNet's blocks"
    preparation_seconds = staticmethod(calibration_seconds)

    def skips(self, params, *, steps):
        return retention_steps(params["retention_ratio"], steps) < steps

    def canonical(self, pipe, params, *, steps, height, width):
        kept = retention_steps(params["retention_ratio"], steps)
        return {**params, "retention_ratio": min(kept, steps),
                "max_skip_steps": min(params["max_skip_steps"], max(steps - kept, 0))}

    def config(self, pipe, params, *, steps: int = SHIPPED_STEPS, ratios=None):
        from diffusers import MagCacheConfig
        from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

        return MagCacheConfig(threshold=params["threshold"],
                              max_skip_steps=params["max_skip_steps"],
                              retention_ratio=params["retention_ratio"],
                              num_inference_steps=steps,
                              mag_ratios=FLUX_MAG_RATIOS if ratios is None else ratios)

    @contextlib.contextmanager
    def attach(self, pipe, params, generate, *, absorbed):
        # The step count, size and guidance are known at the call: the cache is enabled there,
        # again whenever the ratios' key changes (`calibration_key`), after a calibration where
        # the ratios are not known yet.
        with contextlib.ExitStack() as stack:
            current: list = [None]

            def run(*args, **kwargs):
                steps = kwargs.get("num_inference_steps", SHIPPED_STEPS)
                shipped = _is_flux_dev(pipe.transformer) and steps == SHIPPED_STEPS
                key = ("shipped", steps) if shipped else calibration_key(
                    pipe, steps=steps, height=kwargs.get("height"), width=kwargs.get("width"),
                    guidance=guidance_of(kwargs))
                if current[0] != key:
                    began = time.perf_counter()
                    stack.close()
                    branches = None
                    if not shipped:
                        if key not in _ratios:
                            _ratios[key] = calibrate(pipe, generate, args, kwargs, steps=steps)
                            _spent["calibrations"] += 1
                        branches = _ratios[key]
                    stack.enter_context(enabled(pipe.transformer, self.config(
                        pipe, params, steps=steps,
                        ratios=None if branches is None else next(iter(branches.values())))))
                    if branches is not None and len(branches) > 1:
                        per_branch(pipe.transformer, branches)
                    current[0] = key
                    _spent["calibration"] += time.perf_counter() - began
                return generate(*args, **kwargs)

            yield run
