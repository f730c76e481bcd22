"""Timing against a fake clock: nothing sleeps, every number is exact."""

from __future__ import annotations

import statistics

import pytest

from tuner.timing import Clock, DeviceClock, Speedup, Stats, Timer, interleave, timed


class FakeClock:
    """A clock the test advances by hand; it records every call."""

    def __init__(self, start: float = 100.0):
        self.t = start
        self.log: list[str] = []

    def now(self) -> float:
        self.log.append("now")
        return self.t

    def sync(self) -> None:
        self.log.append("sync")

    def advance(self, seconds: float) -> None:
        self.log.append(f"+{seconds}")
        self.t += seconds


def runner(clock: FakeClock, durations):
    """A function that takes the next of `durations` seconds each time it is called."""
    durations = iter(durations)

    def fn():
        clock.advance(next(durations))
        return "result"

    return fn


def test_fake_clock_is_a_clock():
    fake: Clock = FakeClock()  # satisfies the protocol structurally
    assert callable(fake.now) and callable(fake.sync)
    clock = DeviceClock("cpu")
    clock.sync()  # a no-op on CPU
    assert clock.now() <= clock.now()


def test_timed_syncs_before_and_after_and_returns_the_advanced_time():
    clock = FakeClock()
    result, seconds = timed(runner(clock, [2.5]), clock)
    assert result == "result"
    assert seconds == 2.5
    assert clock.log == ["sync", "now", "+2.5", "sync", "now"]


def test_timed_counts_work_the_sync_waits_for():
    class QueueClock(FakeClock):
        """sync() waits for queued device work: the time passes inside sync."""

        pending = 0.0

        def sync(self):
            super().sync()
            self.t += self.pending
            self.pending = 0.0

    clock = QueueClock()
    clock.pending = 7.0  # work queued before the timed call: must not be counted

    def enqueue():
        clock.pending += 3.0  # returns at once, the device works 3 s
        return None

    _, seconds = timed(enqueue, clock)
    assert seconds == 3.0


def test_timer_excludes_warmup_and_reports_median_and_spread():
    clock = FakeClock()
    fn = runner(clock, [50.0, 40.0, 2.0, 1.0, 4.0, 3.0, 6.0])
    stats = Timer(clock, warmup=2, repeats=5).measure(fn)
    assert stats.samples == (2.0, 1.0, 4.0, 3.0, 6.0)
    assert stats.median == 3.0
    assert (stats.low, stats.high) == (1.0, 6.0)
    assert stats.spread == pytest.approx((6.0 - 1.0) / 3.0)
    assert clock.log.count("sync") == 2 * 7  # every run, warm-ups included, is synced


def test_timer_without_warmup():
    clock = FakeClock()
    stats = Timer(clock, warmup=0, repeats=2).measure(runner(clock, [5.0, 1.0, 99.0]))
    assert stats.samples == (5.0, 1.0)
    assert stats.median == 3.0


def test_stats_of():
    s = Stats.of([4, 1, 3, 2])
    assert s.median == 2.5
    assert (s.low, s.high) == (1, 4)
    assert s.spread == (4 - 1) / 2.5
    assert s.samples == (4.0, 1.0, 3.0, 2.0)
    assert all(type(x) is float for x in s.samples)
    assert Stats.of([2.0]).spread == 0.0
    assert Stats.of([0.0, 0.0, 0.0]).spread == 0.0  # no division by zero
    assert Stats.of([1.0, 2.0, 9.0]).median == 2.0
    assert s.as_dict()["median"] == 2.5
    with pytest.raises(ValueError):
        Stats.of([])


def test_bracketed_uses_the_mean_of_the_neighbouring_baselines():
    sp = Speedup.bracketed([2.0, 4.0, 6.0], [1.5, 2.5])
    assert sp.ratios.samples == ((2 + 4) / 2 / 1.5, (4 + 6) / 2 / 2.5)
    assert sp.speedup == statistics.median([2.0, 2.0])
    assert sp.baseline.samples == (2.0, 4.0, 6.0)
    assert sp.accelerated.samples == (1.5, 2.5)


@pytest.mark.parametrize("drift", [0.05, 0.3, -0.02])
def test_bracketed_cancels_linear_drift(drift):
    true_ratio = 2.5
    pairs = 6
    # Runs at times 0, 1, 2, ...: b at even times, a at odd times; the plain latency drifts
    # linearly with time and the accelerated run is always true_ratio times faster.
    plain_at = [1.0 + drift * t for t in range(2 * pairs + 1)]
    baseline = plain_at[0::2]
    accelerated = [plain_at[t] / true_ratio for t in range(1, 2 * pairs, 2)]
    sp = Speedup.bracketed(baseline, accelerated)
    assert sp.speedup == pytest.approx(true_ratio, rel=1e-12)
    assert all(r == pytest.approx(true_ratio, rel=1e-12) for r in sp.ratios.samples)
    assert sp.ratios.spread == pytest.approx(0.0, abs=1e-12)
    # Comparing each accelerated run with the plain run just before it only is biased, and so
    # is comparing with the first baseline.
    before_only = [b / a for b, a in zip(baseline, accelerated)]
    assert statistics.median(before_only) != pytest.approx(true_ratio, rel=1e-3)
    assert baseline[0] / statistics.median(accelerated) != pytest.approx(true_ratio, rel=1e-3)


@pytest.mark.parametrize("baseline,accelerated", [
    ([1.0, 1.0], [0.5, 0.5]),  # same length
    ([1.0, 1.0, 1.0, 1.0], [0.5, 0.5]),  # two more
    ([1.0], []),  # no accelerated run
    ([], []),
    ([1.0, 1.0], []),
])
def test_bracketed_rejects_wrong_lengths(baseline, accelerated):
    with pytest.raises(ValueError):
        Speedup.bracketed(baseline, accelerated)


def test_interleave_alternates_and_brackets():
    calls = []
    times = {"b": iter([10.0, 12.0, 14.0, 16.0]), "a": iter([5.5, 6.5, 7.5])}

    def plain(i):
        calls.append(("b", i))
        return next(times["b"])

    def accelerated(i):
        calls.append(("a", i))
        return next(times["a"])

    sp = interleave(plain, accelerated, 3)
    assert [kind for kind, _ in calls] == ["b", "a", "b", "a", "b", "a", "b"]
    assert [i for kind, i in calls if kind == "a"] == [0, 1, 2]
    # The plain run that closes pair i gets the pair's index (it runs the pair's batch).
    closing = [calls[k + 1] for k, (kind, _) in enumerate(calls) if kind == "a"]
    assert closing == [("b", 0), ("b", 1), ("b", 2)]
    assert calls[0] == ("b", 0)
    assert sp.baseline.samples == (10.0, 12.0, 14.0, 16.0)
    assert sp.accelerated.samples == (5.5, 6.5, 7.5)
    assert sp.ratios.samples == (11 / 5.5, 13 / 6.5, 15 / 7.5)
    assert sp.speedup == 2.0


def test_interleave_returns_the_median_ratio_and_ignores_an_outlier():
    plain_times = iter([2.0] * 6)
    accelerated_times = iter([1.0, 1.0, 40.0, 0.8, 1.0])  # one run hit a hiccup

    sp = interleave(lambda i: next(plain_times), lambda i: next(accelerated_times), 5)
    assert sorted(sp.ratios.samples) == sorted([2.0, 2.0, 0.05, 2.5, 2.0])
    assert sp.speedup == 2.0
    assert sp.accelerated.median == 1.0

    # A slow plain run (inflating two neighbouring ratios) does not move the median either.
    plain_times = iter([2.0, 2.0, 2.0, 30.0, 2.0, 2.0, 2.0])
    sp = interleave(lambda i: next(plain_times), lambda i: 1.0, 6)
    assert sp.speedup == 2.0
    assert max(sp.ratios.samples) == 16.0


def test_interleave_with_no_pairs_is_an_error():
    with pytest.raises(ValueError):
        interleave(lambda i: 1.0, lambda i: 1.0, 0)
