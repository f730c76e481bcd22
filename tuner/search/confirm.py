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
from collections.abc import Sequence
from datetime import datetime, timezone

import optuna

from ..answer import (CONFIRM_AT_MOST, candidates, choose, fastest_first, feasible, speed_of,
                      still_in_race)
from ..evaluator import Evaluator
from ..record import Confirmation, StudyRecord, TrialRecord, trial_records
from ..setting import Goal


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _race(evaluator: Evaluator, entries: Sequence[tuple[optuna.Study, TrialRecord]],
          required: float | None) -> dict[str, Confirmation]:
    """Race the entries' configurations; add the confirmed speeds to each study's record.
    Returns what was written, by study name."""
    losses = {i: t.quality.loss.value for i, (_, t) in enumerate(entries)}
    studies = {id(s): s for s, _ in entries}.values()
    last = {id(s): max(t.number for t in s.get_trials(deepcopy=False)) for s in studies}
    race = evaluator.race([t.config for _, t in entries],
                          lambda intervals: still_in_race(intervals, losses, required))
    race_id, at = uuid.uuid4().hex[:12], _now()
    written = {}
    for study in studies:
        mine = [(i, t) for i, (s, t) in enumerate(entries) if s is study]
        earlier = StudyRecord.of(study).confirmation
        speeds = dict(earlier.speeds) if earlier is not None else {}
        speeds.update({t.number: race.speeds[i] for i, t in mine})
        written[study.study_name] = Confirmation(
            race_id, at, speeds, race.baseline_latency, race.rounds,
            tuple(t.number for _, t in mine), last[id(study)])
        StudyRecord.write_confirmation(study, written[study.study_name])
    return written


def confirm_study(evaluator: Evaluator, study: optuna.Study, goal: Goal) -> bool:
    """Race the study's candidates; False when it has no feasible trial to confirm. A study
    resumed with nothing new since its race (every feasible trial measured before it) keeps
    that race: racing again would spend GPU time on an answer already confirmed."""
    records = trial_records(study)
    earlier = StudyRecord.of(study).confirmation
    if earlier is not None and earlier.speeds and \
            all(earlier.before(t.number) for t in feasible(records, goal)):
        return True
    required = goal.required_speedup(evaluator.plain_runs.latency)
    found = candidates(records, goal)
    if not found:
        return False
    written = _race(evaluator, [(study, t) for t in found], required)
    if goal.mode == "max_speedup":
        _race_left_out(evaluator, study, records, goal, written[study.study_name])
    return True


def _race_left_out(evaluator: Evaluator, study: optuna.Study, records: list[TrialRecord],
                   goal: Goal, confirmation: Confirmation) -> None:
    """Candidates enter a race for overlapping the best first estimate. When the race takes
    the winner's luck back, trials left out for being slower than that estimate may overlap
    what it measured now; they race it once more, as challengers of the new incumbent (SMAC's
    intensification), instead of losing to it for not having raced (answer.choose)."""
    winner, _ = choose(records, goal, confirmation)
    best = speed_of(winner, confirmation).speedup
    left_out = [t for t in feasible(records, goal)
                if t.number not in confirmation.speeds and t.speed.speedup.high >= best.low]
    left_out.sort(key=fastest_first)
    if left_out:
        _race(evaluator, [(study, t) for t in [winner, *left_out[:CONFIRM_AT_MOST - 1]]], None)


def confirm_overall(evaluator: Evaluator, studies: Sequence[optuna.Study], goal: Goal) -> bool:
    """Race the combos' chosen configurations whose intervals overlap the best one's; False
    when there is nothing to compare. When their last race was this one (a resumed run with
    nothing new), it stands."""
    required = goal.required_speedup(evaluator.plain_runs.latency)
    entries = []  # (study, its chosen trial, that trial's speed, the study's last race)
    for study in studies:
        confirmation = StudyRecord.of(study).confirmation
        chosen, _ = choose(trial_records(study), goal, confirmation)
        if chosen is not None:
            entries.append((study, chosen, speed_of(chosen, confirmation), confirmation))
    if len(entries) < 2:
        return False
    if required is None:
        best = max(entries, key=lambda e: e[2].value)[2].speedup
        entries = [e for e in entries if e[2].speedup.overlaps(best)]
    else:
        entries = [e for e in entries if e[2].speedup.high >= required] or entries
    if len(entries) < 2:
        return False
    if all(c is not None and t.number in c.candidates for _, t, _, c in entries) \
            and len({c.race for _, _, _, c in entries}) == 1:
        return True  # these very answers were raced against each other last (a resumed run)
    _race(evaluator, [(s, t) for s, t, _, _ in entries], required)
    return True


__all__ = ["confirm_overall", "confirm_study"]
