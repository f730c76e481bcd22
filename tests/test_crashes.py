"""A configuration that crashed, and the escape from a sampler that proposes only answered ones.

A crash (out of memory, an exception inside an accelerator) recurs with the same configuration,
shapes and seeds: its record answers the configuration, as a pruned or invalid one's does, and
a trial that proposes it again is a free repeat. The free-streak escape queues a configuration
no trial answered, and does queue it.
"""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState

from tuner.accelerators import grid, split_params
from tuner.record import Failure, Pruned, TrialRecord, trial_records
from tuner.search.runner import _enqueue_unanswered
from tuner.search.space import canonical_key, suggest
from tuner.search.workers import earlier_answer, this_worker
from tuner.setting import Goal

OOM = "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"


def _claimed(study: optuna.Study, params: dict, key: str, *, state: TrialState,
             reason: Failure | None = None, detail: str | None = None,
             pruned_below: float | None = None) -> None:
    """A finished trial of `params` that claimed `key`, ending in `state`."""
    study.enqueue_trial(params)
    trial = study.ask()
    config = suggest(trial, "deepcache")
    TrialRecord.write_claim(trial, config=config, canonical=key, worker=this_worker(),
                            sampler_seed=None)
    if reason is not None:
        TrialRecord.write_failure(trial, reason, detail=detail)
    if pruned_below is not None:
        TrialRecord.write_result(trial, speed=None, quality=None, pruned=Pruned.FLOOR,
                                 seconds={}, goal=Goal(), pruned_below=pruned_below)
    study.tell(trial, state=state)


def test_a_crashed_configuration_is_answered_by_its_record():
    """Failed at 9214cba: a crash answered nothing, so a deterministic out-of-memory
    configuration was evaluated again each time the sampler proposed it, each time counted
    toward --trials."""
    study = optuna.create_study()
    params = {"deepcache.cache_interval": 3, "deepcache.cache_branch_id": 0}
    _claimed(study, params, "k", state=TrialState.FAIL, reason=Failure.CRASHED,
             detail=OOM)
    crashed = trial_records(study)[0]
    assert crashed.crashed and crashed.answered and crashed.evaluated
    later = study.ask()
    TrialRecord.write_claim(later, config={}, canonical="k", worker=this_worker(),
                            sampler_seed=None)
    found = earlier_answer(later, "k", budget=10, poll=0.01)
    assert found is not None and found.number == crashed.number


def test_interrupted_and_surplus_trials_did_not_crash():
    study = optuna.create_study()
    for i, reason in enumerate((Failure.INTERRUPTED, Failure.SURPLUS)):
        _claimed(study, {"deepcache.cache_interval": 2 + i, "deepcache.cache_branch_id": 0},
                 f"k{i}", state=TrialState.FAIL, reason=reason)
    assert not any(r.crashed or r.answered for r in trial_records(study))


def test_the_free_streak_escape_queues_what_it_says_it_queues(tiny_sd):
    """Every configuration but one is answered; that one was pruned under a higher floor
    than this run's, so this run evaluates it again. Failed at 9214cba: the escape said it
    had queued it, but Optuna's skip_if_exists dropped it (its parameters exist), and the
    sampler went on proposing answered points."""
    evaluator = SimpleNamespace(  # the part of the search's Measurer this uses
        device="cpu",
        canonical_key=lambda c: canonical_key(tiny_sd, c, steps=5, height=64, width=64))
    space = grid("deepcache")
    points = [dict(zip(space, values)) for values in itertools.product(*space.values())]
    keys = {i: canonical_key(tiny_sd, split_params(p), steps=5, height=64, width=64)
            for i, p in enumerate(points)}
    target = keys[0]
    study = optuna.create_study()
    for i, p in enumerate(points):
        if keys[i] == target:  # every spelling of it exists, pruned under a floor of 2.0
            _claimed(study, p, target, state=TrialState.PRUNED, pruned_below=2.0)
    answered = {k for k in keys.values() if k != target}
    assert _enqueue_unanswered(study, evaluator, "deepcache", answered, random.Random(0))
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert len(waiting) == 1
    queued = split_params(waiting[0].system_attrs["fixed_params"])
    assert canonical_key(tiny_sd, queued, steps=5, height=64, width=64) == target
    # Nothing left unanswered: it says so instead of queueing.
    assert not _enqueue_unanswered(study, evaluator, "deepcache", set(keys.values()),
                                   random.Random(0))
