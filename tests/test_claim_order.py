"""Rule 1 of the worker protocol with queued trials: a re-queued trial keeps its lower number but
claims after the trials that started while it waited, and waits for them (rule 3)."""

from __future__ import annotations

import threading
import time

import optuna
from optuna.trial import TrialState

from tuner.record import Failure, Pruned, TrialRecord, trial_records
from tuner.search.workers import earlier_answer, queued_after, requeue, this_worker
from tuner.setting import Goal

ELSEWHERE = {"host": "another host", "pid": 1}  # a process recover_orphans leaves alone
PARAMS = {"deepcache.cache_interval": 3, "deepcache.cache_branch_id": 0}


def _claim(trial: optuna.Trial, key: str, worker: dict) -> None:
    TrialRecord.write_claim(trial, config={}, canonical=key, worker=worker, sampler_seed=None,
                            queued_after=queued_after(trial))


def _waiting(trial):
    """`trial` asking for an earlier answer in a thread of its own, 0.3 s on: the thread and
    the list its answer lands in."""
    found = []
    waiting = threading.Thread(
        target=lambda: found.append(earlier_answer(trial, "k", budget=10, poll=0.01)),
        daemon=True)
    waiting.start()
    time.sleep(0.3)
    return waiting, found


def test_a_retry_waits_for_a_later_numbered_trial_running_its_configuration():
    """Trial 0 is interrupted and re-queued as trial 1; trial 2 starts the same configuration
    on another host while 1 waits; then 1 starts. Failed at 9214cba: 1 compared by number
    only, saw nothing before it and evaluated the configuration too, beside 2."""
    study = optuna.create_study()
    study.enqueue_trial(PARAMS)
    first = study.ask()
    _claim(first, "k", this_worker())
    TrialRecord.write_failure(first, Failure.INTERRUPTED)
    study.tell(first, state=TrialState.FAIL)
    requeue(study, next(t for t in study.get_trials() if t.number == 0))  # trial 1, WAITING
    storage = study._storage  # noqa: SLF001 - a trial created running, as another host's
    later = optuna.Trial(study, storage.create_new_trial(study._study_id))  # noqa: SLF001
    assert later.number == 2
    _claim(later, "k", ELSEWHERE)
    retry = study.ask()
    assert retry.number == 1
    _claim(retry, "k", this_worker())
    assert {r.number: r.queued_after for r in trial_records(study)}[1] == 2
    # Trial 2 does not wait for the retry, which claims after it...
    assert earlier_answer(later, "k", budget=10, poll=0.01) is None
    # ...and the retry waits for trial 2, then answers from it.
    waiting, found = _waiting(retry)
    assert waiting.is_alive() and found == []
    TrialRecord.write_result(later, speed=None, quality=None, pruned=Pruned.SLOW, seconds={},
                             goal=Goal())
    storage.set_trial_state_values(later._trial_id, TrialState.PRUNED)  # noqa: SLF001
    waiting.join(timeout=10)
    assert [r.number for r in found] == [2]


def test_an_unclaimed_queued_trial_is_waited_for_by_its_number():
    """Before a queued trial says what it runs, a later-numbered one waits for it, as for any
    trial that has not said yet; once it claims after that one, the wait ends (no deadlock)."""
    study = optuna.create_study()
    study.enqueue_trial(PARAMS)  # trial 0, queued by the search
    storage = study._storage  # noqa: SLF001
    later = optuna.Trial(study, storage.create_new_trial(study._study_id))  # noqa: SLF001
    _claim(later, "k", ELSEWHERE)
    queued = study.ask()
    assert queued.number == 0
    waiting, found = _waiting(later)
    assert waiting.is_alive()  # trial 0 runs and has not said what
    _claim(queued, "k", this_worker())
    waiting.join(timeout=10)
    assert found == [None]
