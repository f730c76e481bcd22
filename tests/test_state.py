"""A study's state (tuner/state.py) and the paths by which a race could pick, or label, the
wrong answer: each scenario is built from real Optuna studies and the project's own races,
with a stand-in evaluator whose races return the speeds a test sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from tuner.answer import answer
from tuner.evaluator import Race
from tuner.record import (Confirmation, Pruned, QualityEstimate, SpeedEstimate, StudyRecord,
                          TrialRecord, trial_records)
from tuner.search.confirm import confirm_overall, confirm_study
from tuner.search.studies import open_study
from tuner.setting import Goal, Setting
from tuner.state import StudyState, overall_entries
from tuner.stats import Interval

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import sampler_bench  # noqa: E402

SETTING = Setting(pipe="SD1.5", scheduler="DDIM", steps=50, height=512, width=512, device="CPU",
                  clip_model="c", prompts="p")
DISTRIBUTIONS = {"deepcache.cache_interval": IntDistribution(1, 99)}
BASE = 1.5  # plain seconds per batch


def speed(value: float, low: float | None = None, high: float | None = None) -> SpeedEstimate:
    low = value * 0.98 if low is None else low
    high = value * 1.02 if high is None else high
    return SpeedEstimate(Interval(value, low, high, 4), BASE, 4)


def quality(loss: float) -> QualityEstimate:
    interval = Interval(loss, loss - 0.002, loss + 0.002, 32)
    return QualityEstimate("clip", interval, 30.0, interval, 30.0, 0.9, 32)


def config(tag: int) -> dict:
    return {"deepcache": {"cache_interval": tag}}


class RacingEvaluator:
    """Stands in for the evaluator in races: a configuration measures `speeds[tag]` (its
    cache_interval is its tag) and every race is kept in `races`."""

    def __init__(self):
        self.speeds: dict[int, SpeedEstimate] = {}
        self.races: list[list[int]] = []
        self.plain_latency = BASE

    def race(self, configs, keep, **kwargs) -> Race:
        tags = [c["deepcache"]["cache_interval"] for c in configs]
        self.races.append(tags)
        return Race([self.speeds[t] for t in tags], BASE, 6)


def new_study(storage, combo: str, goal: Goal) -> optuna.Study:
    return open_study(storage, SETTING, combo, goal, ["a prompt"])


def add(study: optuna.Study, tag: int, value: float | None, loss: float | None = None, *,
        low: float | None = None, high: float | None = None, finish: bool = True):
    """A trial measured at `value` [low, high] with `loss`; left RUNNING unless `finish`."""
    trial = study.ask(DISTRIBUTIONS)
    TrialRecord.write_claim(trial, config=config(tag), canonical=f"c{tag}",
                            worker={"host": "h", "pid": 1}, sampler_seed=1)
    if finish:
        finish_trial(study, trial, value, loss, low=low, high=high)
    return trial


def finish_trial(study, trial, value, loss, *, low=None, high=None, goal=None):
    goal = goal or StudyRecord.of(study).goal
    TrialRecord.write_result(trial, speed=speed(value, low, high), quality=quality(loss),
                             pruned=None, seconds={}, goal=goal)
    study.tell(trial, value)


def chosen_of(study) -> tuple[TrialRecord | None, bool | None, StudyState]:
    state = StudyState.of(study)
    found, met = state.choose()
    return found, met, state


# -- path 1 ------------------------------------------------------------------------------------

def test_a_required_speedup_races_the_fastest_trial_that_reaches_it():
    """--req-speedup 2.0: four low-loss trials just under it, whose intervals reach it, and one
    at 2.50x that reaches it with 1.2 % loss. The answer before the race is the 2.50x one; the
    race must measure it, and it stays the answer, met. At 9214cba the race measured only the
    four lowest-loss trials, and the answer was one of them, not met ("Nothing reaches")."""
    goal = Goal(loss_budget=0.02, req_speedup=2.0)
    study = new_study(optuna.storages.InMemoryStorage(), "deepcache", goal)
    ev = RacingEvaluator()
    for tag, (value, high) in enumerate([(1.94, 2.02), (1.95, 2.03), (1.96, 2.04),
                                         (1.97, 2.05)]):
        add(study, tag, value, 0.002 + 0.001 * tag, high=high)
        ev.speeds[tag] = speed(value, high=high)
    add(study, 4, 2.50, 0.012, low=2.40, high=2.60)
    ev.speeds[4] = speed(2.50, 2.40, 2.60)
    before, met, _ = chosen_of(study)
    assert (before.number, met) == (4, True)
    assert confirm_study(ev, study, goal)
    assert 4 in ev.races[0]
    chosen, met, state = chosen_of(study)
    assert (chosen.number, met) == (4, True) and state.raced(chosen)
    found = answer(SETTING, goal, [(StudyRecord.of(study), list(state.records))])
    assert found.met and "Meets 2.00x" in found.summary()


# -- path 2 ------------------------------------------------------------------------------------

def test_a_trial_running_when_a_race_began_is_raced_once_it_finishes():
    """Worker 0 races while another worker's trial runs; that trial then finishes at 1.80x,
    faster than the raced 1.50x. It was not measured before the race: the study must race it
    and choose it. At 9214cba the race counted it as measured before (its number was below the
    race's `last_trial`): it was dropped, and the study kept its race, answering 1.50x."""
    goal = Goal(loss_budget=0.02)
    study = new_study(optuna.storages.InMemoryStorage(), "deepcache", goal)
    ev = RacingEvaluator()
    add(study, 0, 1.50, 0.01)
    running = add(study, 1, None, finish=False)
    ev.speeds = {0: speed(1.50), 1: speed(1.80)}
    assert confirm_study(ev, study, goal)
    assert ev.races == [[0]]
    finish_trial(study, running, 1.80, 0.01)
    state = StudyState.of(study)
    assert [t.number for t in state.unjudged()] == [1] and not state.settled()
    assert confirm_study(ev, study, goal)
    assert sorted(ev.races[1]) == [0, 1]
    chosen, _, state = chosen_of(study)
    assert chosen.number == 1 and state.raced(chosen)
    assert state.speed(chosen) == speed(1.80) and state.settled()


# -- path 3 ------------------------------------------------------------------------------------

def test_the_overall_answer_is_a_trial_of_the_race_that_chose_it_at_that_races_number():
    """Combo X's race measures X#0 at 1.60x and X#1 at 1.58x; Y's answer is 1.55x. The overall
    race measures X#0 at 1.53x and Y at 1.55x. The answer is Y at the overall race's number.
    At 9214cba the overall race's record merged X's older speeds: X#1 became X's choice at
    its older 1.58x, labelled confirmed by a race it never ran in, and beat Y."""
    goal = Goal(loss_budget=0.02)
    storage = optuna.storages.InMemoryStorage()
    x, y = new_study(storage, "deepcache", goal), new_study(storage, "deepcache+tome", goal)
    ev = RacingEvaluator()
    add(x, 0, 1.60, 0.01)
    add(x, 1, 1.58, 0.01)
    add(y, 2, 1.55, 0.01)
    ev.speeds = {0: speed(1.60), 1: speed(1.58), 2: speed(1.55)}
    assert confirm_study(ev, x, goal) and confirm_study(ev, y, goal)
    states = [StudyState.of(x), StudyState.of(y)]
    assert overall_entries(states, goal, None)  # the combos' answers are still to compare
    ev.speeds[0] = speed(1.53)
    assert confirm_overall(ev, [x, y], goal)
    assert sorted(ev.races[-1]) == [0, 2]
    overall_race = StudyRecord.of(y).confirmation.race
    found = answer(SETTING, goal, [(StudyRecord.of(s), trial_records(s)) for s in (x, y)])
    assert found.chosen.combo == "deepcache+tome" and found.chosen.trial == 0
    assert found.chosen.confirmed == overall_race and found.chosen.speed == speed(1.55)
    for combo in found.combos:  # every label names a race the trial ran in, at its number
        record = StudyRecord.of(x if combo.combo == "deepcache" else y)
        assert combo.choice.trial in record.confirmation.candidates
        assert combo.choice.speed == record.confirmation.speeds[combo.choice.trial]
    assert found.combos[0].choice.speed == speed(1.53)
    states = [StudyState.of(x), StudyState.of(y)]
    assert overall_entries(states, goal, None) == []  # raced: a rerun has nothing to race


# -- path 4 ------------------------------------------------------------------------------------

def test_only_a_raced_speed_prunes():
    """The DeepCache table, searched in a random order whose first feasible configuration's
    first estimate is 60 % too fast (faster than any): every configuration pruned for its
    speed was pruned under the lower bound of a speed a race measured, never under the lucky
    estimate, and the answer is the table's fastest feasible configuration. At 9214cba every
    later configuration was pruned under the lucky estimate until the study's last race."""
    from tuner.search.runner import SearchPlan, run_combo

    data = json.loads((ROOT / "benchmarks" / "tables" / "tiny-shapes-deepcache.json")
                      .read_text())
    table = sampler_bench.Table(data, Goal(loss_budget=0.02))
    order = sampler_bench.replay_once(table, "random", 2, budget=16, patiences=(4,))["order"]
    lucky = next(k for k in order if k in table.feasible())
    true = {k: table.speed(k) for k in table.points if "speed" in table.points[k]}
    for bound in ("value", "low", "high"):
        data["points"][lucky]["speed"]["speedup"][bound] *= 1.6
    table = sampler_bench.Table(data, Goal(loss_budget=0.02))
    ev = sampler_bench.TableEvaluator(table)
    ev.race = lambda configs, keep, **kw: Race([true[table.key(c)] for c in configs], BASE, 3)
    plan = SearchPlan(combos=("deepcache",), trials=16, sampler="random", seed=2, sampler_seed=2,
                      patience=None, progress=False)
    study = run_combo(ev, optuna.storages.InMemoryStorage(), "deepcache", table.goal, plan,
                      prompts=[])
    confirm_study(ev, study, table.goal)
    pruned = [r for r in trial_records(study) if r.pruned == Pruned.SLOW]
    assert pruned  # the search did prune for speed
    raced_lows = [s.speedup.low for s in true.values()]
    for r in pruned:
        assert r.pruned_below < table.speed(lucky).speedup.low
        assert any(r.pruned_below == pytest.approx(low) for low in raced_lows)
    chosen, _, state = chosen_of(study)
    fastest = max(table.feasible(), key=lambda k: true[k].value)
    assert table.key(chosen.config) == fastest and state.speed(chosen) == true[fastest]


def test_the_state_races_an_unraced_best_before_it_prunes():
    goal = Goal(loss_budget=0.02)
    study = new_study(optuna.storages.InMemoryStorage(), "deepcache", goal)
    add(study, 0, 1.50, 0.01)
    state = StudyState.of(study)
    assert state.floor() is None and state.slower_than(None) == (None, False)
    assert state.wants_race()
    assert not state.wants_race(floor=2.0)  # the run's floor prunes higher anyway
    ev = RacingEvaluator()
    ev.speeds = {0: speed(1.40)}
    confirm_study(ev, study, goal)
    state = StudyState.of(study)
    assert state.floor() == pytest.approx(1.40 * 0.98) and not state.wants_race()
    assert state.slower_than(None) == (pytest.approx(1.40 * 0.98), False)
    assert state.slower_than(None, floor=2.0) == (2.0, True)


# -- path 5 ------------------------------------------------------------------------------------

def test_nothing_reaching_the_requirement_still_measures_and_shows_the_closest():
    """--req-speedup 2.0 on the DeepCache table, which no feasible configuration reaches (its
    fastest within the budget is 1.67x; faster ones lose 5-39 %): the fastest feasible
    configuration is the closest, and it must have been measured for quality to be shown; the
    summary says how many were. At 9214cba every feasible configuration was pruned under 2.0
    before its quality was measured, and the answer claimed that no configuration keeps the
    budget."""
    data = json.loads((ROOT / "benchmarks" / "tables" / "tiny-shapes-deepcache.json")
                      .read_text())
    goal = Goal(loss_budget=0.02, req_speedup=2.0)
    table = sampler_bench.Table(data, goal)
    ev = sampler_bench.TableEvaluator(table)
    from tuner.search.runner import SearchPlan, run_combo

    plan = SearchPlan(combos=("deepcache",), trials=16, sampler="random", seed=0, sampler_seed=0,
                      patience=None, progress=False)
    study = run_combo(ev, optuna.storages.InMemoryStorage(), "deepcache", goal, plan,
                      prompts=[])
    confirm_study(ev, study, goal)
    record = StudyRecord.of(study)
    found = answer(record.setting, goal, [(record, trial_records(study))])
    closest = max(table.feasible(), key=lambda k: table.speed(k).value)
    assert found.met is False and found.chosen is not None
    assert table.key(found.chosen.config) == closest
    summary = found.summary()
    assert summary.startswith("Nothing reaches 2.00x") and "measured for quality" in summary
    assert found.combos[0].scored >= 1


def test_an_answer_says_when_no_configuration_was_measured_for_quality():
    goal = Goal(loss_budget=0.02, req_speedup=5.0)
    study = new_study(optuna.storages.InMemoryStorage(), "deepcache", goal)
    trial = study.ask(DISTRIBUTIONS)
    TrialRecord.write_claim(trial, config=config(0), canonical="c0", worker={"h": 1},
                            sampler_seed=1)
    TrialRecord.write_result(trial, speed=speed(1.5), quality=None, pruned=Pruned.SLOW,
                             seconds={}, goal=goal, pruned_below=5.0)
    study.tell(trial, state=TrialState.PRUNED)
    found = answer(SETTING, goal, [(StudyRecord.of(study), trial_records(study))])
    assert found.chosen is None
    assert "none of the 1 configurations evaluated was measured for quality" in found.summary()


# -- the records: races kept apart, and races written before ------------------------------------

def test_a_race_written_before_judged_was_kept_reads_with_the_old_rule():
    """A race stored with only `last_trial` (and speeds merged from earlier races) judges
    every trial numbered up to it; a merged speed is labelled as measured before that race."""
    from tuner.answer import choice_of, choose

    goal = Goal(loss_budget=0.02)
    stored = {"race": "r2", "at": "t", "baseline_latency": BASE, "rounds": 4,
              "candidates": [1], "last_trial": 2,
              "speeds": {"0": speed(1.7).as_dict(), "1": speed(1.6).as_dict()}}
    race = Confirmation.from_dict(stored)
    assert race.judged is None and race.before(2) and not race.before(3)
    assert Confirmation.from_dict(race.as_dict()) == race and "judged" not in race.as_dict()
    study = new_study(optuna.storages.InMemoryStorage(), "deepcache", goal)
    for tag, value in enumerate([1.8, 1.7, 1.9]):
        add(study, tag, value, 0.01)
    records = trial_records(study)
    chosen, _ = choose(records, goal, race)  # trial 2 (1.9x, unraced) was judged: left out
    assert chosen.number == 0
    record = StudyRecord(study.study_name, SETTING, goal, "deepcache", confirmation=race)
    assert choice_of(record, chosen).confirmed == "before r2"
    assert choice_of(record, records[1]).confirmed == "r2"
    later = Confirmation.from_dict({**stored, "judged": [0, 1]})
    assert later.before(1) and not later.before(2)
    assert Confirmation.from_dict(later.as_dict()) == later
