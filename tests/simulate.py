"""A deterministic stand-in for time, for testing how the tuner measures.

`FlopClock` counts the floating-point work of every Linear and Conv2d the pipeline runs (a global
forward hook, so no module keeps a hook of ours) and reports it as seconds: a configuration's
simulated speedup is then exactly the work it saves, noise-free. `faults` makes a seeded share of
the timed runs several times slower, as a busy neighbour does.

`memoize_generation` serves a repeated generation of the same configuration and batch from a
cache, with the work it cost the first time: generation is deterministic (fixed seeds), so this
changes no image and no simulated time, and lets a test time hundreds of runs in seconds while
every configuration still runs through the real accelerators once.
"""

from __future__ import annotations

import contextlib
import json
import random

import torch
from torch.nn.modules.module import register_module_forward_hook

RATE = 1e9  # simulated FLOP/s


class FlopClock:
    """A `tuner.timing.Clock` whose seconds are the work done, plus injected slowdowns."""

    def __init__(self, *, fault_rate: float = 0.0, slowdown: tuple[float, float] = (3, 20),
                 seed: int = 0):
        self.flops = 0.0
        self.extra = 0.0  # seconds added by faults
        self.fault_rate, self.slowdown = fault_rate, slowdown
        self.rng = random.Random(seed)
        self._since_sync = 0.0
        self.faults = 0

    def count(self, module, args, output) -> None:
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and \
                isinstance(output, torch.Tensor):
            self.add(2.0 * module.weight[0].numel() * output.numel())

    def add(self, flops: float) -> None:
        self.flops += flops
        self._since_sync += flops

    def now(self) -> float:
        return self.flops / RATE + self.extra

    def sync(self) -> None:
        # A run ends (and the next one begins) at a sync: make the work since the last sync
        # take several times longer, now and then.
        if self.fault_rate and self.rng.random() < self.fault_rate:
            self.extra += (self.rng.uniform(*self.slowdown) - 1) * self._since_sync / RATE
            self.faults += 1
        self._since_sync = 0.0


@contextlib.contextmanager
def counting(clock: FlopClock):
    handle = register_module_forward_hook(clock.count)
    try:
        yield clock
    finally:
        handle.remove()


# (config key, first image of the batch, batch size) -> (images, flops); shared by all tests
_CACHE: dict[tuple, tuple[torch.Tensor, float]] = {}


@contextlib.contextmanager
def memoize_generation(monkeypatch, evaluator, clock: FlopClock, *, tag: str = ""):
    """Serve repeated generations of `evaluator` from the cache (see the module's docstring)."""
    import tuner.accelerators as accelerators
    import tuner.evaluator as evaluator_module

    applied = ["plain"]
    real_apply, real_generate = accelerators.apply, evaluator._generate

    @contextlib.contextmanager
    def tracking_apply(pipe, config, **kwargs):
        with real_apply(pipe, config, **kwargs) as run:
            applied.append(json.dumps(config, sort_keys=True))
            try:
                yield run
            finally:
                applied.pop()

    def generate(run, batch):
        key = (tag, applied[-1] if run is not evaluator.pipe else "plain", batch["first"],
               batch["count"])
        if key not in _CACHE:
            before = clock.flops
            images = real_generate(run, batch)
            _CACHE[key] = (images, clock.flops - before)
            return images
        images, flops = _CACHE[key]
        clock.add(flops)
        return images

    monkeypatch.setattr(evaluator_module.accelerators, "apply", tracking_apply)
    monkeypatch.setattr(evaluator, "_generate", generate)
    with counting(clock):
        yield


def work_of(config, *, tag: str = "") -> float:
    """The simulated work of one batch (the first) of a configuration that has run."""
    key = json.dumps(config, sort_keys=True) if config != "plain" else "plain"
    return next(flops for (t, k, first, _), (_, flops) in _CACHE.items()
                if t == tag and k == key and first == 0)


def configs_run(tag: str = "") -> list[dict]:
    """Every configuration generated under `tag` so far."""
    return [json.loads(k) for k in {k for (t, k, _, _) in _CACHE if t == tag and k != "plain"}]
