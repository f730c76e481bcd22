"""The sampler benchmark (benchmarks/sampler_bench.py) replays the tuner's real search layer
against a recorded table: here, the small DeepCache table of tiny-shapes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "tables" / "tiny-shapes-deepcache.json"
sys.path.insert(0, str(ROOT / "benchmarks"))

import sampler_bench  # noqa: E402
from tuner.setting import Goal  # noqa: E402


@pytest.fixture(scope="module")
def table():
    return sampler_bench.Table(json.loads(TABLE.read_text()), Goal(loss_budget=0.02))


def test_the_table_has_every_grid_point_and_a_feasible_optimum(table):
    assert len(table.data["grid"]) == 16 and len(table.points) == 16
    assert table.optimum is not None and table.optimum > 1.5


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_replay_finds_the_tables_optimum_through_the_real_search(table, sampler):
    for seed in range(3):
        run = sampler_bench.replay_once(table, sampler, seed, budget=16, patiences=(2, 4))
        assert run["found_at"] is not None and 1 <= run["found_at"] <= run["evaluations"] <= 16
        assert len(set(run["order"])) == len(run["order"])  # no configuration twice
        assert 2 < run["stops"][2] <= run["stops"][4] <= 16
    # Nothing of the table-driven search leaks into the tuner afterwards.
    from tuner import accelerators
    from tuner.search import objective, runner

    assert accelerators.check.__module__ == "tuner.accelerators"
    assert objective.canonical_key.__module__ == runner.canonical_key.__module__ == \
        "tuner.search.space"
    assert runner.Objective is objective.Objective


def _first_stall(table, order: list[str], patience: int) -> int:
    """Where a study evaluating `order` stops with this patience, by the rule the README states:
    its fastest feasible speedup has not grown by more than 2 % in the last `patience`."""
    best = []
    for key in order:
        feasible = "quality" in table.points[key] and table.quality(key).within(table.goal)
        speed = table.speed(key).value if feasible else 0.0
        best.append(max(speed, best[-1] if best else 0.0))
    for n in range(patience + 1, len(order) + 1):
        before, now = best[n - patience - 1], best[n - 1]
        if not (now > before * 1.02 or (before == 0.0 and now > 0.0)):
            return n
    return len(order)


@pytest.mark.parametrize("patience", [2, 3, 5])
def test_patience_stops_a_study_after_that_many_evaluations_without_progress(table, patience):
    for seed in range(3):
        run = sampler_bench.replay_once(table, "random", seed, budget=16, patience=patience,
                                        patiences=(patience,))
        assert run["evaluations"] == _first_stall(table, run["order"], patience)
        assert run["stops"][patience] == run["evaluations"]


def test_summary_counts_what_patience_would_have_missed():
    runs = [{"sampler": "tpe", "found_at": 5, "near_at": 2, "stops": {3: 4, 10: 12},
             "reached": {3: 0.9, 10: 1.0}},
            {"sampler": "tpe", "found_at": None, "near_at": 7, "stops": {3: 6, 10: 16},
             "reached": {3: 0.8, 10: 0.96}}]
    tpe = sampler_bench.summarize(runs, patiences=(3, 10))["tpe"]
    assert tpe["median"] == float("inf") and tpe["never"] == 1
    assert tpe["near"] == {"median": 4.5, "p90": 7}
    assert tpe["patience"][3]["found"] == 0.0 and tpe["patience"][10]["found"] == 0.5
    assert tpe["patience"][10]["median"] == 14 and tpe["patience"][10]["p90"] == 16
    assert tpe["patience"][3]["worst_reached"] == 0.8


def test_a_resumed_run_with_nothing_new_keeps_its_races():
    """The runner confirms each combo after its search, then the combos' answers against each
    other, on every run; a finished search that resumes has nothing new, and racing it again
    would only spend GPU time."""
    import optuna

    from tuner.record import StudyRecord
    from tuner.search.runner import SearchPlan, run_search

    tables = [json.loads(TABLE.read_text()), json.loads(TABLE.with_name(
        "tiny-shapes-deepcache+tome.json").read_text())]
    points = {**tables[0]["points"], **tables[1]["points"]}
    for point in points.values():  # wide intervals: the two answers overlap, and are raced
        if "speed" in point:
            speedup = point["speed"]["speedup"]
            speedup["low"], speedup["high"] = speedup["value"] / 1.5, speedup["value"] * 1.5
    both = sampler_bench.Table({**tables[0], "grid": tables[0]["grid"] + tables[1]["grid"],
                                "points": points}, Goal(loss_budget=0.02))
    ev = sampler_bench.TableEvaluator(both)
    raced = []
    ev.race = lambda configs, keep, **kw: raced.append(len(configs)) or \
        sampler_bench.TableEvaluator.race(ev, configs, keep, **kw)
    storage = optuna.storages.InMemoryStorage()
    plan = SearchPlan(("deepcache", "deepcache+tome"), trials=8, sampler="random", seed=0,
                      sampler_seed=0, patience=None, progress=False)

    def confirmations():
        return [StudyRecord.of(optuna.load_study(study_name=s.study_name, storage=storage))
                .confirmation for s in optuna.get_all_study_summaries(storage)]

    with sampler_bench.table_driven(both):
        run_search(ev, storage, both.goal, plan, prompts=[])
        first = confirmations()
        assert len(raced) == 3  # each combo's candidates, then the two answers
        run_search(ev, storage, both.goal, plan, prompts=[])  # resumed: nothing left to do
    assert len(raced) == 3
    assert confirmations() == first and all(c.last_trial is not None for c in first)
