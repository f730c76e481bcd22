"""The answer's loss, measured once more on images it was not selected on.

The answer is the fastest configuration whose loss estimate keeps the budget (or, with a
requirement, the lowest estimate among those reaching it): selected on its estimate, so that
estimate is biased low, by as much as the noise of the configurations near the budget let the
lucky ones through (the winner's curse, here of the loss; Thaler 1988; in model selection,
Cawley and Talbot 2010: a model chosen on a validation set is reported on a test set). Races
measure speed again, never quality. So once the answer is confirmed, its configuration is run
once more on the same prompts with seeds the search never used (evaluator.held_out_quality),
and that loss, stored on its study (record.HeldOut), is the answer's loss; the search's estimate
is shown beside it. The selection itself is left alone: choosing on the held-out number would
bias it again.

One pass over the quality set, accelerated and plain, for the one configuration chosen
overall; a configuration measured so before (a rerun, or an answer that did not change) is not
measured again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import optuna

from ..answer import choice_of, choose, overall
from ..record import HeldOut, StudyRecord, trial_records
from ..setting import Goal
from .measurer import Measurer


def measure_held_out(evaluator: Measurer, studies: Sequence[optuna.Study], goal: Goal) -> bool:
    """Measure the overall answer's loss on held-out seeds and store it on its study, unless
    it was measured before; True when it measured."""
    choices = {}
    for study in studies:
        record = StudyRecord.of(study)
        choice = choice_of(record, choose(trial_records(study), goal, record.confirmation)[0])
        if choice is not None:
            choices[study.study_name] = (study, choice)
    chosen, _ = overall([c for _, c in choices.values()], goal)
    if chosen is None or chosen.held_out is not None:
        return False
    quality = evaluator.held_out_quality(chosen.config)
    StudyRecord.write_held_out(choices[chosen.study][0], chosen.trial, HeldOut(
        quality, evaluator.held_out_seeds,
        datetime.now(timezone.utc).isoformat(timespec="microseconds")))
    return True


__all__ = ["measure_held_out"]
