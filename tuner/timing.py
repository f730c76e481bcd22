"""Latency measurement that a speedup objective can rely on.

GPU latency drifts by tens of percent within minutes, single runs come out slow, and a
launch-bound pipeline passes every hiccup of the host straight into its latency. So a speedup is
never one timing divided by another taken minutes apart: plain and accelerated runs are
interleaved, each accelerated run is compared with the mean of the plain runs just before and
just after it (which cancels linear drift), and the median of those ratios is the speedup.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch


class Clock(Protocol):
    def now(self) -> float: ...

    def sync(self) -> None: ...


class DeviceClock:
    """Host wall clock that first waits for the device's queued work."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    def now(self) -> float:
        return time.perf_counter()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def timed(fn: Callable[[], Any], clock: Clock) -> tuple[Any, float]:
    """Run `fn` once; return its result and its latency in seconds, device work included."""
    clock.sync()
    start = clock.now()
    result = fn()
    clock.sync()
    return result, clock.now() - start


@dataclass(frozen=True)
class Stats:
    median: float
    low: float
    high: float
    spread: float  # (high - low) / median
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if not samples:
            raise ValueError("no samples")
        median = statistics.median(samples)
        low, high = min(samples), max(samples)
        return cls(median, low, high, (high - low) / median if median else 0.0,
                   tuple(float(s) for s in samples))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Timer:
    """Warm up, repeat, report the median and the spread."""

    clock: Clock
    warmup: int = 1
    repeats: int = 5

    def measure(self, fn: Callable[[], Any]) -> Stats:
        for _ in range(self.warmup):
            timed(fn, self.clock)
        return Stats.of([timed(fn, self.clock)[1] for _ in range(self.repeats)])


@dataclass(frozen=True)
class Speedup:
    speedup: float  # median of the bracketed ratios
    ratios: Stats
    baseline: Stats  # plain runs, close in time to the accelerated ones
    accelerated: Stats

    @classmethod
    def bracketed(cls, baseline: Sequence[float], accelerated: Sequence[float]) -> Speedup:
        """Speedup from runs taken as b0 a1 b1 a2 b2 ... an bn."""
        if len(baseline) != len(accelerated) + 1 or not accelerated:
            raise ValueError("need one more baseline run than accelerated runs, around each")
        ratios = [(baseline[i] + baseline[i + 1]) / 2 / a for i, a in enumerate(accelerated)]
        stats = Stats.of(ratios)
        return cls(stats.median, stats, Stats.of(baseline), Stats.of(accelerated))


def interleave(run_baseline: Callable[[int], float], run_accelerated: Callable[[int], float],
               pairs: int) -> Speedup:
    """Alternate timed plain and accelerated runs (b0 a0 b1 a1 b2 ...) and bracket each a_i.

    Each callable gets the pair index and returns the seconds its timed run took.
    """
    baseline = [run_baseline(0)]
    accelerated = []
    for i in range(pairs):
        accelerated.append(run_accelerated(i))
        baseline.append(run_baseline(i))
    return Speedup.bracketed(baseline, accelerated)
