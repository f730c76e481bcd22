"""A study's state: its trial records, its goal and its latest race, as one value.

Everything that asks "what is this study's answer", "has it stopped", "what must be raced" or
"under what speedup can nothing change the answer" asks it here: the runner, the objective's
pruning, the confirmation races, `tuner run`'s rerun shortcut, `tuner show` and the report
(through answer.py) all read the same rules.

A race measures a few trials again against each other (search/confirm.py). It records which
trials it measured (`Confirmation.speeds`) and which were finished when it began
(`Confirmation.judged`). The rules that follow from it:

* chosen: among the trials the latest race measured, at the speeds it measured, and trials it
  did not judge (finished after it began, or running then) at their own estimates. A trial it
  judged but left out does not win on its own estimate, which is as lucky as the raced ones'
  were before the race; nor on an older race's number, measured at another moment than the
  race it is compared with.
* settled: no trial the latest race did not judge could change the answer. A study that is not
  settled is raced again before its answer is final, so its last race always holds its answer,
  the incumbent, beside its challengers (SMAC's intensification, Hutter, Hoos and
  Leyton-Brown 2011: a challenger becomes the incumbent only once compared with it on the same
  runs).
* floor: only a raced speed prunes. The first estimate of a study's best configuration is the
  maximum of noisy measurements (the winner's curse) and would prune configurations that are
  in fact faster; the search races a new best before it prunes under it (`wants_race`).

No torch and no Optuna import: `tuner show` and the report read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from .answer import CONFIRM_AT_MOST, candidates, choose, eligible, feasible, speed_of
from .record import Confirmation, SpeedEstimate, StudyRecord, TrialRecord, trial_records
from .setting import Goal


@dataclass(frozen=True)
class StudyState:
    records: tuple[TrialRecord, ...]
    goal: Goal
    race: Confirmation | None = None  # the study's latest race

    @classmethod
    def of(cls, study, goal: Goal | None = None) -> StudyState:
        """From an optuna.Study (or FrozenStudy with its trials)."""
        record = StudyRecord.of(study)
        return cls(tuple(trial_records(study)), goal or record.goal, record.confirmation)

    @classmethod
    def from_record(cls, record: StudyRecord, trials: Iterable[TrialRecord]) -> StudyState:
        return cls(tuple(trials), record.goal, record.confirmation)

    # -- the answer ----------------------------------------------------------------------------

    def choose(self) -> tuple[TrialRecord | None, bool | None]:
        """The chosen trial and whether it meets the requirement (module docstring)."""
        return choose(self.records, self.goal, self.race)

    def speed(self, trial: TrialRecord) -> SpeedEstimate:
        """A trial's speed: the one the latest race measured, else its own."""
        return speed_of(trial, self.race)

    def raced(self, trial: TrialRecord) -> bool:
        """Whether the latest race measured it."""
        return self.race is not None and trial.number in self.race.speeds

    def judged(self, trial: TrialRecord) -> bool:
        """Whether the latest race judged it (it was finished when that race began)."""
        return self.race is not None and self.race.before(trial.number)

    def unjudged(self) -> list[TrialRecord]:
        """Feasible trials no race has judged: finished after the latest race began (or with
        no race yet)."""
        return [t for t in feasible(self.records, self.goal) if not self.judged(t)]

    def incumbent(self) -> TrialRecord | None:
        """The answer the latest race gave: the choice among the trials it judged, at its
        speeds (None without a race)."""
        if self.race is None:
            return None
        judged = [t for t in self.records if self.judged(t)]
        return choose(judged, self.goal, self.race)[0]

    def to_race(self, limit: int = CONFIRM_AT_MOST) -> list[TrialRecord]:
        """The trials a race now would measure: without a race, the candidates for an answer
        (answer.candidates); after one, its answer, the incumbent, with the trials it did not
        judge that could take its place. Records carry the speed they enter with."""
        if self.race is None:
            return candidates(self.records, self.goal, limit)
        best = self.incumbent()
        fresh = self.unjudged()
        if best is None:
            return candidates(fresh, self.goal, limit)
        entering = replace(best, speed=self.speed(best))
        found = candidates([entering, *fresh], self.goal, limit)
        if all(t.number != best.number for t in found):
            found = [entering, *found[:limit - 1]]
        return found

    def settled(self) -> bool:
        """Whether no trial the latest race did not judge could change the answer: racing now
        would measure nothing new."""
        return not any(not self.judged(t) for t in self.to_race())

    def floor(self) -> float | None:
        """The speedup under which a configuration cannot change this study's answer, by raced
        speeds only: the lower bound of the fastest trial the latest race measured among those
        that may be chosen (None without a race)."""
        if self.race is None:
            return None
        found = eligible(self.records, self.goal, self.race)
        raced = [self.race.speeds[t.number] for t in found if t.number in self.race.speeds]
        return max((s.speedup.low for s in raced), default=None)

    def slower_than(self, required: float | None, *, floor: float | None = None
                    ) -> tuple[float | None, bool]:
        """The speedup under which a configuration is pruned for its speed, and whether that is
        the run's `floor` (another combo's confirmed answer). With a requirement: the
        requirement, once a configuration reaches it; before that, the answer is the fastest
        (not met), and this study's raced floor prunes, so that the closest configuration has
        its quality measured. Without one: the raced floor, or the run's if higher."""
        if required is not None and self.choose()[1]:
            return required, False
        own = self.floor()
        if floor is not None and (own is None or floor > own):
            return floor, True
        return own, False

    def wants_race(self, *, floor: float | None = None) -> bool:
        """Whether the search should race before its next evaluation: the chosen trial is
        unraced and its own estimate would prune under a higher speedup than what was raced
        (or the run's floor). Racing it first keeps a lucky first estimate from pruning the
        configurations that are in fact faster (only a raced speed prunes)."""
        chosen, met = self.choose()
        if chosen is None or self.raced(chosen) or met:
            return False
        bar = max(x for x in (self.floor(), floor, 0.0) if x is not None)
        return chosen.speed.speedup.low > bar

    # -- when the search stops -------------------------------------------------------------------

    def _standing(self, records: Sequence[TrialRecord]) -> tuple[int, TrialRecord | None, float]:
        """The answer among `records`, its rank (0 none, 1 found or not meeting the
        requirement, 2 meeting it) and its speedup (the raced one where it was raced)."""
        chosen, met = choose(records, self.goal, self.race)
        speed = speed_of(chosen, self.race).value if chosen is not None else 0.0
        return (0 if chosen is None else 2 if met else 1), chosen, speed

    def stalled(self, patience: int, precision: float, *,
                ignoring: frozenset[int] = frozenset()) -> bool:
        """Whether the last `patience` evaluations did not improve the study's answer (raced
        trials at their raced speed), not counting the trials numbered in `ignoring`."""
        evaluated = sorted((r for r in self.records if r.evaluated), key=lambda r: r.number)
        if len(evaluated) <= patience:
            return False
        now = [r for r in evaluated if r.number not in ignoring]
        return not _improved(self._standing(now), self._standing(evaluated[:-patience]),
                             precision)

    def unconfirmed_progress(self, patience: int, precision: float) -> bool:
        """Whether the study goes on only because of feasible trials of its last `patience`
        evaluations that no race has judged: without them it would have stalled. Racing them
        before they count is SMAC's intensification applied to the stopping rule, and lazily:
        a race is run only when the stop depends on it."""
        evaluated = sorted((r for r in self.records if r.evaluated), key=lambda r: r.number)
        if len(evaluated) <= patience:
            return False
        fresh = frozenset(r.number for r in feasible(evaluated[-patience:], self.goal)
                          if not self.judged(r))
        return bool(fresh) and not self.stalled(patience, precision) \
            and self.stalled(patience, precision, ignoring=fresh)

    def finished(self, *, points: int, trials: int, patience: int | None,
                 stop_when_met: bool, precision: float, floor: float | None = None) -> bool:
        """Whether the search has nothing left to do, in a run whose floor is `floor`: --trials
        evaluations, every distinct configuration answered, the requirement met (with
        stop_when_met), or `patience` evaluations without progress."""
        return sum(r.evaluated for r in self.records) >= trials \
            or len({r.canonical for r in self.records if r.settles(floor)}) >= points \
            or bool(stop_when_met and self.choose()[1]) \
            or bool(patience and self.stalled(patience, precision))


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


def overall_entries(states: Sequence[StudyState], goal: Goal, required: float | None
                    ) -> list[tuple[int, TrialRecord]]:
    """The combos' chosen trials the overall race must measure, as (index in `states`, trial):
    those whose speed may make them the overall answer. Empty when there is nothing to compare,
    or when these very trials were the last race of each (a resumed run with nothing new)."""
    entries = []  # (index, chosen trial, its speed, the study's latest race)
    for i, state in enumerate(states):
        chosen, _ = state.choose()
        if chosen is not None:
            entries.append((i, chosen, state.speed(chosen), state.race))
    if required is None and entries:
        best = max(entries, key=lambda e: e[2].value)[2].speedup
        entries = [e for e in entries if e[2].speedup.overlaps(best)]
    elif entries:
        entries = [e for e in entries if e[2].speedup.high >= required] or entries
    if len(entries) < 2:
        return []
    if all(r is not None and t.number in r.candidates for _, t, _, r in entries) \
            and len({r.race for _, _, _, r in entries}) == 1:
        return []
    return [(i, t) for i, t, _, _ in entries]


__all__ = ["StudyState", "overall_entries"]
