"""Exploratory, not a benchmark of the tuner as it is: the trust rule of tuner.timing with another
reference than the fastest neighbour (the median of the neighbours, the second fastest), on
timing_sim.py's simulated runs, with the rule's settings before the variance prior (a 10 % cap,
no prior). Run from the repository root; output: reference-variants.txt."""

import statistics
import sys

sys.path[:0] = [".", "benchmarks"]

import timing_sim  # noqa: E402
import tuner.timing as timing  # noqa: E402
from tuner.timing import TimingPolicy  # noqa: E402


def judged_by(reference):
    def undisturbed(runs, tolerance, *, neighbours):
        ordered = sorted(runs, key=lambda r: r.middle)
        found = []
        for i, run in enumerate(ordered):
            near = sorted(r.seconds for r in ordered[max(0, i - neighbours):i + neighbours + 1])
            if run.seconds <= reference(near) * (1 + tolerance):
                found.append(run)
        return found
    return undisturbed


RULE = TimingPolicy(max_tolerance=0.10, prior_df=0)
VARIANTS = {"fastest (the tuner's)": timing._undisturbed,
            "median": judged_by(statistics.median),
            "second fastest": judged_by(lambda near: near[1] if len(near) >= 4 else near[0])}
for name, rule in VARIANTS.items():
    timing._undisturbed = rule
    for sigma, faults in [(0.02, 0.0), (0.05, 0.0), (0.08, 0.0), (0.02, 0.15), (0.05, 0.15),
                          (0.08, 0.15), (0.03, 0.3)]:
        m = timing_sim.measured(RULE, 0.05, sigma, faults, 300)
        print(f"{name:22s} jitter {sigma:.0%} slowed {faults:.0%}: seconds "
              f"{m['seconds']:5.1f}, error median {m['error']:.1%} p90 {m['p90']:.1%} max "
              f"{m['max']:.1%}, holds {m['held']:.0%}", flush=True)
