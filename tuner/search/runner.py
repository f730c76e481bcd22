"""Working on the studies: one study per combo on one loaded pipeline, resumable.

A study stops when --trials configurations have been evaluated (repeats are answered from the
earlier trial and are free), when its space is exhausted, when its answer has not improved for
`patience` evaluations, or (with stop_when_met) once the requirement is met. Then its answer is
confirmed (confirm.py), and once every combo is done, the overall answer.

Progress must be confirmed before it postpones the stop: when the last `patience` evaluations
improved the answer only through trials whose speed was never measured again, those are raced
first (confirm.py), and the study stops if the race takes the improvement back
(`unconfirmed_progress`). One lucky screening estimate would otherwise buy `patience` more
evaluations.

Looking for the fastest configuration across combos, a combo's configuration slower than the
answer an earlier combo of the same run confirmed cannot change the overall answer: it is
pruned after its speed, before any quality work (`floor_of`). Such a combo may then report no
answer of its own, and stops after `patience` evaluations; run it alone for one (its
floor-pruned trials are evaluated again).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import optuna
from tqdm.auto import tqdm

from .. import interrupts
from ..accelerators import COMBOS, device_of, split_params
from ..answer import choice_of, choose, config_text, feasible, speed_of, speed_text
from ..evaluator import Evaluator
from ..record import (SURPLUS, Baseline, Confirmation, PlainLatency, StudyRecord, TrialRecord,
                      trial_records)
from ..setting import Goal
from .confirm import confirm_overall, confirm_study
from .objective import Objective, TrialFailed
from .space import canonical_key, distinct_points, make_sampler, random_point
from .studies import load_group, open_study, versions
from .workers import (confirms, others_running, process_seed, recover_orphans, this_worker,
                      wait_for_others)

FREE_STREAK = 10  # trials in a row answered without an evaluation before a random point
OTHERS_POLL = 1.0  # seconds between looks at trials other processes run


@dataclass(frozen=True)
class SearchPlan:
    combos: Sequence[str]
    trials: int = 200  # evaluations per combo
    sampler: str = "tpe"
    seed: int = 42
    sampler_seed: int | None = None  # None: a stream of this process's own (workers.py)
    patience: int | None = None  # stop a study after this many evaluations without progress
    full_front: bool = False  # evaluate every configuration fully (no pruning)
    stop_when_met: bool = False
    progress: bool = True
    worker_index: int | None = None  # this process's index among a launcher's workers
    device: str = ""  # the device's name, recorded on the studies
    threads: int | None = None  # torch's CPU threads, recorded with the plain latency


def _best_label(records: list[TrialRecord], goal: Goal, floor: float | None,
                confirmation: Confirmation | None) -> str:
    best, _ = choose(records, goal, confirmation)
    if best is None and floor is not None:
        return f"none feasible faster than {floor:.2f}x (another combo's answer) yet"
    if best is None:
        return "no feasible trial yet"
    return f"best {speed_text(speed_of(best, confirmation))} (loss {best.quality.loss.value:.2%})"


def _standing(records: Sequence[TrialRecord], goal: Goal, confirmation: Confirmation | None
              ) -> tuple[int, TrialRecord | None, float]:
    """The study's answer, its rank (0 none, 1 found or not meeting the requirement, 2 meeting
    it) and its speedup (the confirmed one where it was raced)."""
    chosen, met = choose(records, goal, confirmation)
    speed = speed_of(chosen, confirmation).value if chosen is not None else 0.0
    return (0 if chosen is None else 2 if met else 1), chosen, speed


def _improved(now: tuple, before: tuple, precision: float) -> bool:
    (rank, chosen, speed), (rank_before, earlier, speed_before) = now, before
    if rank != rank_before:
        return rank > rank_before
    if rank == 0:
        return False
    if rank == 2:  # meeting the requirement, the answer is the lowest loss: 0.1 point counts
        return chosen.quality.loss.value < earlier.quality.loss.value - 0.001
    # A speedup better by less than the timing precision is not progress.
    return speed > speed_before * (1 + precision)


def stalled(records: list[TrialRecord], goal: Goal, patience: int, precision: float,
            confirmation: Confirmation | None = None, *, ignoring: frozenset[int] = frozenset()
            ) -> bool:
    """Whether the last `patience` evaluations did not improve the study's answer (raced trials
    at their confirmed speed), not counting the trials numbered in `ignoring`."""
    evaluated = sorted((r for r in records if r.evaluated), key=lambda r: r.number)
    if len(evaluated) <= patience:
        return False
    now = [r for r in evaluated if r.number not in ignoring]
    return not _improved(_standing(now, goal, confirmation),
                         _standing(evaluated[:-patience], goal, confirmation), precision)


def unconfirmed_progress(records: list[TrialRecord], goal: Goal, patience: int,
                         precision: float, confirmation: Confirmation | None) -> bool:
    """Whether the study goes on only because of feasible trials of its last `patience`
    evaluations that were measured after its last race and never raced: without them it
    would have stalled. Racing them before they count is SMAC's intensification (Hutter, Hoos
    and Leyton-Brown 2011: a challenger becomes the incumbent only once compared with it on
    the same runs) applied to the stopping rule, and lazily: a race is run only when the stop
    depends on it."""
    evaluated = sorted((r for r in records if r.evaluated), key=lambda r: r.number)
    if len(evaluated) <= patience:
        return False
    fresh = frozenset(r.number for r in feasible(evaluated[-patience:], goal)
                      if confirmation is None or not confirmation.before(r.number))
    return bool(fresh) and not stalled(records, goal, patience, precision, confirmation) \
        and stalled(records, goal, patience, precision, confirmation, ignoring=fresh)


def finished(records: list[TrialRecord], goal: Goal, *, points: int, trials: int,
             patience: int | None, stop_when_met: bool, precision: float,
             floor: float | None = None, confirmation: Confirmation | None = None) -> bool:
    """Whether a study has nothing left to do (the module's docstring says when), in a run
    whose floor is `floor`; `confirmation` is the study's last race."""
    return sum(r.evaluated for r in records) >= trials \
        or len({r.canonical for r in records if r.settles(floor)}) >= points \
        or bool(stop_when_met and choose(records, goal, confirmation)[1]) \
        or bool(patience and stalled(records, goal, patience, precision, confirmation))


def _free_streak(records: list[TrialRecord]) -> int:
    """Finished trials in a row, most recent first, that evaluated nothing (repeats, or
    configurations rejected before generating)."""
    streak = 0
    for r in sorted(records, key=lambda r: r.number, reverse=True):
        if r.state in ("RUNNING", "WAITING") or r.fail_reason == SURPLUS:
            continue
        if r.evaluated:
            break
        streak += 1
    return streak


def _enqueue_unanswered(study: optuna.Study, evaluator: Evaluator, combo: str,
                        answered: set[str], rng: random.Random) -> bool:
    """Queue a random configuration that no trial has answered yet (a sampler that keeps
    proposing answered points would otherwise spin without evaluating anything)."""
    s = evaluator.setting
    for _ in range(1000):
        params = random_point(combo, rng, device=device_of(evaluator.pipe))
        key = canonical_key(evaluator.pipe, split_params(params), steps=s.steps,
                            height=s.height, width=s.width)
        if key not in answered:
            study.enqueue_trial(params, skip_if_exists=True)
            return True
    return False


def floor_of(studies: Sequence[optuna.Study], goal: Goal) -> float | None:
    """Looking for the fastest configuration: the speedup under which no configuration can
    change the overall answer, the highest lower bound of the confirmed answers of `studies`
    (None without one, or with a requirement, whose answer is the lowest loss).

    Confirmed speeds only: a study's own best estimate is the maximum of noisy measurements
    (the winner's curse) and would prune configurations that are in fact faster."""
    if goal.mode != "max_speedup":
        return None
    lows = []
    for study in studies:
        record = StudyRecord.of(study)
        found = choice_of(record, choose(trial_records(study), goal, record.confirmation)[0])
        if found is not None and found.confirmed:
            lows.append(found.speed.speedup.low)
    return max(lows, default=None)


def run_combo(evaluator: Evaluator, storage, combo: str, goal: Goal, plan: SearchPlan, *,
              prompts: list[str], on_evaluation: Callable | None = None,
              floor: float | None = None) -> optuna.Study:
    """Work on one combo's study until it stops (see the module's docstring), pruning
    configurations slower than `floor`. Several processes may do this at once (workers.py)."""
    s = evaluator.setting
    seed = plan.sampler_seed if plan.sampler_seed is not None else process_seed(plan.seed)
    device = device_of(evaluator.pipe)
    study = open_study(storage, s, combo, goal, prompts,
                       make_sampler(plan.sampler, combo, seed=seed, device=device),
                       full_front=plan.full_front)
    points = distinct_points(evaluator.pipe, combo, steps=s.steps, height=s.height,
                             width=s.width)
    _record_context(study, evaluator, points, plan)
    objective = Objective(evaluator, combo, goal, budget=plan.trials, sampler_seed=seed,
                          full_front=plan.full_front, floor=floor,
                          on_evaluation=on_evaluation)
    precision = evaluator.timing.precision
    confirming = confirms(plan.worker_index)
    rng = random.Random(seed)
    bar = tqdm(total=plan.trials, desc=combo, unit="eval", file=sys.stderr,
               disable=not plan.progress, dynamic_ncols=True)

    def report_failure(_, trial: optuna.trial.FrozenTrial) -> None:
        record = TrialRecord.from_trial(trial)
        if record.state == "FAIL" and record.fail_reason != SURPLUS and not bar.disable:
            bar.write(f"  {combo} trial {trial.number} {config_text(record.config)}: "
                      f"{record.fail_reason or 'failed'}", file=sys.stderr)

    with bar, interrupts.deferred():  # stops only at checkpoints (workers.py, rule 8)
        while True:
            interrupts.checkpoint()
            recover_orphans(study)
            records = trial_records(study)
            confirmation = StudyRecord.of(study).confirmation
            done = sum(r.evaluated for r in records)
            bar.n = min(done, plan.trials)
            if not bar.disable:
                bar.set_postfix_str(_best_label(records, goal, objective.floor, confirmation))
            if finished(records, goal, points=points, trials=plan.trials,
                        patience=plan.patience, stop_when_met=plan.stop_when_met,
                        precision=precision, floor=objective.floor,
                        confirmation=confirmation):
                break
            if confirming and plan.patience and unconfirmed_progress(
                    records, goal, plan.patience, precision, confirmation):
                confirm_study(evaluator, study, goal)  # then look again, with its speeds
                continue
            if done + others_running(records) >= plan.trials:
                if not confirming:
                    break
                # The budget is full only once the trials other processes run now finish:
                # the confirming process waits, and runs any that its dead owner leaves
                # re-queued (workers.py, rules 2 and 6).
                interrupts.sleep(OTHERS_POLL)
                continue
            if _free_streak(records) >= FREE_STREAK and not _enqueue_unanswered(
                    study, evaluator, combo,
                    {r.canonical for r in records if r.settles(objective.floor)}, rng):
                break
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False,
                           callbacks=[report_failure])
    return study


def _record_context(study: optuna.Study, evaluator: Evaluator, points: int,
                    plan: SearchPlan) -> None:
    """Device, versions, the quality baseline (the study's, once) and this worker's plain
    latency on the study; the evaluator then scores against the study's baseline."""
    base = evaluator.baseline
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    StudyRecord.write_context(study, device=plan.device, versions=versions(),
                              distinct_points=points)
    StudyRecord.write_baseline(study, Baseline(tuple(base.clip_scores), now))
    # One quality reference for the whole study: the first stored (by any worker) wins.
    stored = StudyRecord.of(study).baseline
    if len(stored.clip_scores) == len(base.clip_scores):
        base.clip_scores = list(stored.clip_scores)
    StudyRecord.write_plain_latency(study, PlainLatency(
        base.latency.median, base.latency.spread, now, this_worker(), plan.threads))


def run_search(evaluator: Evaluator, storage, goal: Goal, plan: SearchPlan, *,
               prompts: list[str], on_evaluation: Callable | None = None,
               on_answer: Callable[[], None] | None = None) -> None:
    """Work on every combo's study in turn; confirm each answer (and the overall one) when
    this process confirms, calling `on_answer` after each."""
    if evaluator.baseline is None:
        evaluator.measure_baseline()
    done: list[optuna.Study] = []
    for combo in plan.combos:
        study = run_combo(evaluator, storage, combo, goal, plan, prompts=prompts,
                          on_evaluation=on_evaluation, floor=floor_of(done, goal))
        done.append(study)
        if confirms(plan.worker_index):
            wait_for_others(study)
            confirm_study(evaluator, study, goal)
            if on_answer is not None:
                on_answer()
    if confirms(plan.worker_index):
        group = [study for study, _, _ in load_group(storage, evaluator.setting, goal, COMBOS,
                                                     full_front=plan.full_front)]
        if confirm_overall(evaluator, group, goal) and on_answer is not None:
            on_answer()


__all__ = ["SearchPlan", "finished", "floor_of", "run_combo", "run_search", "stalled",
           "unconfirmed_progress"]
