"""Confirm before answering: measure the candidates for an answer again, against each other.

A study's answer is the best of many noisy measurements, so one lucky measurement would become
the answer. Before a study's answer is written, every candidate whose interval overlaps the
best one's is measured again in one race, interleaved with plain runs, and the answer comes from
those numbers; then the combos' answers are raced against each other the same way for the
overall answer. Candidates drop out as soon as their interval shows they cannot win.

This is intensification as in SMAC (Hutter, Hoos and Leyton-Brown 2011: a challenger takes the
incumbent's place only after being compared with it on the same runs) and racing as in F-Race
and irace (Birattari et al. 2002; Lopez-Ibanez et al. 2016: evaluate candidates round by round
and discard those statistically worse than the best), with bracketed speedup ratios as the
per-round observations.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import optuna

from ..answer import CONFIRM_AT_MOST, fastest_first, feasible, speed_text, still_in_race
from ..record import Confirmation, StudyRecord, TrialRecord, trial_records
from ..setting import Goal, Mode
from ..state import StudyState, overall_entries
from .measurer import Measurer


Say = Callable[[str], None]  # where a race says what it measures (the run's progress lines)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _silent(message: str) -> None:
    pass


def _race(evaluator: Measurer, entries: Sequence[tuple[optuna.Study, TrialRecord]],
          required: float | None, *, what: str, say: Say = _silent) -> dict[str, Confirmation]:
    """Race the entries' configurations; write the race to each study's record as its latest:
    the speeds it measured (of that study's entries, and nothing else) and the trials that were
    finished when it began, which it judged. Returns what was written, by study name. `say`
    hears what is raced (`what`) and how it ended: a race measures for minutes after the
    search's bar has reached its end."""
    losses = {i: t.quality.loss.value for i, (_, t) in enumerate(entries)}
    studies = {id(s): s for s, _ in entries}.values()
    before = {id(s): trial_records(s) for s in studies}
    several = len(studies) > 1
    names = [(f"{StudyRecord.of(s).combo} " if several else "") + f"trial {t.number}"
             for s, t in entries]
    say(f"confirming {what}: measuring {len(entries)} candidate(s) again, between plain runs "
        f"({', '.join(names)}) ...")
    race = evaluator.race([t.config for _, t in entries],
                          lambda intervals: still_in_race(intervals, losses, required))
    say(f"confirmed {what} after {race.rounds} round(s): "
        + "; ".join(f"{name} {speed_text(race.speeds[i])}" for i, name in enumerate(names)))
    race_id, at = uuid.uuid4().hex[:12], _now()
    written = {}
    for study in studies:
        mine = [(i, t) for i, (s, t) in enumerate(entries) if s is study]
        records = before[id(study)]
        written[study.study_name] = Confirmation(
            race_id, at, {t.number: race.speeds[i] for i, t in mine}, race.baseline_latency,
            race.rounds, tuple(t.number for _, t in mine), max(r.number for r in records),
            frozenset(r.number for r in records if r.finished))
        StudyRecord.write_confirmation(study, written[study.study_name])
    return written


def confirm_study(evaluator: Measurer, study: optuna.Study, goal: Goal, *,
                  say: Say = _silent) -> bool:
    """Race the study's answer with the trials no race has judged that could take its place
    (state.StudyState.to_race); False when it has no feasible trial to confirm. A study whose
    latest race judged everything that could change its answer (a resumed run with nothing
    new) keeps that race: racing again would spend GPU time on an answer already confirmed."""
    state = StudyState.of(study, goal)
    if state.race is not None and state.settled():
        return state.choose()[0] is not None
    found = state.to_race()
    if not found:
        return False
    required = goal.required_speedup(evaluator.plain_latency)
    written = _race(evaluator, [(study, t) for t in found], required,
                    what=f"{StudyRecord.of(study).combo}'s answer", say=say)
    if goal.mode == Mode.MAX_SPEEDUP:
        _race_left_out(evaluator, study, goal, written[study.study_name], say=say)
    return True


def _race_left_out(evaluator: Measurer, study: optuna.Study, goal: Goal,
                   confirmation: Confirmation, *, say: Say = _silent) -> None:
    """Candidates enter a race for overlapping the best first estimate. When the race takes
    the winner's luck back, trials it judged but left out for being slower than that estimate
    may overlap what it measured now; they race it once more, as challengers of the new
    incumbent (SMAC's intensification), instead of losing to it for not having raced."""
    state = StudyState(tuple(trial_records(study)), goal, confirmation)
    winner, _ = state.choose()
    best = state.speed(winner).speedup
    left_out = [t for t in feasible(state.records, goal) if confirmation.before(t.number)
                and t.number not in confirmation.speeds and t.speed.speedup.high >= best.low]
    left_out.sort(key=fastest_first)
    if left_out:
        _race(evaluator, [(study, t) for t in [winner, *left_out[:CONFIRM_AT_MOST - 1]]], None,
              what=f"{StudyRecord.of(study).combo}'s answer against those left out", say=say)


def confirm_overall(evaluator: Measurer, studies: Sequence[optuna.Study], goal: Goal, *,
                    say: Say = _silent) -> bool:
    """Race the combos' chosen configurations whose intervals overlap the best one's; False
    when there is nothing to compare. When their last race was this one (a resumed run with
    nothing new), it stands. The race becomes each study's latest: a combo's other trials,
    which did not run in it, are no longer chosen over the one that did on an older number."""
    required = goal.required_speedup(evaluator.plain_latency)
    states = [StudyState.of(study, goal) for study in studies]
    entries = overall_entries(states, goal, required)
    if entries:
        _race(evaluator, [(studies[i], t) for i, t in entries], required,
              what="the overall answer (" + ", ".join(StudyRecord.of(studies[i]).combo
                                                      for i, _ in entries) + ")", say=say)
    return bool(entries) or sum(s.choose()[0] is not None for s in states) >= 2


__all__ = ["confirm_overall", "confirm_study"]
