"""The worker protocol: the rules by which several processes share one study.

Who takes part. Any number of processes may work on the same studies: on one host, the workers
a launcher starts (`--workers N`, one per GPU), or on several hosts, one `tuner run --storage URL`
each. They coordinate only through the storage; no process talks to another.

The contract, which every function here keeps:

1. Order. The storage hands out trial numbers in order, atomically (Optuna's RDB storage), when a
   trial is created. Every rule below compares trials by number, which is what makes the rules
   race-free, with one exception: a queued trial (WAITING: re-queued by rules 2 and 8, or queued
   by the search) keeps the number it was queued under and may start after trials numbered
   above it. When it claims, it records the highest trial number then (`queued_after`), and
   rule 3 places it just after that trial (`TrialRecord.claim_order`). Until it claims, it is
   placed by its number, so others wait for it as for any unclaimed trial.
2. Ownership. A RUNNING trial belongs to the process that created it (its `worker`: host and
   pid, written before anything else). Only the owner writes its results. Any process may fail
   the running trial of a dead owner: on the same host at once, by process id
   (`recover_orphans`); on another host only through the storage's heartbeat (a trial silent for
   three beats), since process ids of other hosts mean nothing here. A trial failed that way is
   re-queued with the same parameters (`requeue`), and whichever process asks next runs it.
3. Claim before work. A trial writes the canonical key of its configuration before it evaluates
   anything. It then waits for every trial before it in the order of claims (rule 1) that runs
   the same configuration, or has not said yet what it runs, and answers from it rather than
   running: a configuration is evaluated once per study, whichever process reaches it first
   (`earlier_answer`). One exception: a
   trial pruned under a floor (another combo's confirmed answer, runner.floor_of) answers only
   processes whose floor is as high; others evaluate the configuration again, and the newest
   answer is the one used from then on. Each process reads the floor from the confirmations
   stored when it starts a combo, so processes may prune under different floors; each trial
   records its own (`TrialRecord.pruned_below`).
4. Budget. A trial counts toward --trials when it ran the pipeline (`TrialRecord.evaluated`:
   repeats are free). A trial whose earlier trials already fill the budget, counting earlier
   RUNNING or WAITING trials as if they will, ends as FAIL "surplus" without running, so the
   processes together never exceed --trials.
5. Sampler streams. Each process seeds its sampler with a stream of its own (`process_seed`),
   recorded on every trial it runs, so that processes do not propose the same points in
   lockstep and any trial's proposal can be traced. With --sampler-seed, worker k of a
   launcher draws from `worker_seed(seed, k)`: streams of their own still, and the same ones
   for the same seed.
6. Confirmation. A study's answer is confirmed (its candidates raced again) by one process: the
   only one, or worker 0 of a launcher; with processes on several hosts, by each of them, since
   none knows of the others (the last confirmation written is the study's). While the trials
   other processes run could still leave the budget unfilled, it does not leave the study: it
   waits for them, and runs any that comes back re-queued (rule 2); then it waits until no
   other process runs a trial of the study (`wait_for_others`) and confirms (`Role.races`,
   roles.py).
7. Results. A process writes the results file only for studies it confirmed; a launcher, which
   runs no trial, writes it from the stored records once every worker has exited
   (`Role.writes_results`).
8. Interrupts. Ctrl-C and SIGTERM are requests (tuner/interrupts.py), acted on only at
   checkpoints: at the start of a trial, before every pipeline call and after each of its
   denoising steps, where the running trial is marked interrupted and re-queued; between
   trials; in every polling wait. None is inside Optuna: a trial it creates is one the
   objective runs or re-queues (a trial created but never claimed would stay RUNNING with no
   owner to fail it, rule 2), and one it closes is closed.

Processes, not threads: nothing here is meant to be shared by threads of one process.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import interrupts
from ..record import Failure, TrialRecord, TrialStatus, trial_records
from ..status import pid_alive


class Surplus(Exception):
    """Earlier trials fill the budget: this one ends without running."""


def this_worker() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def queued_after(trial: optuna.Trial) -> int | None:
    """For a trial that was queued before it ran (rule 1), the highest trial number now; None
    for one created running."""
    trials = trial.study.get_trials(deepcopy=False)
    frozen = next(t for t in trials if t.number == trial.number)
    if "fixed_params" in frozen.system_attrs or "failed_trial" in frozen.system_attrs:
        return max(t.number for t in trials)
    return None


def process_seed(base: int) -> int:
    """A sampler seed of this process's own, from the run's seed, host, pid and start time."""
    me = this_worker()
    text = f"{base}|{me['host']}|{me['pid']}|{time.time_ns()}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def worker_seed(seed: int, index: int | None) -> int:
    """The sampler seed of worker `index` of a launcher given --sampler-seed `seed`: `seed`
    itself for a lone process and worker 0 (a run alone is reproduced by the same seed), a
    stream derived from both for the others (rule 5)."""
    if not index:
        return seed
    text = f"{seed}|worker {index}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def recover_orphans(study: optuna.Study) -> list[int]:
    """Fail and re-queue (same parameters) the running trials of dead workers (rule 2)."""
    optuna.storages.fail_stale_trials(study)
    me, recovered = this_worker(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = TrialRecord.from_trial(trial).worker
        if not worker or worker["host"] != me["host"] or worker["pid"] == me["pid"] \
                or pid_alive(worker["pid"]):
            continue
        storage = study._storage  # noqa: SLF001 - the public API has no way to fail a trial
        try:
            TrialRecord.write_failure(_StorageTrial(storage, trial), Failure.ORPHANED)
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):  # noqa: SLF001
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        requeue(study, trial)
        recovered.append(trial.number)
    return recovered


class _StorageTrial:
    """Lets TrialRecord write onto another process's trial, through the storage."""

    def __init__(self, storage, trial: FrozenTrial):
        self._storage, self._id = storage, trial._trial_id  # noqa: SLF001

    def set_user_attr(self, key, value):
        self._storage.set_trial_user_attr(self._id, key, value)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a re-run of `trial`'s parameters, marked as Optuna's heartbeat retries are."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        # The sampler's own marks (GridSampler's grid_id) go along, as in Optuna's retries.
        system_attrs={**trial.system_attrs,
                      "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                      "retry_history": history}))


def earlier_answer(trial: optuna.Trial, key: str, budget: int, *, poll: float = 0.5,
                   settles: Callable[[TrialRecord], bool] = lambda r: r.answered
                   ) -> TrialRecord | None:
    """The earlier trial that answered this configuration, if any (rule 3), the latest of
    those `settles` accepts; raises `Surplus` when earlier trials fill the budget (rule 4)."""
    while True:
        records = trial_records(trial.study)
        ahead = [r for r in records if r.number < trial.number]
        waiting = (TrialStatus.RUNNING, TrialStatus.WAITING)
        if sum(r.evaluated or r.state in waiting for r in ahead) >= budget:
            raise Surplus
        done = [r for r in records if r.number != trial.number and r.canonical == key
                and r.original and settles(r)]
        if done:
            return done[-1]
        mine = next(r for r in records if r.number == trial.number).claim_order
        if not any(r.state == TrialStatus.RUNNING and r.canonical in (key, None)
                   and r.claim_order < mine for r in records):
            return None
        interrupts.sleep(poll)
        recover_orphans(trial.study)


def others_running(records: list[TrialRecord]) -> int:
    me = this_worker()
    return sum(1 for r in records if r.state == TrialStatus.RUNNING and r.worker != me)


def wait_for_others(study: optuna.Study, *, poll: float = 1.0) -> None:
    """Until no other process runs a trial of `study` (rule 6)."""
    while True:
        recover_orphans(study)
        if not others_running(trial_records(study)):
            return
        interrupts.sleep(poll)


__all__ = ["Surplus", "earlier_answer", "others_running", "process_seed",
           "queued_after", "recover_orphans", "requeue", "this_worker", "wait_for_others",
           "worker_seed"]
