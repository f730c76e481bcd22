"""The tuner's speedup measurement (tuner.timing) on simulated runs whose true speedup is known.

A trace (timing_replay.py) has real noise but no truth: its reference is itself an estimate.
Here every run takes its true time times log-normal jitter (sigma per run), and a share of runs
is slowed down 1.5-4x, as a bursty neighbour does. Each row is many measurements of a 2.5x
configuration, stopped by the tuner's rule at the given precision, one after another in one
simulated process (as a study measures its configurations: the plain run that ends one
measurement opens the next, and earlier measurements form the variance prior); it reports what a
measurement costs (in seconds of plain runs: a plain run takes 1 s) and how far its estimate is
from the truth, and how often its 95 % interval holds the truth. `--incumbent F` measures as
the search does against an incumbent F times the truth: a measurement also stops, pruned, once
its interval lies below it (F below 1: the configuration is better, and pruning it is an error).

    python benchmarks/timing_sim.py --out benchmarks/results/2026-12-02-timing-sim/sim.md
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampler_bench import _quantile  # noqa: E402 - one rank rule for every benchmark
from tuner.timing import PlainRuns, Run, TimingPolicy, measure_speedup  # noqa: E402

TRUTH = 2.5


class _SimulatedClock:
    def __init__(self):
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sync(self) -> None:
        pass


class _Process:
    """A simulated process: its clock, its series of plain runs, and its noise."""

    def __init__(self, policy: TimingPolicy, sigma: float, faults: float, rng: random.Random):
        self.clock, self.sigma, self.faults, self.rng = _SimulatedClock(), sigma, faults, rng
        self.plain = PlainRuns(self.clock, policy)
        for _ in range(4):  # the baseline's plain runs
            self.plain.add(self.run(1.0))

    def run(self, seconds: float) -> Run:
        seconds *= math.exp(self.rng.gauss(0.0, self.sigma))
        if self.rng.random() < self.faults:
            seconds *= self.rng.uniform(1.5, 4.0)
        started, self.clock.t = self.clock.t, self.clock.t + seconds
        return Run(started, seconds)

    def measure(self, precision: float, incumbent: float | None = None, judge: bool = True):
        """One measurement after a warm-up run (which judges the timed runs when `judge`, as
        the evaluator's does; its seconds are not counted); (estimate, seconds it cost)."""
        warmup = self.run(1.0 / TRUTH)
        began = self.clock.t
        below = None if incumbent is None else \
            (lambda interval: interval is not None and interval.high < incumbent * TRUTH)
        estimate = measure_speedup(lambda: self.run(1.0), lambda: self.run(1.0 / TRUTH),
                                   self.plain, precision=precision, decided=below,
                                   warmup=warmup if judge else None)
        return estimate, self.clock.t - began


def measured(policy: TimingPolicy, precision: float, sigma: float, faults: float,
             runs: int, incumbent: float | None = None, judge: bool = True) -> dict:
    """`runs` measurements in one process (seed 1): their seconds (mean, median), errors
    against the truth (median, 90th percentile, max), the share of intervals that hold the
    truth, and the share that ended below the incumbent (pruned)."""
    process = _Process(policy, sigma, faults, random.Random(1))
    done = [process.measure(precision, incumbent, judge) for _ in range(runs)]
    errors = [abs(e.value / TRUTH - 1) for e, _ in done]
    seconds = [s for _, s in done]
    return {"seconds": statistics.fmean(seconds), "median_seconds": statistics.median(seconds),
            "error": statistics.median(errors), "p90": _quantile(errors, 0.9),
            "max": max(errors),
            "held": sum(e.speedup.low <= TRUTH <= e.speedup.high for e, _ in done) / runs,
            "pruned": None if incumbent is None else
            sum(e.speedup.high < incumbent * TRUTH for e, _ in done) / runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.02, 0.05, 0.08])
    parser.add_argument("--faults", type=float, nargs="+", default=[0.0, 0.15])
    parser.add_argument("--max-tolerance", type=float, nargs="+", default=[0.10, 0.20])
    parser.add_argument("--precision", type=float, nargs="+", default=[0.05])
    parser.add_argument("--prior-df", type=int, nargs="+", default=[0, TimingPolicy.prior_df])
    parser.add_argument("--min-pairs", type=int, nargs="+", default=[TimingPolicy.min_pairs])
    parser.add_argument("--incumbent", type=float, nargs="+", default=[None])
    parser.add_argument("--warmup-judges", choices=["yes", "no"], nargs="+", default=["yes"])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--out")
    args = parser.parse_args()
    lines = [f"{args.runs} measurements of a {TRUTH}x configuration per row (seed 1); seconds "
             "in plain runs (a plain run takes 1 s)", "",
             "| jitter per run | runs slowed | precision | tolerance cap | prior df | min pairs | "
             "warm-up judges | incumbent | seconds: mean | median | error: median | 90th pct | "
             "max | interval holds the truth | pruned |",
             "|---" * 15 + "|"]
    print("\n".join(lines), flush=True)
    for sigma, faults, precision, cap, prior_df, pairs, judges, incumbent in itertools.product(
            args.sigma, args.faults, args.precision, args.max_tolerance, args.prior_df,
            args.min_pairs, args.warmup_judges, args.incumbent):
        policy = TimingPolicy(min_pairs=pairs, max_tolerance=cap, prior_df=prior_df)
        m = measured(policy, precision, sigma, faults, args.runs, incumbent, judges == "yes")
        pruned = "-" if m["pruned"] is None else f"{m['pruned']:.0%}"
        lines.append(f"| {sigma:.0%} | {faults:.0%} | {precision:.0%} | {cap:.0%} | {prior_df} | "
                     f"{pairs} | {judges} | {incumbent or '-'} | {m['seconds']:.1f} | "
                     f"{m['median_seconds']:.1f} | {m['error']:.1%} | {m['p90']:.1%} | "
                     f"{m['max']:.1%} | {m['held']:.0%} | {pruned} |")
        print(lines[-1], flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
