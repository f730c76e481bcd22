"""Timing against a fake clock: nothing sleeps, every number is exact."""

from __future__ import annotations

import math
import random

import pytest

from tuner.timing import (Clock, DeviceClock, PlainRuns, Run, Stats, TimingPolicy,
                          bracket_ratio, choose_threads, measure_speedup, timed_run)


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
    result, run = timed_run(runner(clock, [2.5]), clock)
    assert result == "result"
    assert run.seconds == 2.5
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

    _, run = timed_run(enqueue, clock)
    assert run.seconds == 3.0


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


# -- bracketed pairs ---------------------------------------------------------------------------


class Machine:
    """Runs on a fake clock: plain runs take `plain` seconds, accelerated ones `plain / speedup`,
    except those listed as slowed (by index in their kind), which take `slow` times longer."""

    def __init__(self, clock: FakeClock, *, plain=1.0, speedup=2.0, slow=5.0,
                 slow_plain=(), slow_accelerated=(), drift=0.0):
        self.clock, self.plain, self.speedup, self.slow = clock, plain, speedup, slow
        self.slowed = {"plain": set(slow_plain), "accelerated": set(slow_accelerated)}
        self.count = {"plain": 0, "accelerated": 0}
        self.drift = drift  # seconds of plain latency gained per second of clock

    def _run(self, kind: str) -> Run:
        base = self.plain + self.drift * (self.clock.t - 100.0)
        seconds = base if kind == "plain" else base / self.speedup
        if self.count[kind] in self.slowed[kind]:
            seconds *= self.slow
        self.count[kind] += 1
        return timed_run(lambda: self.clock.advance(seconds), self.clock)[1]

    def plain_run(self) -> Run:
        return self._run("plain")

    def accelerated_run(self) -> Run:
        return self._run("accelerated")


def series(clock, policy=TimingPolicy(), runs=4, seconds=1.0) -> PlainRuns:
    plain = PlainRuns(clock, policy)
    for _ in range(runs):
        plain.add(timed_run(lambda: clock.advance(seconds), clock)[1])
    return plain


def test_bracket_ratio_interpolates_the_plain_latency_at_the_accelerated_middle():
    before, after = Run(0.0, 1.0), Run(1.5, 2.0)  # middles 0.5 and 2.5
    # At 1.25, 3/8 of the way: the plain latency is 1 + 3/8 there.
    assert bracket_ratio(before, Run(1.0, 0.5), after) == pytest.approx(1.375 / 0.5)
    # A short accelerated run near the later plain run: weighted toward it.
    assert bracket_ratio(Run(0.0, 1.0), Run(2.0, 0.5), Run(3.0, 2.0)) == \
        pytest.approx((1.0 + 1.0 * (2.25 - 0.5) / 3.5) / 0.5)


@pytest.mark.parametrize("drift", [0.0, 0.002, -0.002])
def test_measured_speedup_is_exact_under_linear_drift(drift):
    clock = FakeClock()
    machine = Machine(clock, drift=drift)
    plain = series(clock)
    warmup = machine.accelerated_run()
    found = measure_speedup(machine.plain_run, machine.accelerated_run, plain, warmup=warmup)
    # Linear in time, interpolated between the plain runs' middles: right to second order (a
    # run's length follows the drift at its start, not its middle: 0.1 % a run here).
    assert found.value == pytest.approx(2.0, rel=3e-3)
    assert found.pairs == TimingPolicy().min_pairs  # exact ratios: precise at the minimum
    assert found.rejected == 0
    assert found.baseline_latency / found.latency == pytest.approx(found.value)


def test_plain_runs_are_shared_by_consecutive_measurements():
    clock = FakeClock()
    machine = Machine(clock)
    plain = series(clock)
    measure_speedup(machine.plain_run, machine.accelerated_run, plain)
    first = dict(machine.count)
    measure_speedup(machine.plain_run, machine.accelerated_run, plain)
    # The second measurement opens with the first one's closing plain run: n plain runs each.
    assert machine.count["plain"] - first["plain"] == machine.count["accelerated"] \
        - first["accelerated"] == 3
    assert first["plain"] == 3  # the series' last run opened the first one too
    clock.advance(TimingPolicy().reuse_within + 1)  # too long ago: a fresh plain run first
    before = dict(machine.count)
    measure_speedup(machine.plain_run, machine.accelerated_run, plain)
    assert machine.count["plain"] - before["plain"] == 4


@pytest.mark.parametrize("slow_plain,slow_accelerated", [
    ((1,), ()),  # a plain run: its neighbours are compared with the next clean plain runs
    ((), (0,)),  # an accelerated run: against the configuration's fastest
    ((1, 2), ()),  # two plain runs in a row slowed alike
    ((), (0, 1, 3)),  # more slowed than trusted: still not averaged in
    ((0, 2, 4, 6, 8), ()),  # every other plain run
])
def test_slow_runs_are_set_aside_not_averaged_in(slow_plain, slow_accelerated):
    clock = FakeClock()
    machine = Machine(clock, slow_plain=slow_plain, slow_accelerated=slow_accelerated)
    plain = series(clock)
    found = measure_speedup(machine.plain_run, machine.accelerated_run, plain)
    assert found.value == pytest.approx(2.0, rel=1e-9)
    assert found.pairs >= TimingPolicy().min_pairs
    # Set aside: every slowed accelerated run, and any with no trusted plain run after it.
    assert found.rejected >= len([i for i in slow_accelerated if i < machine.count[
        "accelerated"]])
    assert found.pairs + found.rejected == machine.count["accelerated"]
    assert any(abs(r - 2.0) > 0.5 for r in found.ratios)  # they were seen, and set aside


@pytest.mark.parametrize("recent_plain", [False, True])
def test_runs_come_in_the_documented_order(recent_plain):
    """An opening plain run only when the series has no recent one, then per bracket an
    accelerated run and the plain run that closes it: the evaluator times the plain run on the
    batch of the accelerated run before it (evaluator._Turns)."""
    clock, rng, calls = FakeClock(), random.Random(5), []

    def run(kind, seconds):
        calls.append(kind)
        seconds *= 1 + rng.gauss(0, 0.05)  # noisy enough to take several pairs
        return timed_run(lambda: clock.advance(seconds), clock)[1]

    plain = PlainRuns(clock, TimingPolicy())
    if recent_plain:
        plain.add(timed_run(lambda: clock.advance(1.0), clock)[1])
    measure_speedup(lambda: run("p", 1.0), lambda: run("a", 0.5), plain)
    pairs = "".join(calls).removeprefix("" if recent_plain else "p")
    assert len(pairs) >= 6 and pairs == "ap" * (len(pairs) // 2)


def test_noisy_ratios_get_more_pairs_until_the_interval_is_precise():
    clock, rng = FakeClock(), random.Random(3)

    def run(seconds):  # every run, plain or accelerated, varies by about 1.5 %
        seconds *= 1 + rng.gauss(0, 0.015)
        return timed_run(lambda: clock.advance(seconds), clock)[1]

    def measured(policy):
        plain = PlainRuns(clock, policy)
        for _ in range(4):
            plain.add(run(1.0))
        return measure_speedup(lambda: run(1.0), lambda: run(0.5), plain)

    found = measured(TimingPolicy(drift=0.0, unknown_drift=0.0))  # no drift: this moment
    assert found.pairs > 3
    assert found.speedup.relative_half_width <= 0.02
    assert found.speedup.low < 2.0 < found.speedup.high
    # With the default drift between moments (6 % until a configuration was measured twice)
    # the measurement stops alike (more pairs cannot narrow it), and its interval says how far
    # a measurement at another moment may land: sqrt(2) x 6 % x its t quantile, and more.
    drifting = measured(TimingPolicy())
    assert drifting.pairs < TimingPolicy().max_pairs
    assert drifting.speedup.relative_half_width > 1.96 * math.sqrt(2) * 0.06


def test_earlier_configurations_lend_their_variance_to_the_next_one():
    """The first configuration on a noisy machine is on its own (a t quantile of 4.3 at 3
    pairs); the ones after it borrow the pooled variance of those before, so the same noise
    reaches the same precision in fewer pairs; the prior weighs at most prior_df pairs."""
    def measured(policy, configurations=6, seed=4):
        clock, rng = FakeClock(), random.Random(seed)

        def run(seconds):  # every run varies by about 3 %
            seconds *= 1 + rng.gauss(0, 0.03)
            return timed_run(lambda: clock.advance(seconds), clock)[1]

        plain = PlainRuns(clock, policy)
        for _ in range(4):
            plain.add(run(1.0))
        found = [measure_speedup(lambda: run(1.0), lambda: run(0.5), plain, precision=0.05)
                 for _ in range(configurations)]
        return plain, found

    alone, each_alone = measured(TimingPolicy(prior_df=0))
    assert alone.prior is None
    pooled, borrowing = measured(TimingPolicy(prior_df=4))
    assert borrowing[0].pairs == each_alone[0].pairs  # nothing to borrow yet
    assert sum(f.pairs for f in borrowing[1:]) < sum(f.pairs for f in each_alone[1:])
    assert pooled.prior.df == 4  # pooled over many more pairs than that, worth 4
    # a ratio of two runs' noise (1.5 x 0.03^2), the last window's plain runs its floor
    assert 0.5 * 0.03 ** 2 < pooled.prior.variance < 3 * 2 * 0.03 ** 2
    assert sum(f.speedup.low <= 2.0 <= f.speedup.high for f in borrowing) >= 5
    with pytest.raises(ValueError, match="prior_df"):
        TimingPolicy(prior_df=-1)


def test_a_decided_question_ends_the_measurement_early():
    clock = FakeClock()
    machine = Machine(clock, speedup=1.2)
    plain = series(clock, TimingPolicy(min_pairs=2, precision=0.0001))
    asked = []

    def decided(interval):
        asked.append(interval)
        return interval is not None and interval.high < 2.0

    found = measure_speedup(machine.plain_run, machine.accelerated_run, plain, decided=decided,
                            warmup=machine.accelerated_run())
    assert found.pairs == 2
    assert asked[0] is None  # asked after every bracket, with no interval before the minimum


@pytest.mark.parametrize("warmup", [False, True])
def test_two_runs_slowed_alike_do_not_judge_each_other(warmup):
    """At two pairs, the trust rule needs a third run of the configuration: the warm-up run, or
    without one a third pair. Otherwise two runs a neighbour slowed alike both pass."""
    clock = FakeClock()
    machine = Machine(clock, slow_accelerated=(1, 2) if warmup else (0, 1))
    plain = series(clock, TimingPolicy(min_pairs=2))
    first = machine.accelerated_run() if warmup else None  # clean: the slowed ones follow
    found = measure_speedup(machine.plain_run, machine.accelerated_run, plain,
                            warmup=first, decided=lambda interval: interval is not None)
    assert found.value == pytest.approx(2.0, rel=1e-9)  # not 0.4
    assert (found.pairs, found.rejected) == (2, 2)


def test_a_machine_that_never_settles_stops_at_the_cap_and_says_so():
    clock = FakeClock()
    policy = TimingPolicy(min_pairs=2, max_pairs=4)
    machine = Machine(clock, drift=0.3)  # every run 30 % slower than the one before
    plain = series(clock, policy)
    found = measure_speedup(machine.plain_run, machine.accelerated_run, plain)
    assert machine.count["accelerated"] == 3 * policy.max_pairs
    assert found.pairs == 0 and found.rejected == 3 * policy.max_pairs
    assert found.speedup.relative_half_width > 0.5  # the interval says how little is known
    assert plain.noisy()


def test_timing_policy_is_checked():
    with pytest.raises(ValueError):
        TimingPolicy(min_pairs=5, max_pairs=3)


def test_a_run_is_judged_against_as_many_neighbours_as_the_policy_says():
    """A machine slowing 2 % a run: each run is within 3 % of the one before it, but not of the
    one three runs back, so judged against 3 neighbours the slowing runs are set aside (the
    series itself is left empty: its tolerance stays at the policy's 3 %)."""
    from tuner.timing import Brackets

    for neighbours, trusted in ((1, 8), (3, 2)):
        brackets = Brackets(PlainRuns(FakeClock(), TimingPolicy(neighbours=neighbours)))
        brackets.plains.extend(Run(float(i), 1.0 + 0.02 * i) for i in range(8))
        assert len(brackets.trusted_plain()) == trusted
    with pytest.raises(ValueError, match="neighbours"):
        TimingPolicy(neighbours=0)


def test_choose_threads_takes_the_best_worst_case_and_prefers_fewer_threads():
    times = {1: [0.50, 0.50, 0.51, 0.52], 2: [0.30, 0.30, 2.4, 0.31], 4: [0.29, 0.29, 0.29, 0.7]}
    calls = {c: iter(t) for c, t in times.items()}
    best, seen = choose_threads(lambda c: next(calls[c]), [1, 2, 4], repeats=3)
    assert best == 1  # 2 threads are faster on average but collapse when the machine is busy
    assert seen[1] == [0.50, 0.51, 0.52]
    assert seen[2] == [0.30, 2.4]  # far slower than the best worst case: not measured further
    even = {1: [1.0] * 4, 2: [0.99] * 4}
    calls = {c: iter(t) for c, t in even.items()}
    assert choose_threads(lambda c: next(calls[c]), [1, 2], repeats=3)[0] == 1  # within 5 %


def _drifting_process(moves, seed=5, jitter=0.01, policy=TimingPolicy()):
    """A process measuring one configuration (key "c") once per entry of `moves`: its true
    speedup that moment is 2.0 times the entry; plain and accelerated runs jitter by 1 %."""
    clock, rng = FakeClock(), random.Random(seed)

    def run(seconds):
        seconds *= 1 + rng.gauss(0, jitter)
        return timed_run(lambda: clock.advance(seconds), clock)[1]

    plain = PlainRuns(clock, policy)
    for _ in range(4):
        plain.add(run(1.0))
    found = []
    for move in moves:
        found.append(measure_speedup(lambda: run(1.0), lambda: run(0.5 / move), plain,
                                     precision=0.05, key="c"))
        clock.advance(60.0)  # another moment
    return plain, found


def test_the_drift_between_moments_is_learned_from_one_configuration_measured_again():
    """Measured at moments where its speedup really was 2.0 x 1.08, 0.92, 1.08, 0.92, a
    configuration's intervals over 2-3 pairs (about +-5 % within one moment) would not hold
    the other moments' values; its repeated measurements show the drift, and the intervals
    after them hold them. Without drift, the floor alone (policy.drift) is added."""
    steady, _ = _drifting_process([1.0] * 4)
    assert steady.repeats == 3
    assert steady.between == pytest.approx(TimingPolicy().drift ** 2)
    drifting, found = _drifting_process([1.08, 0.92, 1.08, 0.92])
    assert drifting.between > 0.05 ** 2  # the moments' log speedups spread by 0.08
    last = found[-1].speedup
    assert last.low < 2.0 * 0.92 and 2.0 * 1.08 < last.high
    # the within-moment precision still ends each measurement: more pairs cannot help
    assert all(f.pairs < TimingPolicy().max_pairs for f in found)


def test_the_drift_is_learned_where_the_plain_runs_jitter_more_than_the_ratios():
    """Plain runs alternate 6 % slow and 6 % fast (one plain run's log variance reads about
    0.14 to `PlainRuns.floor`), while each bracket's interpolated plain latency, and so every
    ratio within one moment, stays within 1 %: the floor bounds the intervals but is no
    estimate of the measurements' own variance. The speedup moves 2.0 x 1.08, 0.92, ... between
    moments. Failed before: each measurement's within-moment variance was the floored one
    (about 0.05 over 2-3 pairs), which the DerSimonian-Laird excess subtracted from the
    moments' spread (about 0.009): no drift was left and `between` fell to the policy's 2 % floor,
    so the next interval held none of the other moments' values."""
    clock = FakeClock()
    flip = iter(range(10_000))

    def plain_run():
        seconds = 1.06 if next(flip) % 2 else 0.94
        return timed_run(lambda: clock.advance(seconds), clock)[1]

    plain = PlainRuns(clock, TimingPolicy())
    for _ in range(6):
        plain.add(plain_run())
    assert plain.floor > 0.1  # the bound: far above the ratios' spread
    found = []
    for move in [1.08, 0.92, 1.08, 0.92]:
        found.append(measure_speedup(plain_run, lambda: timed_run(
            lambda: clock.advance(0.5 / move), clock)[1], plain, precision=0.05, key="c"))
        clock.advance(60.0)  # another moment
    logs = [math.log(f.value) for f in found]
    spread = sum((x - sum(logs) / 4) ** 2 for x in logs) / 3
    assert spread > 0.005  # the measured values did move between moments
    assert plain.between > 0.9 * spread > TimingPolicy().drift ** 2


def test_a_measurement_that_cannot_reach_its_precision_stops_short_and_says_what_it_would_cost():
    """Ratios spread by 30 % per run: the screening precision of +-5 % would take far more
    than the cap's 12 pairs. Once a prior says so, a measurement stops after its minimum
    instead of spending up to 36 tries, its interval stays wide (it says so), and one line says what the precision
    would cost."""
    clock, rng = FakeClock(), random.Random(6)

    def run(seconds):
        seconds *= math.exp(rng.gauss(0, 0.3))
        return timed_run(lambda: clock.advance(seconds), clock)[1]

    plain = PlainRuns(clock, TimingPolicy(tolerance=5.0, max_tolerance=5.0))  # trust them all
    for _ in range(4):
        plain.add(run(1.0))
    assert plain.too_noisy() is None
    # The first configuration has no prior: its own variance over 2-3 pairs predicts nothing,
    # so it is measured to the cap; it sets the prior for the next.
    first = measure_speedup(lambda: run(1.0), lambda: run(0.5), plain, precision=0.05)
    assert first.pairs == TimingPolicy().max_pairs and plain.curtailed == 0
    assert plain.too_noisy() is None
    found = measure_speedup(lambda: run(1.0), lambda: run(0.5), plain, precision=0.05)
    assert found.pairs <= TimingPolicy().min_pairs + 1  # the judge needs three runs
    assert plain.curtailed == 1
    assert found.speedup.relative_half_width > 0.2
    line = plain.too_noisy()
    assert "too noisy for +-5%" in line and "the cap is 12" in line


@pytest.mark.parametrize("slowed", [(), (1,)], ids=["clean", "one-slowed"])
def test_a_stored_estimate_reproduces_its_interval(slowed):
    """What is stored with a speedup (the trusted ratios, the variance borrowed from the
    configurations before, the interval's other inputs) gives its interval again, through the
    record's round trip. Failed at 9214cba: only every bracket's ratio against its own
    neighbours was stored, without the prior, and those gave another interval."""
    from tuner.record import SpeedEstimate

    clock, rng = FakeClock(), random.Random(7)

    def run(seconds):
        seconds *= 1 + rng.gauss(0, 0.03)
        return timed_run(lambda: clock.advance(seconds), clock)[1]

    plain = PlainRuns(clock, TimingPolicy())
    for _ in range(4):
        plain.add(run(1.0))
    for _ in range(3):  # earlier configurations: the next one borrows their variance
        measure_speedup(lambda: run(1.0), lambda: run(0.5), plain, precision=0.05)
    machine = Machine(clock, slow=1.6, slow_accelerated=slowed)
    found = measure_speedup(machine.plain_run, machine.accelerated_run, plain)
    stored = SpeedEstimate.from_dict(found.as_dict())
    assert stored.recomputed() == found.speedup
    if slowed == ():
        assert stored.prior is not None and stored.trusted == stored.ratios
    if slowed == (1,):
        assert len(stored.trusted) < len(stored.ratios)
