"""One trial: sample a configuration, evaluate it (or answer it from an earlier trial), record.

Several workers may share a study. Trial numbers are handed out by the storage in order, which
makes two rules race-free: a trial waits for every earlier trial that is running the same
configuration (or has not said yet which one it runs) and answers from it, and a trial that
finds the budget already taken by earlier trials ends as surplus without running.
"""

from __future__ import annotations

import gc
import time

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from .. import accelerators
from ..accelerators import AcceleratorError
from ..evaluator import Evaluation, Evaluator
from ..messages import described
from .space import config_key, suggest
from .studies import (CANONICAL, CONFIG, DUPLICATE_OF, FAIL_REASON, INTERRUPTED, INVALID,
                      SURPLUS, WORKER, Goal, answered, counts_toward_budget, recover_orphans,
                      requeue, this_worker)


class TrialFailed(Exception):
    """The trial ends as failed; the reason is on the trial and the study goes on."""


class Objective:
    def __init__(self, evaluator: Evaluator, combo: str, goal: Goal, *, budget: int,
                 on_evaluation=None, poll: float = 0.5):
        self.evaluator, self.combo, self.goal, self.budget = evaluator, combo, goal, budget
        self.on_evaluation = on_evaluation  # called with (trial, Evaluation) after a real run
        self.poll = poll

    def __call__(self, trial: optuna.Trial):
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            trial.set_user_attr(FAIL_REASON, INTERRUPTED)
            frozen = next(t for t in trial.study.get_trials(deepcopy=False)
                          if t.number == trial.number)
            requeue(trial.study, frozen)  # the next run starts with it
            raise

    def _run(self, trial: optuna.Trial):
        config = suggest(trial, self.combo)
        key = config_key(accelerators.canonical(self.evaluator.pipe, config))
        trial.set_user_attr(CONFIG, config)
        trial.set_user_attr(CANONICAL, key)
        trial.set_user_attr(WORKER, this_worker())
        earlier = self._earlier(trial, key)
        if earlier is not None:
            return self._repeat(trial, earlier)
        try:
            evaluation = self.evaluator.evaluate(config)
            self._record(trial, evaluation)
            if self.on_evaluation is not None:
                self.on_evaluation(trial, evaluation)
        except AcceleratorError as err:
            trial.set_user_attr(INVALID, True)
            self._fail(trial, str(err))
        except Exception as err:  # out of memory, a crash inside an accelerator, ...
            _free_memory()
            self._fail(trial, described(err))
        return self._values(evaluation.speedup, evaluation.loss)

    @staticmethod
    def _fail(trial: optuna.Trial, reason: str):
        trial.set_user_attr(FAIL_REASON, reason)
        raise TrialFailed(reason)

    def _values(self, speedup: float, loss: float):
        return (speedup, loss) if self.goal.multi_objective else speedup

    def _record(self, trial: optuna.Trial, ev: Evaluation) -> None:
        for name, value in ev.summary().items():
            trial.set_user_attr(name, value)
        trial.set_constraint("loss_budget", ev.loss - self.goal.loss_budget)

    def _earlier(self, trial: optuna.Trial, key: str) -> FrozenTrial | None:
        """The trial that already answered this configuration, if any; fails the trial as
        surplus when earlier trials (finished, running or queued) fill the budget."""
        while True:
            trials = trial.study.get_trials(deepcopy=False)
            ahead = [t for t in trials if t.number < trial.number]
            if sum(counts_toward_budget(t) or t.state in (TrialState.RUNNING, TrialState.WAITING)
                   for t in ahead) >= self.budget:
                self._fail(trial, SURPLUS)
            same = [t for t in trials if t.number != trial.number
                    and t.user_attrs.get(CANONICAL) == key and DUPLICATE_OF not in t.user_attrs]
            done = [t for t in same if answered(t)]
            if done:
                return done[0]
            # Another worker may be running it, or not have said yet what it runs.
            if not any(t.state == TrialState.RUNNING and t.user_attrs.get(CANONICAL) in (key, None)
                       for t in ahead):
                return None
            time.sleep(self.poll)
            recover_orphans(trial.study)

    def _repeat(self, trial: optuna.Trial, earlier: FrozenTrial):
        """Answer a repeated configuration from its earlier trial, without running anything."""
        trial.set_user_attr(DUPLICATE_OF, earlier.number)
        if earlier.state == TrialState.FAIL:
            trial.set_user_attr(INVALID, True)
            self._fail(trial, earlier.user_attrs[FAIL_REASON])
        for name, value in earlier.user_attrs.items():
            if name not in (CONFIG, CANONICAL, WORKER):
                trial.set_user_attr(name, value)
        for name, value in earlier.constraints.items():
            trial.set_constraint(name, value)
        return earlier.values if self.goal.multi_objective else earlier.values[0]


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
