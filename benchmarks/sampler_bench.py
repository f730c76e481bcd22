"""Which sampler finds the answer soonest: a tabular benchmark of the tuner's search.

`record` measures every distinct configuration of a combo once, with the tuner's own evaluator
(speedup with its interval, loss with its interval), and writes the table. `replay` runs the
tuner's real search layer (runner, objective with its pruning and dedup, patience) against the
table instead of a pipeline, through the search's own measurer interface
(tuner/search/measurer.py, implemented here by `TableEvaluator`), as tabular HPO benchmarks
do (HPOBench, NAS-Bench), for several samplers and seeds, and counts the evaluations until
the answer is within 2 % of the table's optimum (the fastest feasible configuration). It also
says when `--patience K` would have stopped each replay, and whether it had found the answer
by then.

The tables in benchmarks/tables/ were recorded with (the 16-point one: --combo deepcache
--num-samples 8; interrupted recordings resume from OUT.partial):

    python benchmarks/sampler_bench.py record --pipe tiny-shapes --combo deepcache+tome \\
        --steps 25 --batch-size 4 --num-samples 16 --device cpu --pairs 3 --max-pairs 6 \\
        --threads 1 --out benchmarks/tables/tiny-shapes-deepcache+tome.json
    python benchmarks/sampler_bench.py replay benchmarks/tables/tiny-shapes-deepcache+tome.json \\
        --seeds 20 --samplers tpe random grid --out .../replay-tpe-random-grid.json
    # the points that may be the optimum, raced to +-1 % (the "-raced" table; see remeasure)
    python benchmarks/sampler_bench.py remeasure \\
        benchmarks/tables/tiny-shapes-deepcache+tome.json \\
        --out benchmarks/tables/tiny-shapes-deepcache+tome-raced.json
    python benchmarks/sampler_bench.py replay ... --budget 0.05 --samplers tpe \
        --out .../replay-tpe-1objective-0.05.json   # also 0.01, 0.02
    python benchmarks/sampler_bench.py markdown .../replay-*.json   # BENCHMARKS.md's rows

Tables and replays over 50 KB are stored compressed (`python benchmarks/stored.py pack FILE`);
every command here reads a file plain or as its `.xz` (or older `.gz`), named either way.

The replays with speedup and loss as two objectives (`replay-tpe-random-grid.json`,
`replay-2objectives-*`, `replay-gp.json`) ran at commit 53f231c, whose studies had two
objectives by default.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import stored  # noqa: E402 - the tables and replays are stored compressed
from tuner.record import QualityEstimate, SpeedEstimate  # noqa: E402
from tuner.search.measurer import Evaluation, Measurer, Race  # noqa: E402
from tuner.setting import Goal, Setting  # noqa: E402

WITHIN = 0.02  # "found" = within 2 % of the optimum's speedup
# The table's points are screening estimates (+-5 %): within 5 % is the closest the table can
# tell apart from the optimum, and is reported beside the 2 % the benchmark is defined with.
NEAR = 0.05


# -- recording a table ------------------------------------------------------------------------


def record(args) -> None:
    import torch

    from tuner import accelerators
    from tuner.accelerators import AcceleratorError
    from tuner.app import build
    from tuner.options import RunOptions

    options = RunOptions(pipe=args.pipe, steps=args.steps, batch_size=args.batch_size,
                         num_samples=args.num_samples, device=args.device,
                         goal=Goal(metric=args.metric),
                         timing_pairs=args.pairs, max_timing_pairs=args.max_pairs,
                         threads=args.threads, progress=False)
    session = build(options, say=lambda m: print(m, file=sys.stderr))
    ev, s = session.evaluator, session.setting
    ev.measure_baseline()
    grid = accelerators.grid(args.combo)
    out, partial = Path(args.out), Path(args.out + ".partial")
    table = {"combo": args.combo, "setting": s.as_dict(), "metric": args.metric,
             "device": s.device, "torch_threads": torch.get_num_threads(),
             "baseline_latency": ev.plain_runs.latency, "seconds": 0.0, "grid": [],
             "points": {}}
    if partial.exists():  # an interrupted recording of the same table goes on where it stopped
        earlier = json.loads(partial.read_text())
        if (earlier["combo"], earlier["setting"]) == (args.combo, s.as_dict()):
            table["points"], table["seconds"] = earlier["points"], earlier["seconds"]
            print(f"resuming {partial}: {len(table['points'])} points", file=sys.stderr)
    seen = table["points"]
    out.parent.mkdir(parents=True, exist_ok=True)
    for values in itertools.product(*grid.values()):
        config = accelerators.split_params(dict(zip(grid, values)))
        key = ev.canonical_key(config)
        if key not in seen:
            started = time.perf_counter()
            try:
                e = ev.evaluate(config)
                seen[key] = {"speed": e.speed.as_dict(), "quality": e.quality.as_dict()}
            except AcceleratorError as err:
                seen[key] = {"invalid": str(err)}
            table["seconds"] += time.perf_counter() - started
            partial.write_text(json.dumps(table) + "\n")
            print(f"{len(seen):4d} {json.dumps(config)} {seen[key].get('invalid') or ''}"
                  f"{e.speed.value if 'speed' in seen[key] else ''}", file=sys.stderr)
        table["grid"].append({"params": dict(zip(grid, values)), "canonical": key})
    out.write_text(json.dumps(table, indent=1) + "\n")
    partial.unlink(missing_ok=True)
    print(f"wrote {out}: {len(table['grid'])} grid points, {len(seen)} distinct",
          file=sys.stderr)


def remeasure(args) -> None:
    """Race the points that may be the table's optimum, so that "the optimum" is one.

    A table's points are screening estimates (+-5 %, a few pairs each), and its maximum is a
    maximum over noisy estimates: the winner's curse the tuner's confirmation race exists for.
    The deepcache+tome table's optimum, 1.60x [1.44, 1.78] at 6 pairs, overlaps a dozen
    points at 1.46-1.55x. This measures again, in one race of the tuner's own evaluator
    (every candidate in the same rounds, interleaved with plain runs), every point that is
    feasible at one of `--budgets` and whose interval reaches that budget's optimum's lower
    bound, to `--precision`, and stores the result beside the screening estimate as "raced".
    A replay then answers evaluations with the screening estimate (what a search sees) and
    races, the optimum and "found" with the raced one, as tabular benchmarks average repeated
    measurements into their reference values (HPOBench's multi-seed tables).
    """
    import torch

    from tuner import accelerators
    from tuner.app import build
    from tuner.options import RunOptions

    data = stored.read_json(args.table)
    contenders = {}
    for budget in args.budgets:
        table = Table(data, Goal(loss_budget=budget, metric=data["metric"]))
        feasible = table.feasible()
        if not feasible:
            continue
        low = table.speed(max(feasible, key=lambda k: table.speed(k).value)).speedup.low
        contenders.update((k, None) for k in feasible if table.speed(k).speedup.high >= low)
    s = Setting.from_dict(data["setting"])
    options = RunOptions(pipe=s.pipe, steps=s.steps, batch_size=s.batch_size,
                         num_samples=s.num_samples, device="cpu" if "CPU" in s.device else "auto",
                         goal=Goal(metric=data["metric"]), timing_precision=args.precision,
                         max_timing_pairs=args.max_pairs, threads=data["torch_threads"],
                         progress=False)
    session = build(options, say=lambda m: print(m, file=sys.stderr))
    ev = session.evaluator
    keys = list(contenders)
    print(f"racing {len(keys)} points ({torch.get_num_threads()} threads)", file=sys.stderr)
    started = time.perf_counter()
    # a point is known by its canonical key; any grid row of it gives a config to apply
    params = {r["canonical"]: r["params"] for r in reversed(data["grid"])}
    configs = [accelerators.split_params(params[k]) for k in keys]
    race = ev.race(configs, keep=lambda intervals: set(intervals))
    seconds = time.perf_counter() - started
    for key, speed in zip(keys, race.speeds):
        screened = SpeedEstimate.from_dict(data["points"][key]["speed"])
        data["points"][key]["raced"] = speed.as_dict()
        print(f"{speed.speedup.value:.3f} [{speed.speedup.low:.3f}, {speed.speedup.high:.3f}]"
              f" (screened {screened.value:.3f}) {key}", file=sys.stderr)
    data["race"] = {"points": len(keys), "rounds": race.rounds, "seconds": seconds,
                    "precision": args.precision, "baseline_latency": race.baseline_latency,
                    "budgets": args.budgets}
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}: {len(keys)} points raced in {race.rounds} rounds, "
          f"{seconds:.0f}s", file=sys.stderr)


# -- replaying it ------------------------------------------------------------------------------


class Table:
    """A recorded space. `speed` is a point's screening estimate, what an evaluation returns;
    `true_speed` its raced estimate where `remeasure` raced it, the screening one elsewhere:
    the optimum and "found" are judged by it, and a replayed race returns it."""

    def __init__(self, data: dict, goal: Goal | None):
        self.data, self.goal = data, goal
        self.key_of = {json.dumps(r["params"], sort_keys=True): r["canonical"]
                       for r in data["grid"]}
        self.points = data["points"]
        speeds = [self.true_speed(k).value for k in self.feasible()] if goal else []
        self.optimum = max(speeds) if speeds else None

    def feasible(self) -> list[str]:
        return [k for k, p in self.points.items()
                if "quality" in p and self.quality(k).within(self.goal)]

    def speed(self, key: str) -> SpeedEstimate:
        return SpeedEstimate.from_dict(self.points[key]["speed"])

    def true_speed(self, key: str) -> SpeedEstimate:
        point = self.points[key]
        return SpeedEstimate.from_dict(point.get("raced", point["speed"]))

    def quality(self, key: str) -> QualityEstimate:
        return QualityEstimate.from_dict(self.points[key]["quality"])

    def key(self, config: dict) -> str:
        flat = {f"{name}.{knob}": v for name, knobs in config.items() for knob, v in knobs.items()}
        return self.key_of[json.dumps(flat, sort_keys=True)]


class TableEvaluator(Measurer):
    """The search's measurer (tuner/search/measurer.py) answered from a table: every number
    comes from it, and nothing is run."""

    def __init__(self, table: Table):
        from tuner.evaluator import MeasuredBaseline
        from tuner.timing import Stats, TimingPolicy

        self.table = table
        self.setting = Setting.from_dict(table.data["setting"])
        self.timing = TimingPolicy()
        latency = table.data["baseline_latency"]
        self.baseline = MeasuredBaseline(Stats.of([latency]), [30.0] * self.setting.num_samples,
                                         None)
        self.evaluations: list[str] = []

    @property
    def device(self) -> str:
        """`record` tabulates a combo's grid on the CPU's space (no on/off knobs of a GPU)."""
        return "cpu"

    def canonical_key(self, config) -> str:
        return self.table.key(config)

    def distinct_points(self, combo: str) -> int:
        """The table's points (every combo's, where a table holds several)."""
        return len(self.table.points)

    def check(self, config) -> None:
        """A point found invalid while recording fails when evaluated (`evaluate`)."""

    def measure_baseline(self):
        return self.baseline

    @property
    def plain_latency(self) -> float:
        return self.table.data["baseline_latency"]

    def evaluate(self, config, *, slower_than=None, loss_budget=None) -> Evaluation:
        from tuner.accelerators import NoEffect
        from tuner.record import Pruned

        key = self.table.key(config)
        self.evaluations.append(key)
        point = self.table.points[key]
        if "invalid" in point:
            raise NoEffect(point["invalid"])
        speed, quality = self.table.speed(key), self.table.quality(key)
        if slower_than is not None and speed.speedup.high < slower_than:
            # as the evaluator: pruned for its speed, before any quality work
            return Evaluation(config, speed, None, Pruned.SLOW, sample_images=None)
        pruned = Pruned.LOSS if loss_budget is not None and quality.loss.low > loss_budget \
            else None
        return Evaluation(config, speed, quality, pruned, sample_images=None)

    @property
    def held_out_seeds(self) -> tuple[int, int]:
        s = self.setting
        return s.seed + s.num_samples, s.seed + 2 * s.num_samples - 1

    def held_out_quality(self, config) -> QualityEstimate:
        """The table measured each point on one set of images: its quality again."""
        return self.table.quality(self.table.key(config))

    def race(self, configs, keep, *, max_rounds=None) -> Race:
        return Race([self.table.true_speed(self.table.key(c)) for c in configs],
                    self.table.data["baseline_latency"], 0)


PATIENCES = (10, 20, 30, 40, 60)


def replay_once(table: Table, sampler: str, seed: int, budget: int, *,
                patience: int | None = None, patiences: tuple[int, ...] = PATIENCES) -> dict:
    """One search against the table. Records after how many evaluations the answer was within
    2 % of the optimum (`found_at`) and, for each K in `patiences`, after how many a study with
    `--patience K` would have stopped (`stops`, by the runner's own rule, `runner.stalled`:
    computed from the records alone, without the races of unconfirmed progress: on a table
    without raced points one would re-measure the table's own estimates). The search itself
    races each new best before it prunes under it, as the runner does (a replayed race returns
    the table's raced estimate, `true_speed`);
    `near_at`: within 5 % (NEAR).
    The replay goes on until every K has stopped and the answer is found, or the space is
    exhausted; `patience` is passed to the runner itself (as `--patience` is)."""
    import optuna

    from tuner.record import trial_records
    from tuner.search.runner import SearchPlan, run_combo, stalled

    ev = TableEvaluator(table)
    storage = optuna.storages.InMemoryStorage()
    plan = SearchPlan(combos=(table.data["combo"],), trials=budget, sampler=sampler, seed=seed,
                      sampler_seed=seed, patience=patience, progress=False)
    found_at, near_at, stops, reached = None, None, {}, {}
    best = 0.0
    started = time.perf_counter()

    def after_trial(study, trial):  # after every finished trial (run_combo's callbacks)
        nonlocal found_at, near_at, best
        records = trial_records(study)
        n = sum(r.evaluated for r in records)
        ok = [r.canonical for r in records if r.feasible(table.goal)]
        best = max((table.true_speed(k).value for k in ok), default=0.0)
        if found_at is None and best >= (1 - WITHIN) * table.optimum:
            found_at = n
        if near_at is None and best >= (1 - NEAR) * table.optimum:
            near_at = n
        for k in patiences:
            if k not in stops and stalled(records, table.goal, k, ev.timing.precision):
                stops[k], reached[k] = n, best / table.optimum
        if found_at is not None and len(stops) == len(patiences):
            raise _Seen  # out of the runner's loop (study.stop() ends one optimize call only)

    try:
        run_combo(ev, storage, table.data["combo"], table.goal, plan, prompts=[],
                  callbacks=[after_trial])
    except _Seen:
        pass
    evaluations = len(set(ev.evaluations))
    return {"sampler": sampler, "seed": seed, "found_at": found_at, "near_at": near_at,
            "evaluations": evaluations, "order": ev.evaluations,
            "stops": {k: stops.get(k, evaluations) for k in patiences},
            # the answer's true speedup where each patience stops, over the optimum's
            "reached": {k: reached.get(k, best / table.optimum) for k in patiences},
            "seconds": time.perf_counter() - started}


class _Seen(Exception):
    """Everything a replay records is known: the search can stop."""


def _quantile(values: list[float], q: float) -> float:
    """The q-quantile by rank (the smallest value with at least q of them at or below it)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median: the order statistics k and n + 1 - k with
    k the largest rank such that P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2 (the sign
    test's interval). Its coverage is at least `confidence`; (min, max) when n is too small."""
    ordered, n = sorted(values), len(values)
    below, k = 0.0, 0
    while k < n // 2:
        below += math.comb(n, k) / 2 ** n  # P(Binomial(n, 1/2) = k), summed: P(X < k + 1)
        if below > (1 - confidence) / 2:
            break
        k += 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


def summarize(runs: list[dict], patiences: tuple[int, ...] = PATIENCES) -> dict:
    """Per sampler: evaluations until found (median with its 95 % interval, p90; never found
    counts as infinite), and per patience K the share of runs that found the answer before
    stopping and the evaluations a study with K spends (median, p90)."""
    summary = {}
    for sampler in dict.fromkeys(r["sampler"] for r in runs):
        mine = [r for r in runs if r["sampler"] == sampler]
        found = [r["found_at"] or math.inf for r in mine]
        near = [r.get("near_at") or math.inf for r in mine]
        summary[sampler] = {
            "runs": len(mine), "median": statistics.median(found), "p90": _quantile(found, 0.9),
            "median_interval": _median_interval(found),
            "never": sum(f == math.inf for f in found),
            "near": {"median": statistics.median(near), "p90": _quantile(near, 0.9)},
            "patience": {k: {"found": sum(r["found_at"] is not None
                                          and r["found_at"] <= r["stops"][k]
                                          for r in mine) / len(mine),
                             "median": statistics.median(r["stops"][k] for r in mine),
                             "worst_reached": min(r["reached"][k] for r in mine),
                             "median_reached": statistics.median(r["reached"][k] for r in mine),
                             "p90": _quantile([r["stops"][k] for r in mine], 0.9)}
                         for k in patiences}}
    return summary


def replay(args) -> None:
    data = stored.read_json(args.table)
    goal = Goal(loss_budget=args.budget, metric=data["metric"])
    table = Table(data, goal)
    if table.optimum is None:
        sys.exit("no feasible point in the table at this budget")
    distinct, grid_size = len(table.points), len(data["grid"])
    near = sum(1 for k in table.feasible()
               if table.true_speed(k).value >= (1 - WITHIN) * table.optimum)
    print(f"{args.table}: {grid_size} grid points, {distinct} distinct; optimum "
          f"{table.optimum:.3f}x; within {WITHIN:.0%} of it: {near} points", file=sys.stderr)
    runs = []
    for sampler in args.samplers:
        for seed in range(args.seeds):
            run = replay_once(table, sampler, seed, budget=grid_size)
            runs.append(run)
            print(f"{sampler:6s} seed {seed:2d}: found at {run['found_at']}, stops "
                  f"{run['stops']} ({run['seconds']:.1f}s)", file=sys.stderr)
            if args.out:  # after every run: a long replay stopped early keeps what it has
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(
                    {"table": args.table, "budget": args.budget, "grid": grid_size,
                     "distinct": distinct, "optimum": table.optimum, "near": near,
                     "summary": summarize(runs), "runs": runs}, indent=1) + "\n")
    print(json.dumps(summarize(runs), indent=1))


def markdown(args) -> None:
    """The BENCHMARKS.md rows of one or more replay files: samplers, then patience (TPE)."""
    summary = {}
    for path in args.replays:
        data = stored.read_json(path)
        for sampler, v in data["summary"].items():  # files written before the interval was
            v.setdefault("median_interval", _median_interval(
                [r["found_at"] or math.inf for r in data["runs"] if r["sampler"] == sampler]))
        summary.update(data["summary"])
    for sampler, v in summary.items():
        low, high = v["median_interval"]
        print(f"| {sampler} ({v['runs']} seeds) | {v['median']:g} [{low:g}, {high:g}] | "
              f"{v['p90']:g} | "
              f"{v['near']['median']:g} | {v['near']['p90']:g} |")
    print()
    for k, p in summary[args.patience_of]["patience"].items():
        worst = f"{p['worst_reached']:.0%} of the optimum" if p["worst_reached"] \
            else "nothing feasible yet"
        print(f"| {k} | {p['found']:.0%} | {p['median']:g} | {p['p90']:g} | {worst} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--pipe", default="tiny-shapes")
    rec.add_argument("--combo", default="deepcache+tome")
    rec.add_argument("--steps", type=int, default=20)
    rec.add_argument("--batch-size", type=int, default=4)
    rec.add_argument("--num-samples", type=int, default=16)
    rec.add_argument("--metric", default="clip")
    rec.add_argument("--device", default="auto")
    rec.add_argument("--pairs", type=int, default=3)
    rec.add_argument("--max-pairs", type=int, default=12)
    rec.add_argument("--threads", type=int)
    rec.add_argument("--out", required=True)
    rep = sub.add_parser("replay")
    rep.add_argument("table")
    rep.add_argument("--budget", type=float, default=0.02)
    rep.add_argument("--seeds", type=int, default=20)
    rep.add_argument("--samplers", nargs="+", default=["tpe", "random", "grid", "gp"])
    rep.add_argument("--out")
    rem = sub.add_parser("remeasure")
    rem.add_argument("table")
    rem.add_argument("--budgets", nargs="+", type=float, default=[0.01, 0.02, 0.05])
    rem.add_argument("--precision", type=float, default=0.01)
    rem.add_argument("--max-pairs", type=int, default=24)
    rem.add_argument("--out", required=True)
    md = sub.add_parser("markdown")
    md.add_argument("replays", nargs="+")
    md.add_argument("--patience-of", default="tpe")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    {"record": record, "remeasure": remeasure, "replay": replay,
     "markdown": markdown}[args.command](args)


if __name__ == "__main__":
    main()
