"""The timing replay (benchmarks/timing_replay.py) emulates measurement schemes on a recorded
trace with the tuner's own timing code: on a synthetic trace whose answer is known, every scheme
must find it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import timing_replay  # noqa: E402
from tuner.timing import TimingPolicy  # noqa: E402


def trace(pairs: int = 40, speedup: float = 2.0, slow: set[int] = frozenset()):
    """Plain and accelerated runs alternating, the machine slowing linearly by 20 % over the
    trace; accelerated runs whose index is in `slow` are disturbed (50 % slower). As the
    replay reads a recorded trace."""
    runs, now = [], 0.0
    for i in range(2 * pairs + 1):
        plain = 1.0 + 0.2 * i / (2 * pairs)
        seconds = plain if i % 2 == 0 else plain / speedup * (1.5 if i // 2 in slow else 1.0)
        runs.append({"kind": "accelerated" if i % 2 else "plain", "start": now,
                     "seconds": seconds, "apply_undo": 0.01 * (i % 2)})
        now += seconds
    return timing_replay.series_of(runs)


def test_every_scheme_measures_a_drifting_machine_exactly():
    runs = trace()
    assert timing_replay.reference(runs, TimingPolicy()).value == pytest.approx(2.0, rel=2e-3)
    for start in range(20):
        spent = []
        for k in (1, 2, 3):
            interval, seconds = timing_replay.measure(runs, start, k, TimingPolicy(), 0.05)
            assert interval.value == pytest.approx(2.0, rel=2e-3)
            # No noise: the minimum is enough, rounded up to whole brackets of k runs; from
            # the trace's start, with no run before to stand in for the warm-up, three runs.
            needed = TimingPolicy().min_pairs if start else 3
            assert interval.n == -(-needed // k) * k
            spent.append(seconds / interval.n)
        # Per accelerated run, fewer plain runs between them.
        assert spent[0] > spent[1] > spent[2]


def test_a_disturbed_run_is_set_aside_in_the_replay_as_in_the_tuner():
    runs = trace(slow={5})
    interval, _ = timing_replay.measure(runs, 4, 1, TimingPolicy(), 0.05)
    assert interval.value == pytest.approx(2.0, rel=2e-3)
    trusting = TimingPolicy(tolerance=1.0, max_tolerance=1.0)
    interval, _ = timing_replay.measure(runs, 4, 1, trusting, 0.05)
    assert interval.value < 1.95  # averaged in, the slow run drags the estimate down


def test_the_reference_sees_each_plain_run_once_and_pruning_stops_a_measurement_early():
    runs = trace()
    whole = timing_replay._whole(runs, TimingPolicy())
    assert len(whole.plain.runs) == len(runs[0])  # counted twice, jitter would look halved
    # Against an incumbent 50 % faster, the search stops at its minimum of pairs, pruned (its
    # interval includes the drift between moments, 6 % until learned: 25 % faster took 6).
    policy = TimingPolicy(min_pairs=3, max_pairs=12)
    pruned, short = timing_replay.measure(runs, 0, 1, policy, 0.0, slower_than=3.0)
    assert pruned.n == 3 and pruned.high < 3.0
    full, long = timing_replay.measure(runs, 0, 1, policy, 0.0)  # no precision is enough
    assert full.n == 12 and long > 3 * short
    # Earlier configurations' ratios form the prior: with exact ratios, a zero variance.
    prior = timing_replay.measure(runs, 0, 1, policy, 0.0, earlier=[[2.0, 2.0, 2.0]])[0]
    assert prior.value == pytest.approx(2.0, rel=2e-3)


def test_the_replay_stops_when_the_trace_ends():
    assert timing_replay.measure(trace(pairs=4), 3, 1, TimingPolicy(), 0.05) is None


def test_the_simulation_without_noise_measures_the_true_speedup_in_the_minimum_of_pairs():
    import random

    import timing_sim

    policy = TimingPolicy()
    process = timing_sim._Process(policy, 0.0, 0.0, random.Random(0))
    for _ in range(2):  # the first measurement, and one with a prior from it
        estimate, seconds = process.measure(0.05)
        assert estimate.value == pytest.approx(timing_sim.TRUTH)
        assert estimate.pairs == policy.min_pairs and estimate.rejected == 0
        assert seconds == pytest.approx(policy.min_pairs * (1 + 1 / timing_sim.TRUTH))
    # With 2 % jitter per run the intervals hold the truth in most measurements.
    process = timing_sim._Process(policy, 0.02, 0.0, random.Random(0))
    noisy = [process.measure(0.05)[0] for _ in range(20)]
    assert sum(e.speedup.low <= timing_sim.TRUTH <= e.speedup.high for e in noisy) >= 15
