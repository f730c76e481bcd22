"""Working on the studies: one study per combo on one loaded pipeline, resumable.

A study stops when --trials configurations have been evaluated (repeats are answered from the
earlier trial and are free), when its space is exhausted, when its answer has not improved for
`patience` evaluations, or (with stop_when_met) once the requirement is met. Then its answer is
confirmed (confirm.py), and once every combo is done, the overall answer, whose loss is then
measured once more on held-out images (heldout.py).

Only raced speeds prune and count as progress (state.py): when a new best appears, the process
that confirms races it, with the answer it would replace, before the next evaluation prunes
under it; when the last `patience` evaluations improved the answer only through trials no race
has judged (a requirement's lower loss), those are raced first, and the study stops if the race
takes the improvement back. One lucky screening estimate would otherwise prune the
configurations that are in fact faster, or buy `patience` more evaluations.

Looking for the fastest configuration across combos, a combo's configuration slower than the
answer an earlier combo of the same run confirmed cannot change the overall answer: it is
pruned after its speed, before any quality work (`floor_of`). Such a combo may then report no
answer of its own, and stops after `patience` evaluations; run it alone for one (its
floor-pruned trials are evaluated again).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import optuna
from tqdm.auto import tqdm

from .. import interrupts
from ..accelerators import COMBOS, split_params
from ..answer import config_text, speed_text
from ..record import (HELD_OUT, OVERALL, RACE, RACED, SEARCH, Baseline, Confirmation, Failure,
                      PlainLatency, StudyRecord, TrialRecord, TrialStatus)
from ..setting import Goal, Mode
from ..state import StudyState
from .confirm import confirm_overall, confirm_study
from .heldout import measure_held_out
from .measurer import Measurer
from .objective import Objective, TrialFailed
from .progress import Progress
from .space import make_sampler, random_point
from .studies import load_group, open_study, versions
from .roles import Alone, Role
from .workers import (others_running, process_seed, recover_orphans, this_worker,
                      wait_for_others, worker_seed)

FREE_STREAK = 10  # trials in a row answered without an evaluation before a random point
OTHERS_POLL = 1.0  # seconds between looks at trials other processes run


@dataclass(frozen=True, kw_only=True)
class SearchPlan:
    combos: Sequence[str]
    trials: int = 200  # evaluations per combo
    sampler: str = "tpe"
    seed: int = 42
    # None: a stream of this process's own; else worker k's is workers.worker_seed(it, k)
    sampler_seed: int | None = None
    patience: int | None = None  # stop a study after this many evaluations without progress
    full_front: bool = False  # evaluate every configuration fully (no pruning)
    stop_when_met: bool = False
    progress: bool = True
    role: Role = Alone()  # who races (roles.py)
    device: str = ""  # the device's name, recorded on the studies
    threads: int | None = None  # torch's CPU threads, recorded with the plain latency
    # Seconds of search, as Optuna's `optimize(timeout=...)`: once spent, no trial starts (the
    # running one finishes, then the races as usual), and combos not reached are not searched.
    timeout: float | None = None
    clock: Callable[[], float] = time.monotonic  # what the timeout is measured on

    def deadline(self) -> float | None:
        """The clock's reading at which a search started now has spent its timeout."""
        return None if self.timeout is None else self.clock() + self.timeout

    def past(self, deadline: float | None) -> bool:
        return deadline is not None and self.clock() >= deadline


def _best_label(state: StudyState, floor: float | None) -> str:
    best, _ = state.choose()
    if best is None and floor is not None:
        return f"none feasible faster than {floor:.2f}x (another combo's answer) yet"
    if best is None:
        return "no feasible trial yet"
    return f"best {speed_text(state.speed(best))} (loss {best.quality.loss.value:.2%})"


def stalled(records: list[TrialRecord], goal: Goal, patience: int, precision: float,
            confirmation: Confirmation | None = None) -> bool:
    """StudyState.stalled for records and a race (the benchmarks replay searches with it)."""
    return StudyState(tuple(records), goal, confirmation).stalled(patience, precision)


def _free_streak(records: list[TrialRecord]) -> int:
    """Finished trials in a row, most recent first, that evaluated nothing (repeats, or
    configurations rejected before generating)."""
    streak = 0
    for r in sorted(records, key=lambda r: r.number, reverse=True):
        if r.state in (TrialStatus.RUNNING, TrialStatus.WAITING) or r.failure == Failure.SURPLUS:
            continue
        if r.evaluated:
            break
        streak += 1
    return streak


def _enqueue_unanswered(study: optuna.Study, evaluator: Measurer, combo: str,
                        answered: set[str], rng: random.Random) -> bool:
    """Queue a random configuration that no trial has answered yet (a sampler that keeps
    proposing answered points would otherwise spin without evaluating anything); False when
    none was found.

    Queued even where a trial of the same parameters exists (a configuration pruned under a
    higher floor than this run's is one, rule 3 of workers.py): Optuna's skip_if_exists would
    drop exactly those, silently."""
    for _ in range(1000):
        params = random_point(combo, rng, device=evaluator.device)
        key = evaluator.canonical_key(split_params(params))
        if key not in answered:
            study.enqueue_trial(params)
            return True
    return False


def floor_of(studies: Sequence[optuna.Study], goal: Goal) -> float | None:
    """Looking for the fastest configuration: the speedup under which no configuration can
    change the overall answer, the highest raced floor of `studies` (StudyState.floor; None
    without one, or with a requirement, whose answer is the lowest loss).

    Raced speeds only: a study's own best estimate is the maximum of noisy measurements (the
    winner's curse) and would prune configurations that are in fact faster."""
    if goal.mode != Mode.MAX_SPEEDUP:
        return None
    return max((f for f in (StudyState.of(s, goal).floor() for s in studies) if f is not None),
               default=None)


def _sayer(plan: SearchPlan) -> Callable[[str], None]:
    """The run's progress lines (on stderr, above any live bar), or nothing (--no-progress)."""
    def say(message: str) -> None:
        if plan.progress:
            tqdm.write(message, file=sys.stderr)
    return say


def _tell(message: str) -> None:
    """A line the user must see, --no-progress or not: where --timeout cut the search."""
    tqdm.write(message, file=sys.stderr)


def resuming(combo: str, state: StudyState, trials: int) -> str | None:
    """What a study that already has trials resumes from, in words (None for a new one)."""
    records = state.records
    if not records:
        return None
    done = sum(r.evaluated for r in records)
    queued = sum(r.state == TrialStatus.WAITING for r in records)
    running = sum(r.state == TrialStatus.RUNNING for r in records)
    parts = [f"{done} of {trials} evaluations done"]
    if queued:
        parts.append(f"{queued} interrupted trial(s) queued to run again")
    if running:
        parts.append(f"{running} running (another process, or one that died)")
    best, _ = state.choose()
    if best is not None:
        parts.append(f"answer so far {config_text(best.config)} "
                     f"{speed_text(state.speed(best))}"
                     + (", confirmed" if state.raced(best) else ", not yet confirmed"))
    return f"{combo}: resuming its study: " + "; ".join(parts)


def run_combo(evaluator: Measurer, storage, combo: str, goal: Goal, plan: SearchPlan, *,
              prompts: list[str], on_evaluation: Callable | None = None,
              floor: float | None = None, progress: Progress | None = None,
              on_answer: Callable[[], object] | None = None, deadline: float | None = None,
              callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
              ) -> optuna.Study:
    """Work on one combo's study until it stops (see the module's docstring), pruning
    configurations slower than `floor`; `progress` marks the study as searched by this run.
    Several processes may do this at once (workers.py).

    No trial starts once `plan.clock` reads `deadline` (checked where --trials is).

    `on_answer` is called after every race of the search, once the run is marked searching
    again: the answer so far is written then, not final, so that a process killed later
    leaves it (the run's closing races write theirs too, run_search).

    `callbacks` are called with (study, finished trial) after every trial, as
    `optuna.Study.optimize`'s are; an exception one raises ends the work on the study."""
    s = evaluator.setting
    seed = worker_seed(plan.sampler_seed, plan.role.index) \
        if plan.sampler_seed is not None else process_seed(plan.seed)
    study = open_study(storage, s, combo, goal, prompts,
                       make_sampler(plan.sampler, combo, seed=seed, device=evaluator.device),
                       full_front=plan.full_front)
    points = evaluator.distinct_points(combo)
    _record_context(study, evaluator, points, plan)
    if progress is not None:
        progress.enter(SEARCH, combo=combo, studies=[study])
    say = _sayer(plan)
    resumed = resuming(combo, StudyState.of(study, goal), plan.trials)
    if resumed:
        say(resumed)
    objective = Objective(evaluator, combo, goal, budget=plan.trials, sampler_seed=seed,
                          full_front=plan.full_front, floor=floor,
                          on_evaluation=on_evaluation,
                          on_requeue=progress.requeued if progress is not None else None)
    precision = evaluator.timing.precision
    confirming = plan.role.races
    rng = random.Random(seed)
    bar = tqdm(total=plan.trials, desc=combo, unit="eval", file=sys.stderr,
               disable=not plan.progress, dynamic_ncols=True)

    def report_failure(_, trial: optuna.trial.FrozenTrial) -> None:
        record = TrialRecord.from_trial(trial)
        if record.state == TrialStatus.FAIL and record.failure != Failure.SURPLUS \
                and not bar.disable:
            bar.write(f"  {combo} trial {trial.number} {config_text(record.config)}: "
                      f"{record.fail_reason or 'failed'}", file=sys.stderr)

    with bar, interrupts.deferred():  # stops only at checkpoints (workers.py, rule 8)
        while True:
            interrupts.checkpoint()
            recover_orphans(study)
            state = StudyState.of(study, goal)
            records = list(state.records)
            done = sum(r.evaluated for r in records)
            bar.n = min(done, plan.trials)
            if not bar.disable:
                bar.set_postfix_str(_best_label(state, objective.floor))
            if state.finished(points=points, trials=plan.trials, patience=plan.patience,
                              stop_when_met=plan.stop_when_met, precision=precision,
                              floor=objective.floor):
                break
            if plan.past(deadline):
                _tell(f"--timeout ({plan.timeout:g}s) spent: {combo} stopped after {done} of "
                      f"{min(plan.trials, points) if points else plan.trials} evaluations")
                break
            # A new best is raced before it prunes (only a raced speed prunes), and progress
            # counts once raced: then look again, with the race's speeds.
            if confirming and not plan.full_front and (
                    state.wants_race(floor=objective.floor) or (plan.patience and (
                        state.unconfirmed_progress(plan.patience, precision)))):
                if progress is not None:
                    progress.enter(RACE, combo=combo)
                confirm_study(evaluator, study, goal, say=say)
                if progress is not None:
                    progress.enter(SEARCH, combo=combo)
                if on_answer is not None:
                    on_answer()
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
                           callbacks=[report_failure, *callbacks])
    return study


def _record_context(study: optuna.Study, evaluator: Measurer, points: int,
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


def run_search(evaluator: Measurer, storage, goal: Goal, plan: SearchPlan, *,
               prompts: list[str], on_evaluation: Callable | None = None,
               on_answer: Callable[[], None] | None = None) -> None:
    """Work on every combo's study in turn; confirm each answer (and the overall one) when
    this process confirms, calling `on_answer` after each race, mid-search ones included.
    Where the run is, and whether it ended or a signal stopped it, is marked on its studies
    as it goes (progress.py)."""
    if evaluator.baseline is None:
        evaluator.measure_baseline()
    progress = Progress(plan.combos, plan.trials)
    try:
        _search(evaluator, storage, goal, plan, progress, prompts=prompts,
                on_evaluation=on_evaluation, on_answer=on_answer)
    except KeyboardInterrupt as stop:  # where it stopped, for whoever reads the answer
        progress.stop(stop)
        raise
    progress.end()


def _search(evaluator: Measurer, storage, goal: Goal, plan: SearchPlan, progress: Progress, *,
            prompts: list[str], on_evaluation: Callable | None,
            on_answer: Callable[[], None] | None) -> None:
    confirming = plan.role.races
    done: list[optuna.Study] = []
    deadline = plan.deadline()
    for i, combo in enumerate(plan.combos):
        if plan.past(deadline):
            _tell(f"--timeout ({plan.timeout:g}s) spent: not searched: "
                  + ", ".join(plan.combos[i:]))
            break
        study = run_combo(evaluator, storage, combo, goal, plan, prompts=prompts,
                          on_evaluation=on_evaluation, floor=floor_of(done, goal),
                          progress=progress, on_answer=on_answer, deadline=deadline)
        done.append(study)
        if confirming:
            wait_for_others(study)
            progress.enter(RACE, combo=combo)
            confirm_study(evaluator, study, goal, say=_sayer(plan))
            progress.enter(RACED, combo=combo)
            if on_answer is not None:
                on_answer()
    if confirming:
        group = [study for study, _, _ in load_group(storage, evaluator.setting, goal, COMBOS,
                                                     full_front=plan.full_front)]
        progress.enter(OVERALL, studies=group)
        if confirm_overall(evaluator, group, goal, say=_sayer(plan)) and on_answer is not None:
            on_answer()
        progress.enter(HELD_OUT)
        if measure_held_out(evaluator, group, goal) and on_answer is not None:
            on_answer()


__all__ = ["SearchPlan", "floor_of", "resuming", "run_combo", "run_search", "stalled"]
