"""Latency measurement that a speedup objective can rely on.

GPU latency drifts by tens of percent within minutes, single runs come out 50 % slow, and a
launch-bound pipeline passes every hiccup of the host straight into its latency. So a speedup is
never one timing divided by another taken minutes apart:

* plain and accelerated runs of the same batch alternate, and each accelerated run is compared
  with the plain latency interpolated, at its middle, between the plain runs just before and just
  after it (a bracket), which cancels linear drift;
* a run slower than the fastest comparable one beyond what this machine's own jitter explains
  (something else ran meanwhile) is not trusted, and more pairs are measured instead of
  averaging it in (`Brackets`); a configuration's untimed warm-up run is one of the comparable
  ones, so that two pairs can be trusted;
* pairs are added, beyond a small minimum, until the speedup's 95 % interval is within the
  stated precision (looser while screening, tight for an answer), or the answer the caller
  needs is already clear, or a cap is reached;
* that interval borrows strength from the configurations measured before on this machine: its
  variance is shrunk toward theirs (a moderated t-interval, stats.mean_variance), so 3 pairs no
  longer pay a t quantile of 4.3, and 3 that happen to agree no longer end a measurement early;
  it counts the correlation of brackets that share a plain run, never goes below the plain
  runs' own jitter, and includes how far a speedup moves between moments, learned from
  configurations measured again (`PlainRuns.between`): it says where a measurement at another
  moment lands;
* a measurement that could not reach its precision even at the cap stops at once (curtailed),
  and `PlainRuns.too_noisy` says what the precision would cost;
* the plain runs form one series per process: the run that closes one configuration's last
  bracket opens the next configuration's first, so a configuration costs n plain runs, not n+1.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from .record import SpeedEstimate
from .stats import Interval, Prior, mean_variance, relative_spread, speedup_interval


class Clock(Protocol):
    def now(self) -> float: ...

    def sync(self) -> None: ...


class DeviceClock:
    """Host wall clock that first waits for the device's queued work."""

    def __init__(self, device="cpu"):
        import torch

        self.device = torch.device(device)
        self._torch = torch

    def now(self) -> float:
        return time.perf_counter()

    def sync(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)


class StepTimer:
    """Times each call of a module (the denoiser: one call per denoising step, a CUDA graph
    replay being one call) within a timed run, without waiting for the device: on CUDA an
    event is recorded on the current stream as each call starts and as the last one ends,
    read once the run has synced (`timed_run` syncs after it); on the CPU, perf_counter."""

    def __init__(self, device="cpu"):
        import torch

        self.device = torch.device(device)
        self._torch = torch

    def _mark(self):
        if self.device.type == "cuda":
            event = self._torch.cuda.Event(enable_timing=True)
            event.record(self._torch.cuda.current_stream(self.device))  # the model's device's
            return event
        return time.perf_counter()

    def _seconds(self, start, end) -> float:
        if self.device.type == "cuda":
            return start.elapsed_time(end) / 1000.0
        return end - start

    @contextlib.contextmanager
    def watching(self, module) -> Iterator[Callable[[Run], Run]]:
        """Within the block, every call of `module` is marked; yields a function that gives a
        run timed within the block its step times (Run.steps): each call from its start to the
        next call's start (the scheduler's step between included), the last to its end. A
        run during which the module was not called keeps none."""
        starts, ends = [], []
        hooks = (module.register_forward_pre_hook(lambda m, args: starts.append(self._mark())),
                 module.register_forward_hook(lambda m, args, out: ends.append(self._mark())))

        def stepped(run: Run) -> Run:
            if not starts or len(ends) != len(starts):
                return run
            bounds = [*starts, ends[-1]]
            steps = tuple(self._seconds(a, b) for a, b in zip(bounds, bounds[1:]))
            return Run(run.start, run.seconds, steps) if sum(steps) <= run.seconds else run

        try:
            yield stepped
        finally:
            for hook in hooks:
                hook.remove()


@dataclass(frozen=True)
class Run:
    """One timed run: when it started and how long it took (seconds), and, where they were
    taken, its denoising steps' seconds in order (`steps`: one per denoiser call, a CUDA graph
    replay being one call); the rest of `seconds` is the run's remainder (setup, decoding)."""

    start: float
    seconds: float
    steps: tuple[float, ...] = ()

    @property
    def middle(self) -> float:
        return self.start + self.seconds / 2

    @property
    def parts(self) -> tuple[float, ...]:
        """The steps' seconds, then the remainder's (empty without step times)."""
        return (*self.steps, self.seconds - sum(self.steps)) if self.steps else ()


def timed_run(fn: Callable[[], Any], clock: Clock) -> tuple[Any, Run]:
    """Run `fn` once; return its result and the `Run` (start, seconds), device work included."""
    clock.sync()
    start = clock.now()
    result = fn()
    clock.sync()
    return result, Run(start, clock.now() - start)


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
        return cls(statistics.median(samples), min(samples), max(samples),
                   relative_spread(samples), tuple(float(s) for s in samples))

    def as_dict(self) -> dict:
        return asdict(self)


# -- bracketed pairs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TimingPolicy:
    """How hard a speedup is measured (see BENCHMARKS.md for what each choice buys)."""

    # Two pairs settle most questions "is it below the incumbent?": with the variance prior
    # and the warm-up run among the trust rule's judges (Brackets.judged), wrong as rarely as
    # three, for a quarter to a third less (BENCHMARKS.md sec. 3).
    min_pairs: int = 2
    max_pairs: int = 12
    precision: float = 0.02  # an answer's 95 % interval: within +-2 % (confirmation races)
    # A configuration screened during the search needs less: enough to rank it and to prune
    # it; the ones that may be the answer are measured to `precision` in the race (SMAC's
    # cheap challengers, intensified incumbents).
    screening: float = 0.05
    # A run is trusted within this of the fastest comparable run, or within 3x the typical
    # difference of consecutive plain runs on this machine, whichever is larger, but never
    # more than max_tolerance (20 %: with 8 % jitter per run, 10 % set aside half of all runs,
    # each measured again; runs a neighbour slows are slower than that, BENCHMARKS.md sec. 3).
    tolerance: float = 0.03
    max_tolerance: float = 0.20
    neighbours: int = 3  # runs of the same kind, each side in time, a run is judged against
    # The variance of earlier configurations' log ratios weighs as much as this many pairs of
    # a configuration's own (0: each configuration on its own). Not more: configurations do
    # differ in noise (on one H200 the standard deviations of their ratios spread 2x).
    prior_df: int = 4
    reuse_within: float = 30.0  # seconds: a plain run this recent opens the next bracket
    # Adjacent brackets share a plain run: with the plain and accelerated runs' log noise
    # alike, their log ratios correlate by (s^2/4) / (s^2/2 + s^2) = 1/6 (stats.mean_variance).
    correlation: float = 1 / 6
    # Between moments (minutes apart, another process) a configuration's speedup moves by more
    # than its brackets within one measurement show: this floor of its standard deviation (on
    # the log scale) is added to every interval, raised to what the run's own repeated
    # measurements of one configuration show (PlainRuns.between).
    drift: float = 0.02
    # ...and until a configuration was measured twice, this: what is not known yet is taken as
    # large as seen on a quiet H200, where one configuration's speedup moved by 6 % between
    # moments of one run (BENCHMARKS.md, "Coverage").
    unknown_drift: float = 0.06
    # PlainRuns.floor: one log ratio varies at least this many times one plain run's log
    # variance (half of it from the two plain runs interpolated, a plain run's from the
    # accelerated one); 0: no floor.
    jitter_floor: float = 1.5
    # The drift between moments is learned from one configuration measured again, briefly,
    # every `repeat_every` evaluations (every third of that until it was measured 4 times);
    # 0: never (the floor `drift` alone, and whatever races measure again).
    repeat_every: int = 12
    # Judge runs step by step where they carry step times (Run.steps): a step slower than the
    # same step of the arm's neighbouring runs beyond the steps' own jitter is taken at those
    # runs' clean value (`step_envelope`), before the runs are judged whole. False: runs whole.
    # On an H100 beside a bursty neighbour, judged by step the grid screened what it screened
    # quiet at 0.9-1.1x its cost, with no run set aside, and answered as quiet did; judged
    # whole it set 25 runs aside, screened 7 of 13 configurations and answered another
    # (BENCHMARKS.md section 6). The step timer costs nothing measurable there. Runs on a CPU
    # carry no step times unless asked (`takes_step_times`).
    steps: bool = True

    def __post_init__(self):
        if not 1 <= self.min_pairs <= self.max_pairs:
            raise ValueError(f"need 1 <= min_pairs <= max_pairs, got {self.min_pairs} and "
                             f"{self.max_pairs}")
        if self.neighbours < 1:
            raise ValueError(f"need neighbours >= 1, got {self.neighbours}")
        if self.prior_df < 0:
            raise ValueError(f"need prior_df >= 0, got {self.prior_df}")
        if not 0 <= self.correlation < 0.5 or min(self.drift, self.unknown_drift,
                                                   self.repeat_every) < 0:
            raise ValueError(f"need 0 <= correlation < 0.5 and drift, unknown_drift, "
                             f"repeat_every >= 0, got {self.correlation}, {self.drift}, "
                             f"{self.unknown_drift} and {self.repeat_every}")


def bracket_ratio(before: Run, accelerated: Run, after: Run) -> float:
    """Plain latency at the accelerated run's middle (linear between the two plain runs) over
    the accelerated latency."""
    span = after.middle - before.middle
    weight = (accelerated.middle - before.middle) / span if span > 0 else 0.5
    plain = before.seconds + (after.seconds - before.seconds) * weight
    return plain / accelerated.seconds


class PlainRuns:
    """The plain runs of one process, in time order, shared by consecutive measurements.

    It also keeps what the machine's noise looks like: how much consecutive plain runs differ,
    how many brackets had to be measured again, and how much the trusted ratios of the last
    `window` measured configurations varied about their own means (`prior`). All of it belongs
    to one process and one device, and is never stored or shared: workers on other GPUs of a
    study each keep their own, since another machine's noise is not this one's.
    """

    def __init__(self, clock: Clock, policy: TimingPolicy = TimingPolicy(), window: int = 16):
        self.clock, self.policy, self.window = clock, policy, window
        self.runs: list[Run] = []
        self.brackets = 0
        self.rejected = 0
        self.curtailed = 0  # measurements stopped short of their precision (measure_speedup)
        self.short: tuple[float, float, float] | None = None  # the last: precision, pairs
        # it would have needed, seconds a trusted pair took
        self._spreads: list[tuple[float, int]] = []  # per configuration: squares, df
        # per configuration measured here (its key): log speedup, variance of that estimate
        self._measured: dict[str, list[tuple[float, float]]] = {}

    def learn(self, ratios: Sequence[float], adjacent: int = 0) -> None:
        """Add one configuration's trusted ratios (`adjacent` of them sharing a plain run with
        the next) to what `prior` is pooled from."""
        if len(ratios) > 1:
            logs = [math.log(r) for r in ratios]
            n = len(logs)
            bias = 1 - 2 * self.policy.correlation * min(adjacent, n - 1) / (n * (n - 1))
            self._spreads.append(((n - 1) * statistics.variance(logs) / bias, n - 1))
            del self._spreads[:-self.window]

    def remember(self, key: str, log_value: float, variance: float) -> None:
        """One measurement of the configuration `key`: its log speedup and that estimate's
        variance within its own moment (what `between` learns from): an estimate of it, not a
        bound (Brackets.remember)."""
        self._measured.setdefault(key, []).append((log_value, variance))

    @property
    def repeats(self) -> int:
        """How many times a configuration was measured again here (what `between` knows)."""
        return sum(len(seen) - 1 for seen in self._measured.values())

    @property
    def between(self) -> float:
        """The variance, on the log scale, of a configuration's speedup between moments: the
        policy's floor, or what configurations measured more than once here show, if more;
        before any was, the policy's `unknown_drift`.

        The m measurements x_i of one configuration, with within-moment variances v_i, vary
        by E[var(x)] = tau^2 + mean(v); tau^2 is the excess, pooled over the configurations
        measured more than once with weights m - 1, at least 0: the method-of-moments
        estimator of a random-effects meta-analysis (DerSimonian and Laird 1986,
        "Meta-analysis in clinical trials"), with equal weights. All of a configuration's
        measurements, not consecutive pairs: two taken within one moment show no drift."""
        return self._between()[0]

    def _between(self) -> tuple[float, float]:
        """`between`, and its degrees of freedom (infinite: the policy's floor, taken as
        known)."""
        floor = self.policy.drift ** 2
        seen = [m for m in self._measured.values() if len(m) > 1]
        if not seen:
            return max(floor, self.policy.unknown_drift ** 2), math.inf
        df = sum(len(m) - 1 for m in seen)
        excess = sum((len(m) - 1) * (statistics.variance([x for x, _ in m])
                                     - statistics.fmean(v for _, v in m)) for m in seen) / df
        return (excess, float(df)) if excess > floor else (floor, math.inf)

    @property
    def floor(self) -> float:
        """A lower bound on the variance of one log ratio from this machine's plain runs: the
        interpolated plain latency carries half a plain run's log variance and the accelerated
        run at least a plain run's (shorter runs jitter relatively more), 1.5 s_p^2 in all
        (TimingPolicy.jitter_floor).
        s_p comes from the plain runs the trust rule keeps (as the ratios do), each one's log
        difference to the mean of its two neighbours (which, like a bracket, cancels linear
        drift), their lower quartile, which stays put while up to three quarters of them are
        disturbed: the trusted ratios alone, their slow tail set aside, would understate it."""
        kept = _undisturbed(self.runs, self.tolerance, neighbours=self.policy.neighbours)
        logs = [math.log(r.seconds) for r in kept]
        steps = sorted(abs(b - (a + c) / 2) for a, b, c in zip(logs, logs[1:], logs[2:]))
        if len(steps) < 3:
            return 0.0
        quartile = steps[(len(steps) - 1) // 4]
        # that difference is normal with scale s_p sqrt(1.5); |it|'s lower quartile: 0.3186 x
        return self.policy.jitter_floor * (quartile / 0.3186) ** 2 / 1.5

    @property
    def prior(self) -> Prior | None:
        """The pooled variance of one log ratio, worth at most the policy's prior_df."""
        df = sum(d for _, d in self._spreads)
        if not df or not self.policy.prior_df:
            return None
        # The trusted ratios' slow tail was set aside: never below the machine's jitter.
        return Prior(max(sum(s for s, _ in self._spreads) / df, self.floor),
                     min(df, self.policy.prior_df))

    def add(self, run: Run) -> Run:
        self.runs.append(run)
        del self.runs[:-self.window]
        return run

    def recent(self) -> Run | None:
        """The last plain run, if it is recent enough to open a bracket."""
        if self.runs and self.clock.now() - (self.runs[-1].start + self.runs[-1].seconds) \
                <= self.policy.reuse_within:
            return self.runs[-1]
        return None

    @property
    def jitter(self) -> float | None:
        """The median relative difference between consecutive plain runs (None: too few)."""
        pairs = list(zip(self.runs, self.runs[1:]))
        if len(pairs) < 3:
            return None
        return statistics.median(abs(a.seconds - b.seconds) / min(a.seconds, b.seconds)
                                 for a, b in pairs)

    @property
    def tolerance(self) -> float:
        jitter = self.jitter
        wide = 3 * jitter if jitter is not None else 0.0
        return min(max(self.policy.tolerance, wide), self.policy.max_tolerance)

    @property
    def latency(self) -> float | None:
        return statistics.median(r.seconds for r in self.runs) if self.runs else None

    @property
    def spread(self) -> float:
        return relative_spread([r.seconds for r in self.runs])

    def too_noisy(self) -> str | None:
        """One line, once measurements stop short of their precision (measure_speedup's
        curtailment): what the precision would cost on this machine now; None otherwise."""
        if not self.curtailed or self.short is None:
            return None
        precision, needed, per_pair = self.short
        shown = f"{needed:.0f}" if needed < 1000 else "over 1000"
        return (f"timings on this machine are too noisy for +-{precision:.0%}: a configuration "
                f"would need about {shown} pairs ({per_pair:.1f} s each, runs set aside "
                f"included; the cap is {self.policy.max_pairs}); measurements stop short "
                f"and their intervals say so. Is something else running?")

    def noisy(self) -> bool:
        """Whether timings on this machine are too noisy to trust without saying so: recent
        plain runs of the same batch spread by more than a quarter, or a quarter of the
        accelerated runs had to be set aside."""
        rejected = self.rejected / self.brackets if self.brackets >= 8 else 0.0
        return rejected > 0.25 or (len(self.runs) >= 8 and self.spread > 0.25)

    def noise_note(self) -> str | None:
        """What the noise was, as measured, when `noisy`: a fact, not a guess at its cause (a
        quiet 2-core CPU spreads its plain runs by a quarter too)."""
        if not self.noisy():
            return None
        facts = [f"the last {len(self.runs)} plain runs of one batch spread {self.spread:.0%} "
                 f"(slowest - fastest, over the median)"]
        if self.brackets:
            facts.append(f"{self.rejected} of {self.brackets} accelerated runs were set aside "
                         f"as disturbed and measured again")
        return (f"timings on this machine are noisy: {'; '.join(facts)}. The speedup "
                f"intervals include this noise")


@dataclass(frozen=True)
class Bracket:
    before: Run  # plain
    accelerated: Run
    after: Run  # plain

    @property
    def ratio(self) -> float:
        return bracket_ratio(self.before, self.accelerated, self.after)


def _undisturbed(runs: Sequence[Run], tolerance: float, *, neighbours: int) -> list[Run]:
    """The runs, in time order, within `tolerance` of the fastest of their neighbours in time.

    Against the neighbours, not the fastest ever: when the machine's speed shifts (another job
    starts, clocks change), the runs after the shift are judged against each other.
    """
    ordered = sorted(runs, key=lambda r: r.middle)
    found = []
    for i, run in enumerate(ordered):
        near = ordered[max(0, i - neighbours):i + neighbours + 1]
        if run.seconds <= min(r.seconds for r in near) * (1 + tolerance):
            found.append(run)
    return found


def _step_tolerance(runs: Sequence[Run], policy: TimingPolicy) -> float:
    """How far a step may be from the fastest of its position and still be trusted: 3x the
    typical relative difference of the same step in consecutive runs (the run-level rule's
    form), that typical difference taken from their lower quartile (0.3186 of a normal
    difference's scale, against the median's 0.6745), which stays put while up to three
    quarters of the steps are disturbed; within the policy's tolerance and max_tolerance."""
    diffs = sorted(abs(math.log(x / y)) for a, b in zip(runs, runs[1:])
                   if len(a.steps) == len(b.steps)
                   for x, y in zip(a.parts, b.parts) if x > 0 and y > 0)
    if len(diffs) < 8:
        return policy.max_tolerance
    typical = diffs[(len(diffs) - 1) // 4] * 0.6745 / 0.3186
    return min(max(policy.tolerance, 3 * math.expm1(typical)), policy.max_tolerance)


def takes_step_times(policy: TimingPolicy, device) -> bool:
    """Whether runs on `device` are timed step by step under `policy`: on a GPU, where a
    neighbour's burst slows some steps of a run and not others; not on a CPU, where a step is a
    few milliseconds of time-sliced work: beside busy loops on a 2-core CPU, runs judged by step
    moved more with the machine's load than runs judged whole (BENCHMARKS.md section 6)."""
    return policy.steps and str(device).startswith("cuda")


def step_envelope(runs: Sequence[Run], references: Sequence[Run] = (), *,
                  policy: TimingPolicy) -> dict[Run, Run]:
    """Each of `runs` (one arm: plain runs, or one configuration's accelerated runs), with
    each of its steps that is slower than the fastest of the same step among its `neighbours`
    runs each side in time (`references` judge too) beyond the steps' jitter
    (`_step_tolerance`) taken at the median of that step's trusted values there, and its
    remainder alike. Runs without step times, or with another number of steps, are kept as
    they are.

    Noise that only slows makes the minimum the estimator of a computation's undisturbed time
    (Chen and Revels 2016, "Robust benchmarking in noisy environments"); over whole runs a
    short run fits between a neighbour's bursts far more often than a long one, so the
    run-level envelope favours whichever arm is shorter. The same step of the same arm's
    runs near in time is the same computation, short enough that most of them are
    undisturbed: the envelope is taken there, position by position (DeepCache's full and
    shallow steps each against their own kind), and a step the burst left alone keeps its
    own time, so that quiet runs keep their jitter and their intervals keep their width."""
    pool = sorted({*runs, *references}, key=lambda r: r.middle)
    stepped = [r for r in pool if r.steps]
    found = {r: r for r in runs}
    if len(stepped) < 2:
        return found
    tolerance = _step_tolerance(stepped, policy)
    for run in runs:
        if not run.steps:
            continue
        i = stepped.index(run)
        near = [r for r in stepped[max(0, i - policy.neighbours):i + policy.neighbours + 1]
                if len(r.steps) == len(run.steps)]
        if len(near) < 2:
            continue
        parts = []
        for p, own in enumerate(run.parts):
            values = [r.parts[p] for r in near]
            low = min(values)
            if low <= 0 or own <= low * (1 + tolerance):
                parts.append(own)
            else:
                parts.append(statistics.median(v for v in values if v <= low * (1 + tolerance)))
        if parts != list(run.parts):
            found[run] = Run(run.start, sum(parts), tuple(parts[:-1]))
    return found


def _adjacent(brackets: Sequence[Bracket]) -> int:
    """How many of the brackets (in time order) share their closing plain run with the next."""
    return sum(a.after == b.before for a, b in zip(brackets, brackets[1:]))


def _bracketed(accelerated: Sequence[Run], plains: Sequence[Run]) -> list[Bracket]:
    """Each accelerated run between the nearest of `plains` (in time order) before and after
    it; runs with no plain run on one side are left out."""
    found = []
    for a in accelerated:
        before = [r for r in plains if r.middle < a.middle]
        after = [r for r in plains if r.middle > a.middle]
        if before and after:
            found.append(Bracket(before[-1], a, after[0]))
    return found


class Brackets:
    """The runs measured for one configuration, and the ratios to trust.

    Interference only ever slows a run down, so the fast runs are the trustworthy ones: a run is
    trusted when it is within the tolerance (set by this machine's own jitter,
    `PlainRuns.tolerance`) of the fastest of its neighbours in time of its kind (plain runs, or
    this configuration's accelerated runs, its warm-up included). Each trusted accelerated run
    is compared with the plain latency interpolated between the trusted plain runs nearest
    before and after it, usually its own bracket, but the next clean ones when a neighbour
    disturbed it. A median or a majority vote would not do: with one run in three slowed,
    disturbed runs are often as many as clean ones.
    """

    def __init__(self, plain: PlainRuns, plains: list[Run] | None = None,
                 references: Sequence[Run] = ()):
        self.plain = plain
        self.plains = plains if plains is not None else []  # may be shared (a race)
        self.accelerated: list[Run] = []
        # Runs of this configuration that only judge the others (a warm-up run): with two
        # pairs, two runs that a neighbour slowed alike would otherwise be each other's only
        # judges.
        self.references = list(references)

    def add(self, before: Run, accelerated: Run, after: Run) -> None:
        for run in (before, after):
            if run not in self.plains:
                self.plains.append(run)
        self.accelerated.append(accelerated)

    def judged(self) -> bool:
        """Whether enough runs of this configuration were seen to trust any of them: three,
        the warm-up included. Two runs that a neighbour slowed alike would judge each other
        and both pass; a third, clean one is the faster and sets them aside."""
        return len(self.accelerated) + len(self.references) >= 3

    def _enveloped(self, runs: Sequence[Run], references: Sequence[Run]) -> list[Run]:
        """`runs` with their disturbed steps taken at their neighbours' (`step_envelope`),
        when the policy judges steps."""
        if not self.plain.policy.steps:
            return list(runs)
        found = step_envelope(runs, references, policy=self.plain.policy)
        return [found[r] for r in runs]

    def trusted_plain(self) -> list[Run]:
        """The undisturbed plain runs, in time order (their disturbed steps enveloped; the
        process's other recent plain runs judge them too)."""
        return _undisturbed(self._enveloped(self.plains, self.plain.runs), self.plain.tolerance,
                            neighbours=self.plain.policy.neighbours)

    def clean(self) -> list[Bracket]:
        if not self.accelerated:
            return []
        runs = self._enveloped(self.accelerated + self.references, ())
        judged = _undisturbed(runs, self.plain.tolerance,
                              neighbours=self.plain.policy.neighbours)
        own = set(runs[:len(self.accelerated)])
        return _bracketed([r for r in judged if r in own], self.trusted_plain())

    def all(self) -> list[Bracket]:
        """Every accelerated run against its own neighbours, trusted or not."""
        return _bracketed(self.accelerated, sorted(self.plains, key=lambda r: r.middle))

    def interval(self, *, between: bool = True) -> Interval | None:
        """The speedup's interval: of the trusted brackets, for the adjacent ones' correlation,
        at least the machine's jitter (`PlainRuns.floor`), and with the variance between
        moments (`PlainRuns.between`) unless `between` is False (this moment's own, which
        only more pairs narrow: what a measurement stops on).

        With `between`, it is where a measurement at another moment (later in the run, in
        another process) lands: this moment's drift and that one's, 2 tau^2 on the log scale."""
        clean = self.clean()
        # Nothing trusted: a value, but an interval that says it is unknown (stats).
        return speedup_interval([b.ratio for b in clean], [b.ratio for b in self.all()],
                                self.plain.prior, **self._options(clean, between))

    def _options(self, clean: Sequence[Bracket], between: bool = True) -> dict:
        """What the interval of `clean` takes besides the ratios and the prior (stored with
        an estimate, so that it can be computed again: SpeedEstimate.recomputed)."""
        if not clean:
            return {}
        drift, drift_df = self.plain._between()
        return {"adjacent": _adjacent(clean), "correlation": self.plain.policy.correlation,
                "floor": self.plain.floor, "between": 2 * drift if between else 0.0,
                "between_df": drift_df}

    def settled(self, clean: int) -> Interval | None:
        """The interval, once `clean` (the trusted pairs so far) reaches the policy's minimum
        and the trust rule has seen enough runs to judge (`judged`); None before."""
        if clean < self.plain.policy.min_pairs or not self.judged():
            return None
        return self.interval()

    def pairs_needed(self, precision: float) -> float:
        """How many trusted pairs this moment's interval would need to be within `precision`
        at the noise seen so far (normal quantile: the t quantile's excess at few pairs is
        what more pairs remove)."""
        clean = self.clean()
        if len(clean) < 2:
            return math.inf
        variance, _ = mean_variance([math.log(b.ratio) for b in clean], self.plain.prior,
                                    adjacent=_adjacent(clean),
                                    correlation=self.plain.policy.correlation,
                                    floor=self.plain.floor)
        z = statistics.NormalDist().inv_cdf(0.975)
        return variance * len(clean) * (z / math.log1p(precision)) ** 2

    def remember(self, key: str) -> None:
        """Tell the plain series this measurement of the configuration `key`: its repeated
        measurements teach the drift between moments (`PlainRuns.between`)."""
        clean = self.clean()
        if len(clean) > 1:
            logs = [math.log(b.ratio) for b in clean]
            # Its own ratios' variance, neither floored nor shrunk toward the prior (itself
            # floored): DerSimonian and Laird's tau^2 is the excess of the measurements' spread
            # over their within-moment variances, unbiased only when those are estimates, not
            # bounds. A floor above the ratios' real spread (the plain runs' jitter, which the
            # step envelope does not see: 25x the enveloped ratios' variance beside bursts)
            # is subtracted from the spread and takes the drift with it (BENCHMARKS.md sec. 6).
            variance, _ = mean_variance(logs, adjacent=_adjacent(clean),
                                        correlation=self.plain.policy.correlation)
            self.plain.remember(key, statistics.fmean(logs), variance)

    def estimate(self) -> SpeedEstimate:
        clean, everything = self.clean(), self.all()
        if not everything:
            raise ValueError("no bracket was measured")
        used = clean or everything
        # Before this configuration joins the prior.
        prior, options, interval = self.plain.prior, self._options(clean), self.interval()
        self.plain.brackets += len(self.accelerated)
        self.plain.rejected += len(self.accelerated) - len(clean)
        self.plain.learn([b.ratio for b in clean], _adjacent(clean))
        return SpeedEstimate(interval,
                             statistics.median(r.seconds for b in used
                                               for r in (b.before, b.after)),
                             len(clean), len(self.accelerated) - len(clean),
                             tuple(b.ratio for b in everything),
                             tuple(b.ratio for b in clean), prior if clean else None, options)


def measure_speedup(run_plain: Callable[[], Run], run_accelerated: Callable[[], Run],
                    plain: PlainRuns, *, precision: float | None = None,
                    decided: Callable[[Interval | None], bool] | None = None,
                    warmup: Run | None = None, key: str | None = None) -> SpeedEstimate:
    """Measure one configuration's speedup in bracketed pairs (see the module's docstring).

    After every bracket, `decided(interval)` (the interval is None before the policy's minimum
    of trusted pairs) may end the measurement once the caller's question is answered, e.g.
    "is it below the required speedup?". Each callable times one run, in this order: one plain
    run when `plain` has no recent one, then per bracket an accelerated run and the plain run
    that closes its bracket (and opens the next). `precision` defaults to the policy's.
    `warmup`, the configuration's untimed first run, joins the trust rule's judges of the
    accelerated runs, never their ratios. `key` names the configuration (`Brackets.remember`).
    The measurement stops on the precision of this moment's own interval: more pairs cannot
    narrow the drift between moments that the estimate's interval includes.
    """
    policy = plain.policy
    before = plain.recent() or plain.add(run_plain())
    brackets = Brackets(plain, references=() if warmup is None else (warmup,))
    for _ in range(3 * policy.max_pairs):  # untrusted brackets are measured again, up to a cap
        accelerated = run_accelerated()
        after = plain.add(run_plain())
        brackets.add(before, accelerated, after)
        before = after
        clean = len(brackets.clean())
        interval = brackets.settled(clean)
        if clean >= policy.max_pairs or (decided is not None and decided(interval)):
            break
        if interval is None:
            continue
        own = brackets.interval(between=False).relative_half_width
        if own <= (precision or policy.precision):
            break
        # Curtailment (Jennison and Turnbull 2000, "Group Sequential Methods", ch. 10: stop
        # once the outcome at the cap is foregone): when even the cap's pairs would not reach
        # the precision at this noise, the pairs up to it buy little; the interval says how
        # little is known, and the candidates for an answer are measured again in a race.
        # Only with a prior: a first configuration's own variance over 2-3 pairs predicts
        # nothing (and sets the prior for all after it).
        needed = brackets.pairs_needed(precision or policy.precision)
        if plain.prior is not None and needed > policy.max_pairs:
            plain.curtailed += 1
            spent = sum(r.seconds for r in brackets.accelerated + brackets.plains[1:])
            plain.short = (precision or policy.precision, needed, spent / clean)
            break
    if key is not None:
        brackets.remember(key)
    return brackets.estimate()


def choose_threads(time_one: Callable[[int], float], counts: Sequence[int], *,
                   repeats: int = 3) -> tuple[int, dict[int, list[float]]]:
    """The CPU thread count to time with, measured: the count whose slowest of `repeats` runs
    is fastest, preferring fewer threads within 5 %.

    On a machine where other processes compete for the cores, using every core makes each step
    wait for the busiest one: with busy neighbours on both cores of a 2-core machine, a batch
    took up to 0.52-0.59 s on one thread and 1.12-1.47 s on two (README, "Measuring speedups").
    The slowest run shows that; the median can hide it.
    """
    seen: dict[int, list[float]] = {}
    for count in counts:
        time_one(count)  # warm-up at this count
        seen[count] = []
        for _ in range(repeats):
            seen[count].append(time_one(count))
            if seen[count][-1] > 3 * min(max(t) for t in seen.values()):
                break  # far slower than a count already measured: no need to see more
    worst = {count: max(times) for count, times in seen.items()}
    best = min(worst.values())
    return min(c for c in counts if worst[c] <= best * 1.05), seen


__all__ = ["Bracket", "Brackets", "Clock", "DeviceClock", "PlainRuns", "Run", "Stats", "StepTimer",
           "TimingPolicy", "bracket_ratio", "choose_threads", "measure_speedup", "step_envelope",
           "takes_step_times", "timed_run"]
