"""Replay a recorded timing trace (`gpu_bench.py trace`) through the tuner's own speedup
measurement (tuner.timing), to compare measurement schemes offline on real GPU noise.

The trace alternates plain and accelerated runs of one configuration for minutes. A scheme with
k accelerated runs per plain run is emulated by keeping every k-th plain run of the trace (the
runs in between are dropped, which leaves the kept plain runs further apart in time than the
scheme would: the emulation is, if anything, unfair to k > 1). Every start position in the trace
is one measurement, stopped by the tuner's rule (a minimum of trusted pairs, then the interval
within the precision, or the cap). Reference: the speedup from all of the segment's brackets,
with the tuner's default rule. The trust rule can be varied too (`--tolerance`: the floor of the
tolerance, and its cap unless `--max-tolerance` gives the cap; `--neighbours`), and so can the
weight of the variance pooled from earlier configurations (`--prior-df`; a measurement's
earlier configurations are the trace's other segments, whose trusted ratios it pools).
`--incumbent F` measures as the search does against an incumbent F times the reference speedup:
a measurement also stops, pruned, once its interval lies below the incumbent. `--min-pairs`
varies the minimum of trusted pairs.

    python benchmarks/timing_replay.py benchmarks/results/2026-12-01-h200-trace/trace.json
    python benchmarks/timing_replay.py TRACE --per-plain 1 --precision 0.05 0.08 \
        --tolerance 0.03 0.2 --neighbours 3 1
    python benchmarks/timing_replay.py TRACE --per-plain 1 --max-tolerance 0.1 0.2 0.3
    python benchmarks/timing_replay.py TRACE --per-plain 1 --prior-df 0 4 8
    python benchmarks/timing_replay.py TRACE --per-plain 1 --incumbent 1.1 1.25
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stored  # noqa: E402 - traces over 50 KB are stored compressed
from sampler_bench import _quantile  # noqa: E402 - one rank rule for every benchmark
from tuner.stats import Interval  # noqa: E402
from tuner.timing import Brackets, PlainRuns, Run, TimingPolicy  # noqa: E402


class _Frozen:
    """The clock of a replay: nothing here asks it the time."""

    def now(self) -> float:
        return 0.0

    def sync(self) -> None:
        pass


Series = tuple[list[Run], list[Run], list[float]]


def series_of(runs: list[dict]) -> Series:
    """Plain runs P0..Pn and accelerated runs A0..An-1 (Ai between Pi and Pi+1), and the apply
    and undo seconds around each accelerated run."""
    plain = [Run(r["start"], r["seconds"]) for r in runs if r["kind"] == "plain"]
    accelerated = [Run(r["start"], r["seconds"]) for r in runs if r["kind"] == "accelerated"]
    overhead = [r["apply_undo"] for r in runs if r["kind"] == "accelerated"]
    return plain, accelerated, overhead


def _whole(series: Series, policy: TimingPolicy) -> Brackets:
    plain, accelerated, _ = series
    shared = PlainRuns(_Frozen(), policy, window=len(plain))
    for p in plain:  # each once: the machine's jitter is measured on consecutive runs
        shared.add(p)
    brackets = Brackets(shared)
    for i, a in enumerate(accelerated):
        brackets.add(plain[i], a, plain[i + 1])
    return brackets


def reference(series: Series, policy: TimingPolicy) -> Interval:
    return _whole(series, policy).interval()


def trusted_ratios(series: Series, policy: TimingPolicy) -> list[float]:
    """The ratios of the segment's brackets that `policy` trusts (a configuration that
    measured earlier, for another segment's prior)."""
    return [b.ratio for b in _whole(series, policy).clean()]


def measure(series: Series, start: int, k: int, policy: TimingPolicy, precision: float,
            earlier: Sequence[Sequence[float]] = (), slower_than: float | None = None):
    """One measurement from accelerated run `start` on, keeping a plain run after every k
    accelerated ones, after the configurations whose trusted ratios are `earlier`, stopped
    early once its interval lies below `slower_than`; (interval, seconds spent) or None when
    the trace ends first."""
    plain, accelerated, overhead = series
    shared = PlainRuns(_Frozen(), policy)
    for ratios in earlier:
        shared.learn(ratios)
    for p in plain[max(0, start - 16 * k):start:k]:  # this process's earlier plain runs
        shared.add(p)
    before = shared.add(plain[start])
    # The accelerated run before the first stands in for the evaluator's warm-up run.
    warmup = (accelerated[start - 1],) if start else ()
    brackets, group, spent = Brackets(shared, references=warmup), [], 0.0
    for i in range(start, len(accelerated)):
        group.append(accelerated[i])
        spent += accelerated[i].seconds + overhead[i]
        if (i + 1 - start) % k:
            continue
        after = shared.add(plain[i + 1])
        spent += after.seconds
        for a in group:
            brackets.add(before, a, after)
        before, group = after, []
        clean = len(brackets.clean())
        interval = brackets.settled(clean)
        if clean >= policy.max_pairs or (interval is not None and (
                brackets.interval(between=False).relative_half_width <= precision
                or (slower_than is not None and interval.high < slower_than))):
            return interval or brackets.interval(), spent
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("trace")
    parser.add_argument("--per-plain", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--precision", type=float, nargs="+", default=[0.05, 0.02])
    parser.add_argument("--tolerance", type=float, nargs="+", default=[TimingPolicy.tolerance])
    parser.add_argument("--max-tolerance", type=float, nargs="+",
                        help="the cap (default: the policy's, or the floor if larger)")
    parser.add_argument("--neighbours", type=int, nargs="+", default=[TimingPolicy.neighbours])
    parser.add_argument("--prior-df", type=int, nargs="+", default=[TimingPolicy.prior_df])
    parser.add_argument("--min-pairs", type=int, nargs="+", default=[TimingPolicy.min_pairs])
    parser.add_argument("--incumbent", type=float, nargs="+",
                        help="prune against an incumbent this many times the reference")
    args = parser.parse_args()
    data = stored.read_json(args.trace)
    print(f"{data['device']}; k = accelerated runs per plain run; tolerance = the trust rule's "
          f"floor and cap")
    print("| configuration | reference | precision | k | tolerance | neighbours | prior df | "
          "min pairs | incumbent | measurements | seconds: median | mean | error: median | "
          "90th pct | max | interval holds the reference | pruned |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    all_series = [series_of(segment["runs"]) for segment in data["segments"]]
    for segment, series in zip(data["segments"], all_series):
        truth_interval = reference(series, TimingPolicy(prior_df=0))
        truth = truth_interval.value
        for precision, k, tolerance, cap, neighbours, prior_df, pairs, factor in \
                itertools.product(args.precision, args.per_plain, args.tolerance,
                                  args.max_tolerance or [None], args.neighbours, args.prior_df,
                                  args.min_pairs, args.incumbent or [None]):
            cap = max(tolerance, TimingPolicy.max_tolerance) if cap is None else cap
            policy = TimingPolicy(tolerance=tolerance, max_tolerance=cap, neighbours=neighbours,
                                  prior_df=prior_df, min_pairs=pairs)
            earlier = [trusted_ratios(other, policy) for other in all_series
                       if other is not series]
            slower_than = None if factor is None else factor * truth
            done = [m for start in range(len(series[1]))
                    if (m := measure(series, start, k, policy, precision, earlier, slower_than))
                    is not None]
            if not done:
                continue
            seconds = [s for _, s in done]
            errors = [abs(i.value / truth - 1) for i, _ in done]
            held = sum(i.low <= truth <= i.high for i, _ in done) / len(done)
            pruned = "-" if slower_than is None else \
                f"{sum(i.high < slower_than for i, _ in done) / len(done):.0%}"
            print(f"| {segment['config']} | {truth_interval} | {precision:.0%} | {k} | "
                  f"{tolerance:.0%}-{cap:.0%} | {neighbours} | {prior_df} | {pairs} | "
                  f"{'-' if factor is None else f'{factor:g}x'} | {len(done)} | "
                  f"{statistics.median(seconds):.1f} | {statistics.fmean(seconds):.1f} | "
                  f"{statistics.median(errors):.1%} | {_quantile(errors, 0.9):.1%} | "
                  f"{max(errors):.1%} | {held:.0%} | {pruned} |")


if __name__ == "__main__":
    main()
