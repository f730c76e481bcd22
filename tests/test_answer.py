"""Choosing the answer from a study's trials and presenting it: pure logic on typed records,
read back from real Optuna trials."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from tuner.answer import (Answer, Choice, answer, candidates, choose, pareto_front,
                          still_in_race)
from tuner.record import (Confirmation, Failure, Pruned, QualityEstimate, SpeedEstimate,
                          StudyRecord, TrialRecord)
from tuner.setting import Goal, Setting
from tuner.stats import Interval

GOAL = Goal(loss_budget=0.02)
UPPER = Goal(loss_budget=0.02, loss_bound="upper")
SETTING = Setting(pipe="SD1.5", scheduler="DDIM", steps=50, height=512, width=512)
DISTRIBUTIONS = {"deepcache.cache_interval": IntDistribution(2, 5),
                 "deepcache.cache_branch_id": IntDistribution(0, 3)}


def speed(value: float, half: float = 0.02, base: float = 1.5) -> SpeedEstimate:
    return SpeedEstimate(Interval(value, value * (1 - half), value * (1 + half), 4), base, 4)


def quality(loss: float, half: float = 0.004) -> QualityEstimate:
    interval = Interval(loss, loss - half, loss + half, 32)
    return QualityEstimate("clip", interval, 30.0, interval, 30.0, 0.9, 32)


def make(number: int, speedup: float | None, loss: float | None, *, half: float = 0.02,
         state: TrialState = TrialState.COMPLETE, duplicate_of: int | None = None,
         goal: Goal = GOAL, pruned: Pruned | None = None) -> TrialRecord:
    """A trial as the objective records it, stored through a real Optuna trial and read back."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask(DISTRIBUTIONS)
    TrialRecord.write_claim(trial, config={"deepcache": {"cache_interval": 2 + number % 4,
                                                         "cache_branch_id": 0}},
                            canonical=f"c{number}", worker={"host": "h", "pid": 1},
                            sampler_seed=7)
    if speedup is not None:
        TrialRecord.write_result(trial, speed=speed(speedup, half),
                                 quality=quality(loss) if loss is not None else None,
                                 pruned=pruned, seconds={"total": 1.0}, goal=goal)
    if duplicate_of is not None:
        TrialRecord.write_copy(trial, TrialRecord(duplicate_of, "COMPLETE"), goal)
    if state == TrialState.COMPLETE:
        study.tell(trial, [speedup, loss])
    elif state == TrialState.FAIL:
        TrialRecord.write_failure(trial, Failure.CRASHED, detail="boom")
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, state=state)
    record = TrialRecord.from_trial(study.trials[0])
    return TrialRecord(**{**record.__dict__, "number": number})


def numbers(trials):
    return [t.number for t in trials]


# -- the records round-trip through Optuna -----------------------------------------------------

def test_a_trial_record_reads_back_what_was_written():
    t = make(3, 2.5, 0.01)
    assert t.state == "COMPLETE" and t.original and t.complete and t.evaluated
    assert t.speed == speed(2.5) and t.quality == quality(0.01)
    assert t.sampler_seed == 7 and t.worker == {"host": "h", "pid": 1}
    assert t.feasible(GOAL)
    assert not make(4, 2.5, 0.03).feasible(GOAL)
    assert make(5, 2.5, GOAL.loss_budget).feasible(GOAL)  # exactly on the budget is feasible
    assert not make(6, 2.5, 0.018).feasible(UPPER)  # its interval reaches 2.2 %
    assert not make(7, None, None, state=TrialState.FAIL).feasible(GOAL)


def test_pruned_and_repeated_trials():
    pruned = make(0, 1.2, None, state=TrialState.PRUNED, pruned=Pruned.SLOW)
    assert pruned.answered and pruned.evaluated and not pruned.complete
    repeat = make(1, 2.0, 0.01, duplicate_of=0)
    assert repeat.answered and not repeat.evaluated and not repeat.original


# -- max-speedup mode: fastest feasible --------------------------------------------------------

def test_fastest_feasible_skips_infeasible_and_repeated_trials():
    trials = [make(0, 2.0, 0.01), make(1, 3.0, 0.05), make(2, 2.5, 0.015),
              make(3, 2.9, 0.01, duplicate_of=2), make(4, None, None, state=TrialState.FAIL)]
    chosen, met = choose(trials, GOAL)
    assert chosen.number == 2 and met is None


def test_ties_go_to_the_lower_loss_then_the_earlier_trial():
    assert choose([make(0, 2.0, 0.015), make(1, 2.0, 0.005)], GOAL)[0].number == 1
    assert choose([make(0, 2.0, 0.01), make(1, 2.0, 0.01)], GOAL)[0].number == 0


def test_a_confirmed_speed_replaces_the_trials_own():
    trials = [make(0, 3.0, 0.01), make(1, 2.9, 0.01)]
    race = Confirmation("r", "t", {0: speed(2.7), 1: speed(2.95)}, 1.5, 5, (0, 1))
    assert choose(trials, GOAL)[0].number == 0
    assert choose(trials, GOAL, race)[0].number == 1


def test_an_unraced_trial_does_not_win_on_its_own_lucky_estimate():
    """Four candidates raced and came out lower than their first estimates; a fifth, measured
    before the race but left out of it, keeps its own estimate and must not win on it. One
    measured after the race may (the next race will measure it)."""
    trials = [make(n, 2.66 - 0.01 * n, 0.01) for n in range(5)]
    race = Confirmation("r", "t", {n: speed(2.48) for n in range(4)}, 1.5, 12, (0, 1, 2, 3),
                        last_trial=4)
    assert choose(trials, GOAL, race)[0].number == 0
    later = [*trials, make(5, 2.6, 0.01)]
    assert choose(later, GOAL, race)[0].number == 5
    assert Confirmation.from_dict(race.as_dict()) == race


# -- requirement mode --------------------------------------------------------------------------

def test_requirement_met_by_several_takes_the_lowest_loss():
    trials = [make(0, 2.6, 0.015), make(1, 3.5, 0.012), make(2, 2.5, 0.008), make(3, 2.4, 0.0)]
    chosen, met = choose(trials, Goal(req_speedup=2.5))
    assert (chosen.number, met) == (2, True)  # exactly reaching it counts


def test_requirement_not_met_reports_the_fastest_feasible():
    trials = [make(0, 1.5, 0.01), make(1, 2.2, 0.015), make(2, 3.0, 0.03)]
    chosen, met = choose(trials, Goal(req_speedup=2.5))
    assert (chosen.number, met) == (1, False)
    assert choose([], Goal(req_speedup=2.5)) == (None, False)


def test_pareto_front():
    trials = [make(0, 2.0, 0.010), make(1, 1.5, 0.005), make(2, 1.4, 0.008),
              make(3, 2.0, 0.015), make(4, 3.0, 0.050), make(5, 2.6, 0.019),
              make(6, 1.2, 0.000), make(7, 2.6, 0.019, duplicate_of=5)]
    assert numbers(pareto_front(trials, GOAL)) == [6, 1, 0, 5]


# -- what is confirmed, and how the race drops candidates ---------------------------------------

def test_candidates_are_those_whose_interval_overlaps_the_best():
    trials = [make(0, 3.0, 0.01), make(1, 2.95, 0.01), make(2, 2.5, 0.01), make(3, 3.5, 0.05)]
    assert numbers(candidates(trials, GOAL)) == [0, 1]
    # With a requirement: the one chosen now (the only one reaching it by its estimate), then
    # those that may reach it with a lower loss, by loss.
    trials = [make(0, 3.0, 0.015), make(1, 2.46, 0.005), make(2, 2.0, 0.001)]
    assert numbers(candidates(trials, Goal(req_speedup=2.5))) == [0, 1]



def test_still_in_race():
    a, b, c = Interval(3.0, 2.95, 3.05, 4), Interval(2.97, 2.9, 3.04, 4), Interval(2.5, 2.45,
                                                                                   2.55, 4)
    assert still_in_race({0: a, 1: b, 2: c}, {0: 0.01, 1: 0.01, 2: 0.01}, None) == {0, 1}
    # Requirement 2.92: c cannot reach it; b has the lower loss but may fall short: race on.
    assert still_in_race({0: a, 1: b, 2: c}, {0: 0.02, 1: 0.01, 2: 0.0}, 2.92) == {0, 1}
    # Once the lowest-loss one surely reaches it, it is the answer.
    assert still_in_race({0: a, 1: b}, {0: 0.02, 1: 0.01}, 2.85) == {1}


# -- the answer, and its round trip through the results file ----------------------------------

def study_record(combo: str, confirmation=None) -> StudyRecord:
    return StudyRecord(f"study {combo}", SETTING, GOAL, combo, distinct_points=4,
                       confirmation=confirmation)


def test_answer_shows_one_set_of_numbers_and_round_trips():
    race = Confirmation("r1", "2026-01-01", {1: speed(2.4, base=1.6)}, 1.6, 6, (1,))
    found = answer(SETTING, GOAL, [
        (study_record("deepcache"), [make(0, 2.0, 0.01), make(1, 2.2, 0.012)]),
        (study_record("deepcache+tgate", race), [make(0, 1.9, 0.01), make(1, 2.5, 0.015)]),
    ])
    chosen = found.chosen
    assert chosen.combo == "deepcache+tgate" and chosen.trial == 1
    assert chosen.confirmed == "r1" and chosen.speedup == pytest.approx(2.4)
    assert chosen.baseline_latency / chosen.latency == pytest.approx(chosen.speedup)
    assert [c.evaluations for c in found.combos] == [2, 2]
    again = Answer.from_dict(SETTING, found.as_dict())
    assert again == found
    table = found.table()
    assert "2.40x [2.35, 2.45]" in table and "1.600s -> 0.667s" in table and "confirmed" in table


def test_required_speedup_for_a_latency_comes_from_the_answers_own_baseline():
    goal = Goal(req_time=0.6)
    race = Confirmation("r1", "2026-01-01", {0: speed(2.5, base=1.5)}, 1.5, 6, (0,))
    record = StudyRecord("s", SETTING, goal, "deepcache", confirmation=race)
    found = answer(SETTING, goal, [(record, [make(0, 2.4, 0.01, goal=goal)])])
    assert found.required_speedup == pytest.approx(1.5 / 0.6)
    assert found.met is True and found.chosen.latency <= 0.6
    tighter = answer(SETTING, Goal(req_time=0.59), [(record, [make(0, 2.4, 0.01, goal=goal)])])
    assert tighter.met is False and tighter.chosen.latency > 0.59


def test_studies_of_one_combo_over_other_solver_spaces_get_distinct_rows():
    """Studies of one setting and goal whose `--search-steps`/`--search-sched` ranges differ
    are two studies of one combo, gathered into one answer (`tuner show` from the studies, the
    report): their rows name their space, and the chosen one says which it is. Failed before
    the fix: two rows read `deepcache+steps` alike."""
    from tuner.accelerators import solver
    from tuner.answer import ComboAnswer
    from tuner.search.studies import study_name

    rows = []
    for steps, speedup in (((2, 4), 1.8), ((5, 8), 1.4)):
        with solver.configured(solver.SolverSpace(("DDIM",), steps)):
            name = study_name(SETTING, "deepcache+steps", GOAL)
        config = {"deepcache": {"cache_interval": 2, "cache_branch_id": 0},
                  "solver": {"scheduler": "DDIM", "steps": steps[0]}}
        picked = Choice("deepcache+steps", name, 1, config, speed(speedup), quality(0.01), None)
        rows.append(ComboAnswer("deepcache+steps", name, picked, 4, 0, False))
    alone = ComboAnswer("deepcache", study_name(SETTING, "deepcache", GOAL), None, 3, 0, False)
    found = Answer(SETTING, GOAL, None, (alone, *rows), rows[0].choice, None)
    table = found.table()
    first, second = (line.split("  ")[0] for line in table.splitlines()
                     if line.startswith("deepcache+steps"))
    assert first != second
    assert "DDIM x 2-4 steps" in first and "DDIM x 5-8 steps" in second
    assert any(line.startswith("deepcache ") for line in table.splitlines())  # no label
    assert "Fastest within clip loss <= 0.02: deepcache+steps (solver: DDIM x 2-4 steps)" \
        in table
    # One study per combo (a run's own answer): the rows are the combos' names.
    assert "(solver:" not in Answer(SETTING, GOAL, None, (alone, rows[0]), rows[0].choice,
                                    None).table()
