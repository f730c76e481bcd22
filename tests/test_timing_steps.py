"""Runs judged step by step (Run.steps, timing.step_envelope), against synthetic step times:
nothing sleeps, every number is exact or seeded."""

from __future__ import annotations

import random

import pytest

from test_timing import FakeClock
from tuner.timing import (PlainRuns, Run, TimingPolicy, measure_speedup, step_envelope,
                          timed_run)


class SteppedMachine:
    """Runs of `steps` denoising steps and a remainder on a fake clock. A plain step takes
    `step` seconds; the accelerated runs are DeepCache-like: a full step (a plain one) at every
    `interval`-th position, shallow ones (`shallow` seconds) between. `slowed(kind, index)`
    gives the positions of that run whose step a burst slows `slow` times; `jitter` is each
    step's own (log-normal, seeded)."""

    def __init__(self, clock: FakeClock, *, steps=10, step=0.1, shallow=0.02, interval=2,
                 remainder=0.05, slow=2.0, slowed=lambda kind, index: (), jitter=0.0,
                 seed=0):
        self.clock, self.n, self.step, self.shallow = clock, steps, step, shallow
        self.interval, self.remainder, self.slow, self.slowed = interval, remainder, slow, slowed
        self.rng, self.jitter = random.Random(seed), jitter
        self.count = {"plain": 0, "accelerated": 0}

    def works(self, kind: str) -> list[float]:
        if kind == "plain":
            return [self.step] * self.n
        return [self.step if i % self.interval == 0 else self.shallow for i in range(self.n)]

    def _run(self, kind: str) -> Run:
        hit = set(self.slowed(kind, self.count[kind]))
        self.count[kind] += 1
        steps = tuple(w * (self.slow if i in hit else 1.0)
                      * (self.rng.lognormvariate(0.0, self.jitter) if self.jitter else 1.0)
                      for i, w in enumerate(self.works(kind)))
        run = timed_run(lambda: self.clock.advance(sum(steps) + self.remainder), self.clock)[1]
        return Run(run.start, run.seconds, steps)

    @property
    def truth(self) -> float:
        return (sum(self.works("plain")) + self.remainder) / \
            (sum(self.works("accelerated")) + self.remainder)

    def plain_run(self) -> Run:
        return self._run("plain")

    def accelerated_run(self) -> Run:
        return self._run("accelerated")


def _measure(machine: SteppedMachine, policy: TimingPolicy):
    clock = machine.clock
    plain = PlainRuns(clock, policy)
    for _ in range(4):
        plain.add(machine.plain_run())
    warmup = machine.accelerated_run()
    return measure_speedup(machine.plain_run, machine.accelerated_run, plain, warmup=warmup)


def test_a_burst_over_some_steps_of_every_plain_run_no_longer_moves_the_speedup():
    """Every timed plain run has one step (a different one each time) slowed 2x by a burst,
    the accelerated runs none: whole runs agree with each other, so the run-level trust rule
    keeps them all and the speedup read high (10 % here; failed before step times were
    judged); step by step, each slowed step is taken at its neighbours' clean value."""
    def slowed(kind, index):
        return (index % 10,) if kind == "plain" and index >= 4 else ()

    runs = _measure(SteppedMachine(FakeClock(), slowed=slowed), TimingPolicy(steps=False))
    machine = SteppedMachine(FakeClock(), slowed=slowed)
    steps = _measure(machine, TimingPolicy(steps=True))
    assert runs.value > machine.truth * 1.05  # the run-level envelope is fooled
    assert steps.value == pytest.approx(machine.truth, rel=1e-9)
    assert steps.rejected == 0


def test_a_burst_over_a_full_step_of_an_accelerated_run_is_judged_against_that_position():
    """DeepCache's full and shallow steps differ by 5x: a slowed full step is compared with
    the full steps at its position in the configuration's other runs, not with the shallow
    steps beside it (which it would always exceed)."""
    def slowed(kind, index):
        return (2,) if kind == "accelerated" and index == 1 else ()

    machine = SteppedMachine(FakeClock(), slowed=slowed, slow=1.5)
    found = _measure(machine, TimingPolicy(steps=True))
    assert found.value == pytest.approx(machine.truth, rel=1e-9)
    assert found.rejected == 0


@pytest.mark.parametrize("seed", range(5))
def test_quiet_the_step_level_estimate_equals_the_run_level_one_within_jitter(seed):
    """No burst, 3 % jitter per step: the runs judged step by step read what whole runs read,
    within the jitter of the estimate (the two may stop after different numbers of pairs) (a step slower than its position's fastest only by
    jitter is kept as it is)."""
    make = lambda: SteppedMachine(FakeClock(), jitter=0.03, seed=seed)  # noqa: E731
    machine = make()
    runs = _measure(make(), TimingPolicy(steps=False))
    steps = _measure(machine, TimingPolicy(steps=True))
    assert steps.value == pytest.approx(runs.value, rel=0.02)
    assert steps.speedup.low < machine.truth < steps.speedup.high
    assert steps.value == pytest.approx(machine.truth, rel=0.03)


def test_the_envelope_keeps_clean_steps_and_leaves_runs_without_comparable_steps_alone():
    policy = TimingPolicy(steps=True)
    clean = [Run(float(i), 1.0, (0.3, 0.3, 0.3)) for i in range(3)]
    burst = Run(3.0, 1.3, (0.3, 0.6, 0.3))
    other = Run(4.0, 1.0, (0.5, 0.4))  # another number of steps
    bare = Run(5.0, 1.0)  # no step times
    found = step_envelope([*clean, burst, other, bare], policy=policy)
    assert all(found[r] is r for r in (*clean, other, bare))
    assert found[burst].steps == pytest.approx((0.3, 0.3, 0.3))
    assert found[burst].seconds == pytest.approx(1.0)  # the remainder kept: 0.1
    assert found[burst].start == burst.start
    # references judge, and are not returned
    assert step_envelope([burst], clean, policy=policy)[burst].seconds == pytest.approx(1.0)
    # a run alone has no neighbour to be judged by
    assert step_envelope([burst], policy=policy)[burst] is burst
