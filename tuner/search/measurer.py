"""What the search measures configurations with: the interface between it and a pipeline.

The search (runner, objective, confirm, heldout) knows configurations only through a
`Measurer`: it never touches a pipeline. `tuner.evaluator.Evaluator` measures a loaded
pipeline; a benchmark replays a recorded table through the same interface
(benchmarks/sampler_bench.py), as Optuna's samplers are one small abstract base
(`optuna.samplers.BaseSampler`) with contracts in its docstrings and several implementations.

A configuration is `{accelerator: {knob: value}}` (accelerators.Config).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..accelerators.base import NoEffect
from ..record import Failure, Pruned, QualityEstimate, SpeedEstimate
from ..setting import Setting
from ..stats import Interval
from ..timing import TimingPolicy

if TYPE_CHECKING:  # importing the interface must not import torch
    from ..accelerators import Config


@dataclass
class Evaluation:
    """What one configuration measured. `quality` is None when it was pruned for speed."""

    config: dict
    speed: SpeedEstimate
    quality: QualityEstimate | None
    pruned: Pruned | None  # Pruned.SLOW or LOSS, or None
    sample_images: Any = field(repr=False)  # uint8 tensor, the first few images (or None)
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went


class IdenticalOutput(NoEffect):
    """A configuration's images are bit-identical to the plain pipeline's: stored as its code
    (record.Failure.IDENTICAL), whose sentence is the message."""

    def __init__(self):
        super().__init__(Failure.IDENTICAL.text)


@dataclass
class Race:
    """Confirmed speeds of the raced configurations, in their order."""

    speeds: list[SpeedEstimate]
    baseline_latency: float  # median of the race's plain runs
    rounds: int


class Measurer(ABC):
    """Measures configurations of one setting against its plain pipeline.

    Attributes every implementation sets:

    * `setting`: what is measured (model, scheduler, steps, size, batch, samples, seed);
    * `timing`: the timing policy (the search counts progress at its `precision`);
    * `baseline`: None until `measure_baseline` ran; then an object with `clip_scores` (one
      per image of the quality set, which the search may replace with the study's stored
      ones, the study's single quality reference) and `latency` (timing.Stats, seconds per
      plain batch).
    """

    setting: Setting
    timing: TimingPolicy
    baseline: Any

    # -- the space ---------------------------------------------------------------------------

    @property
    @abstractmethod
    def device(self) -> str:
        """The device type ("cuda", "cpu") whose search space is searched (accelerators.members:
        some knobs exist on one device only)."""

    @abstractmethod
    def canonical_key(self, config: Config) -> str:
        """A string equal for configurations that run the same computation in this setting
        (and different for different ones): repeated configurations are answered from the
        earlier trial by it."""

    @abstractmethod
    def distinct_points(self, combo: str) -> int:
        """How many configurations of `combo` run different computations in this setting (a
        study whose trials answered that many keys has exhausted its space)."""

    @abstractmethod
    def check(self, config: Config) -> None:
        """Raise `accelerators.AcceleratorError` (NoEffect, Unsupported) when `config` cannot
        be evaluated, before any work; return None otherwise."""

    # -- measuring ---------------------------------------------------------------------------

    @abstractmethod
    def measure_baseline(self) -> Any:
        """Measure the plain pipeline once and set `baseline`; returns it."""

    @property
    @abstractmethod
    def plain_latency(self) -> float | None:
        """Seconds of a plain batch now (what a required time per batch is a speedup of);
        None before any plain run."""

    @abstractmethod
    def evaluate(self, config: Config, *, slower_than: float | None = None,
                 loss_budget: float | None = None) -> Evaluation:
        """Speed, then (unless pruned) quality, of `config`.

        `slower_than`: stop after the speed when its interval lies confidently below it
        (`pruned` = Pruned.SLOW, `quality` None). `loss_budget`: stop as soon as the
        loss is confidently over it (Pruned.LOSS). Raises
        `accelerators.AcceleratorError` when the configuration cannot be evaluated (including
        what only generating shows: `IdenticalOutput`, output identical to the plain
        pipeline's)."""

    @abstractmethod
    def race(self, configs: Sequence[Config],
             keep: Callable[[dict[int, Interval]], set[int]], *,
             max_rounds: int | None = None) -> Race:
        """Measure `configs` again against each other, round after round; after a round,
        `keep(intervals by index)` says which stay in the race. One speed per configuration,
        in their order."""

    @property
    @abstractmethod
    def held_out_seeds(self) -> tuple[int, int]:
        """The first and last per-image seeds of `held_out_quality`'s images."""

    @abstractmethod
    def held_out_quality(self, config: Config) -> QualityEstimate:
        """The loss of `config` on images no configuration was selected on (`held_out_seeds`),
        against the plain pipeline's images of those seeds."""


__all__ = ["Evaluation", "IdenticalOutput", "Measurer", "Race"]
