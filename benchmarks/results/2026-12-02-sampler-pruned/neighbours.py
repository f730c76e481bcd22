"""Exploratory, not a benchmark of the tuner as it is: the tuner's TPE with a local search
around the incumbent added (SMAC's one-exchange neighbourhood: one knob one step away; Hutter,
Hoos and Leyton-Brown 2011, sec. 4.3), replayed on the deepcache+tome table through
sampler_bench.replay_once. Run from the repository root:

    python benchmarks/results/2026-12-02-sampler-pruned/neighbours.py MODE PERIOD SEEDS BUDGET

MODE all: whenever the incumbent changes, queue all its unanswered neighbours (they run before
TPE proposes again). MODE every: every PERIOD-th evaluation is one unanswered neighbour of the
incumbent, drawn at random. Output: one line, as variants.py's; neighbours.txt holds those run.
"""

import random
import sys

sys.path[:0] = [".", "benchmarks"]

import sampler_bench as sb  # noqa: E402
import stored  # noqa: E402
import tuner.search.runner as runner  # noqa: E402
from tuner.accelerators import grid  # noqa: E402
from tuner.answer import incumbent  # noqa: E402
from tuner.setting import Goal  # noqa: E402

mode, period, seeds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
budget = float(sys.argv[4]) if len(sys.argv) > 4 else 0.02
data = stored.read_json("benchmarks/tables/tiny-shapes-deepcache+tome.json")
table = sb.Table(data, Goal(loss_budget=budget, metric=data["metric"]))
COMBO = data["combo"]
state: dict = {}


def neighbours(params: dict) -> list[dict]:
    out = []
    for key, values in grid(COMBO).items():
        i = values.index(params[key])
        out += [{**params, key: values[j]} for j in (i - 1, i + 1) if 0 <= j < len(values)]
    return out


def local_step(study, records) -> None:
    best = incumbent(records, table.goal)
    if best is None:
        return
    answered = {r.canonical for r in records if r.answered}
    flat = {f"{a}.{k}": v for a, knobs in best.config.items() for k, v in knobs.items()}
    pending = {}
    for p in neighbours(flat):
        key = table.key(runner.split_params(p))
        if key not in answered:
            pending.setdefault(key, p)
    if not pending:
        return
    done = sum(r.evaluated for r in records)
    if mode == "all" and state.get("best") != best.number:
        state["best"] = best.number
        for p in pending.values():
            study.enqueue_trial(p, skip_if_exists=True)
    elif mode == "every" and done % period == period - 1 and state.get("done") != done:
        state["done"] = done
        study.enqueue_trial(state["rng"].choice(list(pending.values())), skip_if_exists=True)


opened, streak = runner.open_study, runner._free_streak


def open_study(*args, **kwargs):
    state["study"] = opened(*args, **kwargs)
    return state["study"]


def free_streak(records):  # called once per loop of run_combo, before each trial
    local_step(state["study"], records)
    return streak(records)


runner.open_study, runner._free_streak = open_study, free_streak
runs = []
for seed in range(seeds):
    state.clear()
    state["rng"] = random.Random(seed)
    runs.append(sb.replay_once(table, "tpe", seed, budget=len(data["grid"])))
summary = sb.summarize(runs)["tpe"]
print(mode, period, seeds, budget, "median", summary["median"], summary["median_interval"],
      "p90", summary["p90"], "never", summary["never"], "patience40",
      summary["patience"][40]["found"], flush=True)
