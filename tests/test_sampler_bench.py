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
import stored  # noqa: E402
from tuner.setting import Goal  # noqa: E402


@pytest.fixture(scope="module")
def table():
    return sampler_bench.Table(json.loads(TABLE.read_text()), Goal(loss_budget=0.02))


def test_the_table_has_every_grid_point_and_a_feasible_optimum(table):
    assert len(table.data["grid"]) == 16 and len(table.points) == 16
    assert table.optimum is not None and table.optimum > 1.5


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_replay_finds_the_tables_optimum_through_the_real_search(table, sampler):
    from tuner import accelerators
    from tuner.search import confirm, objective, runner, space

    modules = (accelerators, confirm, objective, runner, space)
    before = [dict(vars(m)) for m in modules]
    for seed in range(3):
        run = sampler_bench.replay_once(table, sampler, seed, budget=16, patiences=(2, 4))
        assert run["found_at"] is not None and 1 <= run["found_at"] <= run["evaluations"] <= 16
        assert len(set(run["order"])) == len(run["order"])  # no configuration twice
        assert 2 < run["stops"][2] <= run["stops"][4] <= 16
    # The search ran through the measurer interface: no module of the tuner was patched.
    assert [dict(vars(m)) for m in modules] == before


def test_the_table_replays_through_the_searchs_measurer_interface(table):
    """Every abstract member of the interface is the table's own; the search reaches no
    pipeline (it has none)."""
    from tuner.search.measurer import Measurer

    ev = sampler_bench.TableEvaluator(table)
    assert isinstance(ev, Measurer) and not hasattr(ev, "pipe")
    key = next(iter(table.points))
    params = next(r["params"] for r in table.data["grid"] if r["canonical"] == key)
    from tuner import accelerators

    config = accelerators.split_params(params)
    assert ev.canonical_key(config) == key and ev.check(config) is None
    assert ev.distinct_points("deepcache") == 16 and ev.device == "cpu"
    assert ev.plain_latency == table.data["baseline_latency"]


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

    tables = [stored.read_json(TABLE),
              stored.read_json(TABLE.with_name("tiny-shapes-deepcache+tome.json"))]
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
    plan = SearchPlan(combos=("deepcache", "deepcache+tome"), trials=8, sampler="random", seed=0,
                      sampler_seed=0, patience=None, progress=False)

    def confirmations():
        return [StudyRecord.of(optuna.load_study(study_name=s.study_name, storage=storage))
                .confirmation for s in optuna.get_all_study_summaries(storage)]

    run_search(ev, storage, both.goal, plan, prompts=[])
    first, races = confirmations(), len(raced)
    # each new best as it came, each combo's answer, then the two answers
    assert races >= 3
    run_search(ev, storage, both.goal, plan, prompts=[])  # resumed: nothing left to do
    assert len(raced) == races
    assert confirmations() == first and all(c.judged is not None for c in first)


def _both_tables():
    """The DeepCache table and the DeepCache+ToMe one as one table: two combos of one run."""
    tables = [stored.read_json(TABLE),
              stored.read_json(TABLE.with_name("tiny-shapes-deepcache+tome.json"))]
    return sampler_bench.Table({**tables[0], "grid": tables[0]["grid"] + tables[1]["grid"],
                                "points": {**tables[0]["points"], **tables[1]["points"]}},
                               Goal(loss_budget=0.02))


def test_a_later_combo_prunes_under_the_answer_an_earlier_one_confirmed():
    """Looking for the fastest configuration across combos, a configuration slower than an
    answer already confirmed cannot be the overall answer: it stops after its speed. Run alone
    later, the combo evaluates those configurations again and gets an answer of its own."""
    import optuna

    from tuner.answer import answer
    from tuner.record import Pruned, StudyRecord, trial_records
    from tuner.search.runner import SearchPlan, floor_of, run_search

    both = _both_tables()
    storage = optuna.storages.InMemoryStorage()
    plan = SearchPlan(combos=("deepcache", "deepcache+tome"), trials=30, sampler="random", seed=0,
                      sampler_seed=0, patience=None, progress=False)
    ev = sampler_bench.TableEvaluator(both)
    run_search(ev, storage, both.goal, plan, prompts=[])
    studies = {StudyRecord.of(s).combo: s for s in (
        optuna.load_study(study_name=n, storage=storage)
        for n in optuna.get_all_study_names(storage))}
    floor = floor_of([studies["deepcache"]], both.goal)
    chosen = StudyRecord.of(studies["deepcache"]).confirmation.speeds
    assert floor == max(s.speedup.low for s in chosen.values())
    later = trial_records(studies["deepcache+tome"])
    below = [r for r in later if r.pruned == Pruned.FLOOR]
    assert len(below) >= 10
    for r in below:  # pruned for the floor: never scored, and truly below it
        assert r.state == "PRUNED" and r.quality is None
        assert r.pruned_below == floor and r.speed.speedup.high < floor
    for r in later:  # and nothing the floor would prune was scored
        if r.original and r.quality is not None:
            assert r.speed.speedup.high >= floor
    frozen = {t.number: t for t in studies["deepcache+tome"].trials}
    assert all(frozen[r.number].intermediate_values == {0: r.speed.value} for r in below)
    assert floor_of([studies["deepcache"]], Goal(loss_budget=0.02, req_speedup=1.2)) is None

    # The same combo alone: no floor, so its floor-pruned configurations are evaluated again
    # when proposed, and it answers on its own.
    alone = SearchPlan(combos=("deepcache+tome",), trials=60, sampler="random", seed=0,
                       sampler_seed=0, patience=None, progress=False)
    ev = sampler_bench.TableEvaluator(both)
    run_search(ev, storage, both.goal, alone, prompts=[])
    again = set(ev.evaluations) & {r.canonical for r in below}
    assert again  # the random stream proposes the same configurations first
    records = trial_records(optuna.load_study(study_name=studies["deepcache+tome"].study_name,
                                              storage=storage))
    for key in again:
        latest = [r for r in records if r.canonical == key and r.original][-1]
        assert latest.pruned != Pruned.FLOOR
    study = StudyRecord.of(studies["deepcache+tome"])
    found = answer(study.setting, both.goal, [(study, records)])
    assert found.combos[0].choice is not None


def test_a_combo_without_an_answer_of_its_own_says_it_was_below_another():
    from tuner.answer import ComboAnswer

    below = ComboAnswer("deepcache+tome", "s", None, 40, 40, False, 2.77)
    assert below.missing == "none feasible faster than 2.77x (another combo's answer)"
    assert ComboAnswer.from_dict(below.as_dict()) == below
    old = {k: v for k, v in below.as_dict().items() if k != "floor"}  # written before floors
    assert ComboAnswer.from_dict(old).missing == "no feasible configuration"


def test_a_trial_pruned_under_a_floor_settles_only_runs_with_a_floor_as_high():
    from tuner.record import Pruned, TrialRecord

    floored = TrialRecord(1, "PRUNED", canonical="k", pruned=Pruned.FLOOR, pruned_below=2.0)
    assert floored.settles(2.0) and floored.settles(2.5)
    assert not floored.settles(1.9) and not floored.settles(None)
    slow = TrialRecord(2, "PRUNED", canonical="k", pruned=Pruned.SLOW, pruned_below=2.0)
    assert slow.settles(None) and slow.settles(1.0)


# A configuration whose first speed estimate was lucky, and what its race measures instead.
LUCKY = '{"deepcache": {"cache_branch_id": 3, "cache_interval": 2}}'


def _lucky_search(*, refuted: bool, patience: int | None, trials: int = 16):
    """The DeepCache table with LUCKY's first estimate 25 % too fast, searched in the order
    of seed 2's random stream (LUCKY, the last feasible configuration of that order, is then
    its fastest feasible one by that estimate); its race measures the table's own speed
    (`refuted`) or the lucky one again. Returns what the tests look at: the evaluations, the
    races, the answer's configuration and confirmed speed, the study and the evaluator."""
    import copy
    from types import SimpleNamespace

    import optuna

    from tuner.answer import choose, speed_of
    from tuner.evaluator import Race
    from tuner.record import SpeedEstimate, StudyRecord, trial_records
    from tuner.search.runner import SearchPlan, run_combo

    data = json.loads(TABLE.read_text())
    true = SpeedEstimate.from_dict(copy.deepcopy(data["points"][LUCKY]["speed"]))
    speedup = data["points"][LUCKY]["speed"]["speedup"]
    for bound in ("value", "low", "high"):
        speedup[bound] *= 1.25
    table = sampler_bench.Table(data, Goal(loss_budget=0.02))
    ev = sampler_bench.TableEvaluator(table)
    races = []

    def race(configs, keep, **kw):
        keys = [table.key(c) for c in configs]
        races.append(keys)
        return Race([true if k == LUCKY and refuted else table.speed(k) for k in keys],
                    data["baseline_latency"], 3)

    ev.race = race
    plan = SearchPlan(combos=("deepcache",), trials=trials, sampler="random", seed=2,
                      sampler_seed=2, patience=patience, progress=False)
    study = run_combo(ev, optuna.storages.InMemoryStorage(), "deepcache", table.goal, plan,
                      prompts=[])
    from tuner.search.confirm import confirm_study

    confirm_study(ev, study, table.goal)  # as run_search does after the search
    confirmation = StudyRecord.of(study).confirmation
    chosen, _ = choose(trial_records(study), table.goal, confirmation)
    return SimpleNamespace(evaluations=ev.evaluations, races=races,
                           chosen=table.key(chosen.config),
                           speed=speed_of(chosen, confirmation), study=study, evaluator=ev)


def test_a_lucky_estimate_is_raced_before_it_postpones_the_stop():
    """With --patience, a new best counts as progress once its race confirms it: a lucky first
    estimate taken back by its race does not buy `patience` more evaluations."""
    plain = sampler_bench.replay_once(
        sampler_bench.Table(json.loads(TABLE.read_text()), Goal(loss_budget=0.02)), "random",
        2, budget=16, patience=3, patiences=(3,))
    assert LUCKY in plain["order"]
    run = _lucky_search(refuted=True, patience=3)
    assert run.evaluations == plain["order"]  # stopped where the study without the luck stopped
    assert any(LUCKY in race for race in run.races) and run.chosen != LUCKY
    assert run.speed.value < 1.25 * json.loads(TABLE.read_text())["points"][LUCKY]["speed"][
        "speedup"]["value"]
    # Confirmed by its race, the same estimate is progress, and the study goes on.
    run = _lucky_search(refuted=False, patience=3)
    assert len(run.evaluations) > len(plain["order"]) and run.chosen == LUCKY


def test_a_lucky_best_races_the_answer_it_would_replace():
    """A new best is raced with the answer it would replace (the incumbent) before anything is
    pruned under it. When the race measures it far below its first estimate, the incumbent,
    measured in the same race, stays the answer, not the newcomer for having raced."""
    table = sampler_bench.Table(json.loads(TABLE.read_text()), Goal(loss_budget=0.02))
    # Six evaluations: the search stops right after LUCKY, whose lucky interval overlaps no
    # other feasible configuration's.
    run = _lucky_search(refuted=True, patience=None, trials=6)
    assert run.evaluations[-1] == LUCKY
    assert LUCKY not in run.races[0] and LUCKY in run.races[-1]
    assert len(run.races[-1]) == 2  # with the incumbent

    fastest = max((k for k in set(run.evaluations) if "quality" in table.points[k]
                   and table.quality(k).within(table.goal)), key=lambda k: table.speed(k).value)
    assert run.chosen == fastest != LUCKY and run.speed == table.speed(fastest)
    # Configurations are then pruned under the answer's confirmed speed, not LUCKY's estimate.
    from tuner.search.objective import Objective

    objective = Objective(run.evaluator, "deepcache", table.goal, budget=16)
    assert objective._slower_than(run.study) == (run.speed.speedup.low, False)
    assert run.speed.speedup.low < 1.25 * table.speed(LUCKY).speedup.low


def test_a_raced_point_is_judged_by_its_race_and_searched_by_its_screening():
    """`remeasure` stores a race's estimate beside a point's screening one: evaluations still
    return the screening estimate (what a search sees), while races, the optimum and "found"
    use the raced one (a screening maximum is the winner's curse)."""
    data = json.loads(TABLE.read_text())
    screened = sampler_bench.Table(data, Goal(loss_budget=0.02))
    best = max(screened.feasible(), key=lambda k: screened.speed(k).value)
    raced = json.loads(json.dumps(data["points"][best]["speed"]))
    for bound in ("value", "low", "high"):
        raced["speedup"][bound] *= 0.8
    data["points"][best]["raced"] = raced
    table = sampler_bench.Table(data, Goal(loss_budget=0.02))
    others = max(table.speed(k).value for k in table.feasible() if k != best)
    assert table.optimum == max(others, 0.8 * screened.optimum) < screened.optimum
    assert table.speed(best) == screened.speed(best)
    assert table.true_speed(best).value == pytest.approx(0.8 * screened.optimum)
    params = next(r["params"] for r in data["grid"] if r["canonical"] == best)
    from tuner import accelerators

    race = sampler_bench.TableEvaluator(table).race([accelerators.split_params(params)], None)
    assert race.speeds == [table.true_speed(best)]
    # Found means a point as fast as the optimum by its race, not the best point's screening:
    # when the search meets that point first, its screening says nothing of "found" (and
    # prunes the raced optimum under it, as the real search would before a race).
    feasible, met_best_first = set(table.feasible()), 0
    for seed in range(4):
        run = sampler_bench.replay_once(table, "random", seed, budget=16, patiences=(4,))
        seen = list(dict.fromkeys(run["order"]))
        first = next((i for i, k in enumerate(seen, 1) if k in feasible
                      and table.true_speed(k).value >= 0.98 * table.optimum), None)
        assert run["found_at"] in (None, first)
        if best in seen and seen.index(best) + 1 < (first or 17):
            met_best_first += 1
            assert run["found_at"] != seen.index(best) + 1
    assert met_best_first
