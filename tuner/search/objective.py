"""One trial: sample a configuration, evaluate it (or answer it from an earlier trial), record.

Speed comes first: a configuration that cannot change the answer (below the required speedup
once a configuration reaches it, confidently slower than the study's answer at its raced speed,
or than the `floor` another combo's confirmed answer set) ends PRUNED with its speedup, before
any quality work; one whose loss is confidently over budget ends PRUNED as soon as that is
clear. Only raced speeds prune (state.StudyState.slower_than).

`full_front` evaluates everything, for users who want the whole Pareto front.

A pruned trial reports its speedup as its one intermediate value: Optuna's TPE ranks pruned
trials by their last intermediate value when it needs them among its "good" ones (in a study
whose configurations a floor prunes, it has nothing else to learn from).
"""

from __future__ import annotations

import gc
from typing import NoReturn

import optuna

from .. import interrupts
from ..accelerators import AcceleratorError
from ..messages import described
from ..record import Failure, Invalid, Pruned, TrialRecord, TrialStatus
from ..setting import Goal
from ..state import StudyState
from .measurer import Evaluation, IdenticalOutput, Measurer
from .space import suggest
from .studies import objectives
from .workers import Surplus, earlier_answer, queued_after, requeue, this_worker


class TrialFailed(Exception):
    """The trial ends as failed; the reason is on the trial and the study goes on."""


class Objective:
    def __init__(self, evaluator: Measurer, combo: str, goal: Goal, *, budget: int,
                 sampler_seed: int | None = None, full_front: bool = False,
                 floor: float | None = None, on_evaluation=None, on_requeue=None,
                 poll: float = 0.5):
        self.evaluator, self.combo, self.goal, self.budget = evaluator, combo, goal, budget
        # The speedup under which no configuration of this combo can change the run's overall
        # answer (runner.floor_of), or None.
        self.floor = None if full_front else floor
        self.sampler_seed, self.full_front = sampler_seed, full_front
        self.on_evaluation = on_evaluation  # called with (trial, Evaluation) after a real run
        self.on_requeue = on_requeue  # called with the number of a trial a stop re-queued
        self.poll = poll

    def __call__(self, trial: optuna.Trial):
        try:  # a stop is acted on at checkpoints (workers.py, rule 8): from here on it re-queues
            interrupts.checkpoint()  # one requested while Optuna created this trial
            return self._run(trial)
        except KeyboardInterrupt:
            TrialRecord.write_failure(trial, Failure.INTERRUPTED)
            frozen = next(t for t in trial.study.get_trials(deepcopy=False)
                          if t.number == trial.number)
            requeue(trial.study, frozen)  # the next run starts with it
            if self.on_requeue is not None:
                self.on_requeue(trial.number)
            raise

    def _run(self, trial: optuna.Trial):
        config = suggest(trial, self.combo, device=self.evaluator.device)
        key = self.evaluator.canonical_key(config)
        TrialRecord.write_claim(trial, config=config, canonical=key, worker=this_worker(),
                                sampler_seed=self.sampler_seed, queued_after=queued_after(trial))
        try:
            earlier = earlier_answer(trial, key, self.budget, poll=self.poll,
                                     settles=lambda r: r.settles(self.floor))
        except Surplus:
            self._fail(trial, Failure.SURPLUS)
        if earlier is not None:
            return self._repeat(trial, earlier)
        try:  # rejected before any generation: free, like a repeat
            self.evaluator.check(config)
        except AcceleratorError as err:
            self._fail(trial, Failure.INVALID, str(err), invalid=Invalid.CHECKED)
        slower_than, under_floor = self._slower_than(trial.study)
        try:
            evaluation = self.evaluator.evaluate(
                config, slower_than=slower_than,
                loss_budget=None if self.full_front else self.goal.loss_budget)
        except IdenticalOutput:
            self._fail(trial, Failure.IDENTICAL, invalid=Invalid.GENERATED)
        except AcceleratorError as err:  # found out by generating
            self._fail(trial, Failure.INVALID, str(err), invalid=Invalid.GENERATED)
        except Exception as err:  # out of memory, a crash inside an accelerator, ...
            _free_memory()
            self._fail(trial, Failure.CRASHED, described(err))
        pruned_below = None
        if evaluation.pruned == Pruned.SLOW:
            pruned_below = slower_than
            if under_floor:
                evaluation.pruned = Pruned.FLOOR
        self._record(trial, evaluation, pruned_below)
        if evaluation.pruned is not None:
            self._pruned(trial, evaluation.pruned, evaluation.speed.value)
        return self._values(evaluation.speed.value, evaluation.quality.loss.value)

    def _slower_than(self, study: optuna.Study) -> tuple[float | None, bool]:
        """The speedup under which a configuration cannot change the answer, and whether that
        is the floor (rather than the requirement or this study's best)."""
        if self.full_front:
            return None, False
        # Only a raced speed prunes (state.StudyState.slower_than): an unraced best estimate
        # carries the winner's curse, and pruning under it would drop faster configurations.
        required = self.goal.required_speedup(self.evaluator.plain_latency)
        return StudyState.of(study, self.goal).slower_than(required, floor=self.floor)

    @staticmethod
    def _pruned(trial: optuna.Trial, reason: Pruned, speedup: float) -> NoReturn:
        trial.report(speedup, 0)  # for TPE's ranking of pruned trials (module docstring)
        raise optuna.TrialPruned(reason.text)

    @staticmethod
    def _fail(trial: optuna.Trial, failure: Failure, detail: str | None = None, *,
              invalid: Invalid | None = None) -> NoReturn:
        TrialRecord.write_failure(trial, failure, detail=detail, invalid=invalid)
        raise TrialFailed(detail if detail is not None else failure.text)

    def _values(self, speedup: float, loss: float):
        if len(objectives(self.goal, full_front=self.full_front)) == 2:
            return speedup, loss
        return speedup

    def _record(self, trial: optuna.Trial, ev: Evaluation, pruned_below: float | None) -> None:
        TrialRecord.write_result(trial, speed=ev.speed, quality=ev.quality, pruned=ev.pruned,
                                 seconds=ev.seconds, goal=self.goal, pruned_below=pruned_below)
        if self.on_evaluation is not None:
            self.on_evaluation(trial, ev)

    def _repeat(self, trial: optuna.Trial, earlier: TrialRecord):
        """Answer a repeated configuration from its earlier trial, without running anything."""
        TrialRecord.write_copy(trial, earlier, self.goal)
        if earlier.state == TrialStatus.FAIL:
            self._fail(trial, earlier.failure, earlier.fail_detail, invalid=earlier.invalid)
        if earlier.state == TrialStatus.PRUNED:
            self._pruned(trial, earlier.pruned, earlier.speed.value)
        return self._values(earlier.speed.value, earlier.quality.loss.value)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
