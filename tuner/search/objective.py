"""One trial: sample a configuration, evaluate it (or answer it from an earlier trial), record.

Several workers may share a study. Trial numbers are handed out by the storage in order, which
makes two rules race-free: a trial whose configuration an earlier trial is running waits for
that one and answers from it, and a trial that finds the budget already taken by earlier
trials ends as surplus without running.
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
from .studies import (INTERRUPTED, SURPLUS, Goal, counts_toward_budget, recover_orphans,
                      requeue, this_worker)

# Attribute names on trials.
CONFIG, CANONICAL, FAIL_REASON, DUPLICATE_OF, INVALID, WORKER = (
    "config", "canonical", "fail_reason", "duplicate_of", "invalid", "worker")


class TrialFailed(Exception):
    """The trial ends as failed; the reason is on the trial and the study goes on."""


class Objective:
    def __init__(self, evaluator: Evaluator, combo: str, goal: Goal, *, budget: int,
                 on_evaluation=None, poll: float = 0.5):
        self.evaluator, self.combo, self.goal, self.budget = evaluator, combo, goal, budget
        self.on_evaluation = on_evaluation  # called with (trial, Evaluation) after a real run
        self.poll = poll

    def __call__(self, trial: optuna.Trial):
        config = suggest(trial, self.combo)
        key = config_key(accelerators.canonical(self.evaluator.pipe, config))
        trial.set_user_attr(CONFIG, config)
        trial.set_user_attr(CANONICAL, key)
        trial.set_user_attr(WORKER, this_worker())
        if self._budget_taken(trial):
            self._fail(trial, SURPLUS)
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
        except KeyboardInterrupt:
            trial.set_user_attr(FAIL_REASON, INTERRUPTED)
            frozen = next(t for t in trial.study.get_trials(deepcopy=False)
                          if t.number == trial.number)
            requeue(trial.study, frozen)  # the next run starts with it
            raise
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

    def _budget_taken(self, trial: optuna.Trial) -> bool:
        """Whether earlier trials (finished, running or queued) already fill the budget."""
        ahead = [t for t in trial.study.get_trials(deepcopy=False)
                 if t.number < trial.number and (counts_toward_budget(t) or t.state in (
                     TrialState.RUNNING, TrialState.WAITING))]
        return len(ahead) >= self.budget

    def _earlier(self, trial: optuna.Trial, key: str) -> FrozenTrial | None:
        """The first trial of this study that ran (or is running) the same computation."""
        while True:
            running = False
            for other in trial.study.get_trials(deepcopy=False):
                if other.number == trial.number or other.user_attrs.get(CANONICAL) != key \
                        or DUPLICATE_OF in other.user_attrs:
                    continue
                if other.state == TrialState.COMPLETE or (
                        other.state == TrialState.FAIL and other.user_attrs.get(INVALID)):
                    return other
                running |= other.state == TrialState.RUNNING and other.number < trial.number
            if not running:
                return None
            time.sleep(self.poll)
            recover_orphans(trial.study)  # another worker is evaluating it: wait for its answer

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
