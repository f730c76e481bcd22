"""Choosing the answer from a study's trials: pure logic on hand-made FrozenTrials."""

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.search.selection import (choose, fastest_feasible, feasible, meeting_requirement,
                                    pareto_front)

BUDGET = 0.02
DISTRIBUTIONS = {"deepcache.cache_interval": IntDistribution(2, 5),
                 "deepcache.cache_branch_id": IntDistribution(0, 3)}


def make(number: int, speedup: float | None, loss: float | None, *, budget: float = BUDGET,
         state: TrialState = TrialState.COMPLETE, duplicate_of: int | None = None,
         interval: int = 2, branch: int = 0, constrained: bool = True) -> FrozenTrial:
    """A trial as the objective records it: values, user attrs and the loss-budget constraint."""
    params = {"deepcache.cache_interval": interval, "deepcache.cache_branch_id": branch}
    user_attrs = {"config": {"deepcache": {"cache_interval": interval, "cache_branch_id": branch}}}
    system_attrs = {}
    if speedup is not None:
        user_attrs.update(speedup=speedup, loss=loss)
        if constrained:
            system_attrs["constraints:loss_budget"] = loss - budget
    if duplicate_of is not None:
        user_attrs["duplicate_of"] = duplicate_of
    trial = optuna.trial.create_trial(
        state=state, values=[speedup, loss] if state == TrialState.COMPLETE else None,
        params=params, distributions=DISTRIBUTIONS, user_attrs=user_attrs,
        system_attrs=system_attrs)
    trial.number = number
    return trial


def numbers(trials):
    return [t.number for t in trials]


# -- how optuna 5 stores constraints (the selection relies on it) -----------------------------

def test_constraints_are_read_from_system_attrs_the_way_set_constraint_stores_them():
    trial = make(0, 1.5, 0.005)
    assert trial.constraints == {"loss_budget": pytest.approx(0.005 - BUDGET)}
    via_api = optuna.trial.create_trial(values=[1.5, 0.005],
                                        constraints={"loss_budget": 0.005 - BUDGET})
    assert via_api.system_attrs == {"constraints:loss_budget": pytest.approx(0.005 - BUDGET)}


def test_feasible_needs_complete_state_and_a_nonpositive_constraint():
    assert feasible(make(0, 1.5, 0.01))
    assert feasible(make(1, 1.5, BUDGET))  # exactly on the budget is feasible
    assert not feasible(make(2, 1.5, 0.03))
    assert not feasible(make(3, None, None, state=TrialState.FAIL))
    assert not feasible(make(4, 1.5, 0.01, constrained=False))  # no constraint recorded


# -- upper-bound mode: fastest feasible --------------------------------------------------------

def test_fastest_feasible_skips_infeasible_trials():
    trials = [make(0, 1.4, 0.01), make(1, 3.0, 0.05), make(2, 2.2, 0.019),
              make(3, 2.5, 0.021), make(4, None, None, state=TrialState.FAIL)]
    assert fastest_feasible(trials).number == 2
    assert choose(trials, None).trial.number == 2
    assert choose(trials, None).met is None


def test_speedup_tie_goes_to_lower_loss():
    trials = [make(0, 2.0, 0.015), make(1, 2.0, 0.005), make(2, 1.9, 0.0)]
    assert fastest_feasible(trials).number == 1


def test_tie_in_speedup_and_loss_goes_to_earlier_trial():
    trials = [make(5, 2.0, 0.01), make(3, 2.0, 0.01), make(7, 2.0, 0.01)]
    assert fastest_feasible(trials).number == 3


def test_duplicates_are_ignored():
    # The duplicate claims a better answer than its original could: it must not be chosen.
    original = make(0, 2.0, 0.01, interval=3)
    duplicate = make(1, 2.5, 0.0, interval=3, duplicate_of=0)
    assert fastest_feasible([duplicate, original]).number == 0
    assert fastest_feasible([duplicate]) is None
    assert meeting_requirement([duplicate, original], 1.5).trial.number == 0


def test_nothing_feasible_gives_none():
    trials = [make(0, 3.0, 0.05), make(1, None, None, state=TrialState.FAIL),
              make(2, 2.0, 0.1)]
    assert fastest_feasible(trials) is None
    assert fastest_feasible([]) is None
    assert choose(trials, None).trial is None
    choice = choose(trials, 1.5)
    assert choice.trial is None and choice.met is False


# -- requirement mode --------------------------------------------------------------------------

def test_requirement_met_by_several_takes_lowest_loss():
    trials = [make(0, 3.0, 0.015), make(1, 1.6, 0.004), make(2, 2.0, 0.008),
              make(3, 1.4, 0.0), make(4, 2.5, 0.001, budget=0.0)]  # 4 infeasible
    choice = meeting_requirement(trials, 1.5)
    assert choice.met is True and choice.trial.number == 1
    assert choose(trials, 1.5).trial.number == 1


def test_requirement_exactly_reached_counts_as_met():
    choice = meeting_requirement([make(0, 1.5, 0.01), make(1, 1.4, 0.0)], 1.5)
    assert choice.met is True and choice.trial.number == 0


def test_requirement_loss_tie_goes_to_higher_speedup_then_earlier():
    trials = [make(0, 1.6, 0.005), make(1, 2.0, 0.005), make(2, 1.8, 0.005)]
    assert meeting_requirement(trials, 1.5).trial.number == 1
    trials = [make(4, 2.0, 0.005), make(2, 2.0, 0.005), make(3, 1.6, 0.009)]
    assert meeting_requirement(trials, 1.5).trial.number == 2


def test_requirement_not_met_reports_fastest_feasible():
    trials = [make(0, 1.2, 0.001), make(1, 1.45, 0.018), make(2, 2.5, 0.03),
              make(3, 1.3, 0.0)]
    choice = meeting_requirement(trials, 2.0)
    assert choice.met is False
    assert choice.trial.number == 1  # the closest: 2 is faster but over the budget
    assert choose(trials, 2.0) == choice


def test_requirement_is_not_met_by_a_duplicate_alone():
    trials = [make(0, 1.2, 0.0), make(1, 2.5, 0.0, duplicate_of=0)]
    choice = meeting_requirement(trials, 2.0)
    assert choice.met is False and choice.trial.number == 0


# -- pareto front ------------------------------------------------------------------------------

def test_pareto_front_on_small_example():
    trials = [
        make(0, 2.0, 0.010),   # front
        make(1, 1.5, 0.005),   # front
        make(2, 1.4, 0.008),   # dominated by 1
        make(3, 2.0, 0.015),   # dominated by 0 (same speedup, more loss)
        make(4, 3.0, 0.050),   # infeasible
        make(5, 2.6, 0.019),   # front: fastest feasible
        make(6, 1.2, 0.000),   # front: lowest loss
        make(7, 2.6, 0.019, duplicate_of=5),  # duplicate: not listed again
        make(8, None, None, state=TrialState.FAIL),
    ]
    front = pareto_front(trials)
    assert numbers(front) == [6, 1, 0, 5]  # by speedup
    assert [t.user_attrs["speedup"] for t in front] == sorted(
        t.user_attrs["speedup"] for t in front)


def test_pareto_front_empty_when_nothing_feasible():
    assert pareto_front([make(0, 3.0, 0.05), make(1, None, None, state=TrialState.FAIL)]) == []
