"""Exploratory, not a benchmark of the tuner as it is: Optuna TPE settings other than the
tuner's (tuner.search.space.make_sampler), replayed on the deepcache+tome table through
sampler_bench.replay_once. Run from the repository root:

    python benchmarks/results/2026-12-02-sampler-variants/variants.py NAME SEEDS FIRST BUDGET

Output: one line (evaluations until found: median (95 % interval), 90th percentile, and the
share of replays in which --patience 40 found the optimum); variants.txt holds those run."""

import math
import sys

sys.path[:0] = [".", "benchmarks"]

import optuna  # noqa: E402

import sampler_bench as sb  # noqa: E402
import stored  # noqa: E402
import tuner.search.runner as runner  # noqa: E402
from tuner.setting import Goal  # noqa: E402

VARIANTS = {
    "default": {},
    "n_ei_64": {"n_ei_candidates": 64},
    "n_ei_128": {"n_ei_candidates": 128},
    "prior_0.5": {"prior_weight": 0.5},
    # Optuna's default gamma is min(ceil(0.1 n), 25): the best 10 % are the "good" points.
    "gamma_15": {"gamma": lambda n: min(math.ceil(0.15 * n), 25)},
    "gamma_12": {"gamma": lambda n: min(math.ceil(0.125 * n), 25)},
    "startup_5": {"n_startup_trials": 5},
    "startup_20": {"n_startup_trials": 20},
    "endpoints": {"consider_endpoints": True},
}
UNIVARIATE = {"univariate": {}}  # multivariate=False
name, seeds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100
first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
budget = float(sys.argv[4]) if len(sys.argv) > 4 else 0.02
tuners = runner.make_sampler


def make(kind, combo, *, seed, device="cpu"):
    if kind == "tpe":  # the tuner's own TPE settings, plus the variant's
        return optuna.samplers.TPESampler(seed=seed, multivariate=name not in UNIVARIATE,
                                          constant_liar=True,
                                          **{**VARIANTS, **UNIVARIATE}[name])
    return tuners(kind, combo, seed=seed, device=device)


runner.make_sampler = make
data = stored.read_json("benchmarks/tables/tiny-shapes-deepcache+tome.json")
table = sb.Table(data, Goal(loss_budget=budget, metric=data["metric"]))
runs = [sb.replay_once(table, "tpe", s, budget=len(data["grid"]))
        for s in range(first, first + seeds)]
summary = sb.summarize(runs)["tpe"]
print(name, seeds, first, budget, "median", summary["median"], summary["median_interval"],
      "p90", summary["p90"], "never", summary["never"], "patience40",
      summary["patience"][40]["found"])
