"""Exploratory (the idea was not adopted): does a warm start help the search? The sampler
benchmark's replay (benchmarks/sampler_bench.py) on the deepcache+tome table, each study cold
(as the tuner does it) or warm: its first trial queued with the deepcache table's optimum at
the same budget, ToMe's knobs left to the sampler, as a warm start from the smaller combo's
answer would do (Feurer, Springenberg and Hutter, AAAI 2015). Run from the repository root:

    python benchmarks/results/2026-12-02-warm-start/warm_replay.py 0.02 20
"""

import json
import sys

sys.path[:0] = [".", "benchmarks"]

import optuna  # noqa: E402

import sampler_bench  # noqa: E402
import stored  # noqa: E402
import tuner.search.runner as runner  # noqa: E402
from tuner.setting import Goal  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
budget, seeds = float(sys.argv[1]), int(sys.argv[2])
goal = Goal(loss_budget=budget, metric="clip")
small = sampler_bench.Table(json.loads(open("benchmarks/tables/tiny-shapes-deepcache.json")
                                       .read()), goal)
best = max((k for k in small.points if "quality" in small.points[k]
            and small.quality(k).within(goal)), key=lambda k: small.speed(k).value)
start = {f"deepcache.{knob}": v for knob, v in json.loads(best)["deepcache"].items()}
print(f"deepcache optimum at {budget:.0%}: {best} {small.speed(best).value:.3f}x")
cold_open = runner.open_study


def warm_open(*args, **kwargs):
    study = cold_open(*args, **kwargs)
    if not study.get_trials():
        study.enqueue_trial(start)
    return study


data = stored.read_json("benchmarks/tables/tiny-shapes-deepcache+tome.json")
table = sampler_bench.Table(data, goal)
for mode, opener in (("cold", cold_open), ("warm", warm_open)):
    runner.open_study = opener
    runs = [sampler_bench.replay_once(table, "tpe", seed, budget=len(data["grid"]))
            for seed in range(seeds)]
    s = sampler_bench.summarize(runs)["tpe"]
    k40 = s["patience"][40]
    print(f"{mode}: found after a median of {s['median']:g} evaluations "
          f"{list(s['median_interval'])} (90th pct {s['p90']:g}); --patience 40 found it in "
          f"{k40['found']:.0%} of {seeds} replays, stopping after a median {k40['median']:g}")
runner.open_study = cold_open
