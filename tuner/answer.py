"""The answer of a search: the configuration each combo's study chose, and the one chosen
overall, with the numbers a user sees. Computed here, once, from the stored records; the run's
table, `tuner show`, the report and `search_params.json` all render this object.

Every speedup shown is an estimate with its interval, the confirmed one where the study's
candidates were raced against each other (tuner/search/confirm.py), and both latencies come
from that same estimate: baseline / speedup = accelerated latency, always. The answer's loss is
the one measured again on held-out images where that was done (tuner/search/heldout.py), with
the search's estimate, which chose it, beside it; choosing uses the search's estimates only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .record import (Confirmation, Failure, HeldOut, Pruned, QualityEstimate, SpeedEstimate,
                     StudyRecord, TrialRecord, TrialStatus)
from .setting import Goal, Mode, Setting
from .stats import Interval
from .status import Status, status_of

CONFIRM_AT_MOST = 4  # candidates raced per study


# -- choosing among trials ---------------------------------------------------------------------


def speed_of(trial: TrialRecord, confirmation: Confirmation | None) -> SpeedEstimate:
    """The confirmed speed of a raced trial, else its own."""
    if confirmation is not None and trial.number in confirmation.speeds:
        return confirmation.speeds[trial.number]
    return trial.speed


def feasible(trials: Iterable[TrialRecord], goal: Goal) -> list[TrialRecord]:
    """Scored originals (not repeats) that keep the loss budget."""
    return [t for t in trials if t.original and t.feasible(goal)]


def _pick(items: Sequence, goal: Goal | None, *, speed, loss, order):
    """The selection rule, for trials within a combo and for choices across combos: fastest;
    with a requirement, the lowest loss among those reaching it, else the fastest (not met).
    Ties go to the lower loss (or the higher speed), then to `order`. `speed(item)` is a
    SpeedEstimate. Returns (item, met), met None without a requirement."""
    required = goal is not None and goal.mode == Mode.REQ_SPEEDUP
    if not items:
        return None, (False if required else None)
    fastest = min(items, key=lambda x: (-speed(x).value, loss(x), order(x)))
    if not required:
        return fastest, None
    reaching = [x for x in items if goal.reaches(speed(x).value, speed(x).baseline_latency)]
    if not reaching:
        return fastest, False
    return min(reaching, key=lambda x: (loss(x), -speed(x).value, order(x))), True


def choose(trials: Iterable[TrialRecord], goal: Goal, confirmation: Confirmation | None = None
           ) -> tuple[TrialRecord | None, bool | None]:
    """The chosen feasible trial and whether it meets the requirement (None without one),
    among the `eligible` ones after the study's latest race (`confirmation`)."""
    return _pick(eligible(trials, goal, confirmation), goal,
                 speed=lambda t: speed_of(t, confirmation),
                 loss=lambda t: t.quality.loss.value, order=lambda t: t.number)


def eligible(trials: Iterable[TrialRecord], goal: Goal, confirmation: Confirmation | None
             ) -> list[TrialRecord]:
    """The feasible trials that may be chosen after a race: those it measured, at its speeds,
    and those it did not judge (finished after it began), at their own. A trial it judged but
    left out (beyond the candidates' limit, or not close enough) is not chosen over those that
    ran in it: a raced trial's speed was measured again, without the luck that made it a
    candidate (the winner's curse), while an unraced one's own estimate still has it; and a
    speed an earlier race measured was measured at another moment than the race it would be
    compared with (a race keeps only its own speeds)."""
    found = feasible(trials, goal)
    if confirmation is None or not confirmation.speeds:
        return found
    return [t for t in found if t.number in confirmation.speeds
            or not confirmation.before(t.number)] or found


def incumbent(trials: Iterable[TrialRecord], goal: Goal) -> TrialRecord | None:
    """The fastest feasible trial so far, by its own estimate: the first candidate of a race
    (the search prunes under `choose`'s answer instead, at its confirmed speed once raced)."""
    return _pick(feasible(trials, goal), None, speed=lambda t: t.speed,
                 loss=lambda t: t.quality.loss.value, order=lambda t: t.number)[0]


def fastest_first(trial: TrialRecord) -> tuple:
    """Sort key of feasible trials by their own estimate: faster first, then lower loss, then
    earlier (the order in which they enter a race)."""
    return -trial.speed.value, trial.quality.loss.value, trial.number


def candidates(trials: Sequence[TrialRecord], goal: Goal,
               limit: int = CONFIRM_AT_MOST) -> list[TrialRecord]:
    """The trials whose speedups must be measured again before an answer is given, up to
    `limit`: every feasible trial whose interval overlaps the best one's. With a requirement:
    the trial that would be chosen now (the lowest loss among those reaching it, else the
    fastest), the fastest one reaching it (the answer should the race take the first below
    it), then those whose interval may reach it with a lower loss than the first, by loss."""
    found = feasible(trials, goal)
    if not found:
        return []
    best = incumbent(found, goal)
    if goal.mode == Mode.MAX_SPEEDUP:
        close = [t for t in found if t.speed.speedup.overlaps(best.speed.speedup)]
        close.sort(key=fastest_first)
        return [best] + [t for t in close if t is not best][:limit - 1]
    chosen, _ = _pick(found, goal, speed=lambda t: t.speed, loss=lambda t: t.quality.loss.value,
                      order=lambda t: t.number)
    sure = [t for t in found if goal.reaches(t.speed.value, t.speed.baseline_latency)]
    fastest = min(sure, key=fastest_first) if sure else best
    loss = chosen.quality.loss.value
    maybe = [t for t in found if goal.reaches(t.speed.speedup.high, t.speed.baseline_latency)
             and t.quality.loss.value <= loss]
    maybe.sort(key=lambda t: (t.quality.loss.value, -t.speed.value, t.number))
    order = [chosen, fastest, *maybe]
    return [t for i, t in enumerate(order) if t not in order[:i]][:limit]


def still_in_race(intervals: dict[int, Interval], losses: dict[int, float],
                  required: float | None) -> set[int]:
    """Racing rule (after F-Race/irace, Birattari et al. 2002, Lopez-Ibanez et al. 2016, and
    SMAC's intensification, Hutter et al. 2011): drop a candidate once its interval shows it
    cannot be the answer.

    Without a requirement, drop those confidently slower than the best. With one, the answer
    is the lowest-loss candidate that reaches it: drop those confidently below it, and once
    the lowest-loss remaining one is confidently above it, drop every other.
    """
    if required is None:
        best = max(intervals, key=lambda i: intervals[i].value)
        return {i for i, v in intervals.items() if v.high >= intervals[best].low}
    alive = {i for i, v in intervals.items() if v.high >= required}
    if not alive:  # none can reach it: the answer is the fastest; race for that
        return still_in_race(intervals, losses, None)
    first = min(alive, key=lambda i: losses[i])
    return {first} if intervals[first].low >= required else alive


def pareto_front(trials: Iterable[TrialRecord], goal: Goal) -> list[TrialRecord]:
    """Feasible trials that no other feasible trial beats on both speedup and loss."""
    found = feasible(trials, goal)

    def dominated(t: TrialRecord) -> bool:
        s, l_ = t.speed.value, t.quality.loss.value
        return any(o.speed.value >= s and o.quality.loss.value <= l_
                   and (o.speed.value > s or o.quality.loss.value < l_) for o in found)

    return sorted((t for t in found if not dominated(t)), key=lambda t: t.speed.value)


# -- the answer --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    combo: str
    study: str
    trial: int
    config: dict
    speed: SpeedEstimate  # the confirmed estimate where there is one
    quality: QualityEstimate  # measured in the search, on the images it was selected on
    confirmed: str | None = None  # the race that confirmed it
    held_out: HeldOut | None = None  # its quality measured again on other images

    @property
    def loss(self) -> Interval:
        """Its loss: measured again on images it was not selected on where that was done
        (the search's own estimate is biased low by the selection), else the search's."""
        return (self.held_out.quality if self.held_out else self.quality).loss

    @property
    def speedup(self) -> float:
        return self.speed.value

    @property
    def latency(self) -> float:
        return self.speed.latency

    @property
    def baseline_latency(self) -> float:
        return self.speed.baseline_latency

    def as_dict(self) -> dict:
        return {"combo": self.combo, "study": self.study, "trial": self.trial,
                "params": self.config, "speed": self.speed.as_dict(),
                "quality": self.quality.as_dict(), "confirmed": self.confirmed,
                "held_out": self.held_out.as_dict() if self.held_out else None,
                # the headline numbers, flat, for whoever reads the file by hand
                "speedup": self.speedup, "latency": self.latency,
                "baseline_latency": self.baseline_latency, "loss": self.loss.value,
                "search_loss": self.quality.loss.value}

    @classmethod
    def from_dict(cls, data: dict) -> Choice:
        return cls(data["combo"], data["study"], data["trial"], data["params"],
                   SpeedEstimate.from_dict(data["speed"]),
                   QualityEstimate.from_dict(data["quality"]), data.get("confirmed"),
                   HeldOut.from_dict(data["held_out"]) if data.get("held_out") else None)


def space_of(study: str, combo: str) -> str:
    """The label of the space a study of `combo` searched, read from its name
    (search/studies.study_name: `... | combo | label | objective`, the label only where the
    run chose the values, accelerators.space_label); "" where it has none."""
    _, found, tail = study.rpartition(f" | {combo} | ")
    parts = tail.split(" | ")
    return parts[0] if found and len(parts) == 2 else ""


@dataclass(frozen=True)
class ComboAnswer:
    combo: str
    study: str
    choice: Choice | None
    evaluations: int  # configurations that ran the pipeline (repeats are free)
    pruned: int  # of which stopped early (too slow, or loss over budget)
    exhausted: bool  # every distinct configuration of the space was answered
    # The highest speedup configurations were pruned under for being slower than another
    # combo's answer (runner.floor_of), or None.
    floor: float | None = None
    # Configurations whose quality was measured (the others stopped for their speed first);
    # None in answers written before it was counted.
    scored: int | None = None

    @property
    def missing(self) -> str:
        """Why there is no choice, in words."""
        if self.floor is not None:
            return f"none feasible faster than {self.floor:.2f}x (another combo's answer)"
        return "no feasible configuration"

    def as_dict(self) -> dict:
        return {"combo": self.combo, "study": self.study,
                "chosen": self.choice.as_dict() if self.choice else None,
                "evaluations": self.evaluations, "pruned": self.pruned,
                "exhausted": self.exhausted, "floor": self.floor, "scored": self.scored}

    @classmethod
    def from_dict(cls, data: dict) -> ComboAnswer:
        return cls(data["combo"], data["study"],
                   Choice.from_dict(data["chosen"]) if data.get("chosen") else None,
                   data["evaluations"], data["pruned"], data["exhausted"], data.get("floor"),
                   data.get("scored"))


@dataclass(frozen=True)
class Answer:
    setting: Setting
    goal: Goal
    required_speedup: float | None
    combos: tuple[ComboAnswer, ...]
    chosen: Choice | None
    met: bool | None
    notes: tuple[str, ...] = field(default=())
    identical: bool = False  # every configuration evaluated gave the plain pipeline's output
    # Whether the run behind it is complete, was interrupted (where), or is still going; None
    # for studies no run marked (status.py).
    status: Status | None = None

    def as_dict(self) -> dict:
        return {"goal": self.goal.as_dict(), "required_speedup": self.required_speedup,
                "met": self.met, "met_confidently": self.met_confidently,
                "chosen": self.chosen.as_dict() if self.chosen else None,
                "per_combo": {c.combo: c.as_dict() for c in self.combos},
                "notes": list(self.notes), "identical": self.identical,
                "status": self.status.as_dict() if self.status else None}

    @classmethod
    def from_dict(cls, setting: Setting, data: dict) -> Answer:
        return cls(setting, Goal.from_dict(data["goal"]), data.get("required_speedup"),
                   tuple(ComboAnswer.from_dict(c) for c in data["per_combo"].values()),
                   Choice.from_dict(data["chosen"]) if data.get("chosen") else None,
                   data.get("met"), tuple(data.get("notes", ())), bool(data.get("identical")),
                   Status.from_dict(data["status"]) if data.get("status") else None)

    def name_of(self, found: ComboAnswer | Choice) -> str:
        """How a combo's row (or a choice) is named: the combo, with the space its study
        searched where the answer holds several studies of that combo (`tuner show` from the
        studies and the report gather the studies of every run of a setting and goal, and
        runs may search the solver's knobs over other ranges)."""
        if sum(c.combo == found.combo for c in self.combos) < 2:
            return found.combo
        space = space_of(found.study, found.combo)
        return f"{found.combo} ({space})" if space else found.combo

    def table(self) -> str:
        """The run's closing table, and what `tuner show` prints."""
        lines = [f"{'combo':<22} {'evals':>5} {'pruned':>6} {'speedup':>20} "
                 f"{self.goal.metric + ' loss':>22}  params"]
        for c in self.combos:
            note = " (space exhausted)" if c.exhausted else ""
            head = f"{self.name_of(c):<22} {c.evaluations:>5} {c.pruned:>6}"
            if c.choice is None:
                lines.append(f"{head} {'-':>20} {'-':>22}  {c.missing}{note}")
                continue
            lines.append(f"{head} {speed_text(c.choice.speed):>20} "
                         f"{loss_text(c.choice.quality.loss):>22}  "
                         f"{config_text(c.choice.config)}{note}")
        lines.append("")
        lines.append(self.summary())
        if self.status is not None:
            lines.append(self.status.text())
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def summary(self) -> str:
        budget = self.goal.budget
        if self.identical:
            return (f"Every configuration tried gives output bit-identical to the plain "
                    f"pipeline at {self.setting.steps} steps: nothing to accelerate here.")
        if self.chosen is None:
            return f"No configuration keeps {budget}{self._measured()}."
        c = self.chosen
        answer = (f"{self.name_of(c)} {config_text(c.config)}: {speed_text(c.speed)}, "
                  f"{self.loss_claim} ({c.baseline_latency:.3f}s -> {c.latency:.3f}s per batch)")
        if c.confirmed:
            answer += ", confirmed"
        if self.required_speedup is None:
            return f"Fastest within {budget}: {answer}"
        if self.met:
            return (f"Meets {self.requirement} within {budget} with the lowest loss: {answer}"
                    f"; {self.confidence}")
        return (f"Nothing reaches {self.requirement} within {budget}{self._measured()}; "
                f"closest: {answer}")

    def _measured(self) -> str:
        """How many configurations had their quality measured, where the answer knows: a
        configuration pruned for its speed first says nothing about the budget."""
        if any(c.scored is None for c in self.combos):
            return ""
        scored = sum(c.scored for c in self.combos)
        evaluated = sum(c.evaluations for c in self.combos)
        if scored == 0:
            return (f" (none of the {evaluated} configurations evaluated was measured for "
                    f"quality: each stopped for its speed first)")
        return f" ({scored} of the {evaluated} configurations evaluated measured for quality)"

    @property
    def loss_claim(self) -> str:
        """The chosen configuration's loss as stated: on held-out images where measured, with
        the search's estimate beside it, and whether it still keeps the budget."""
        c, metric = self.chosen, self.goal.metric
        if c.held_out is None:
            return f"{loss_text(c.quality.loss)} {metric} loss"
        first, last = c.held_out.seeds
        text = (f"{loss_text(c.loss)} {metric} loss on held-out seeds {first}-{last} "
                f"(search: {loss_text(c.quality.loss)})")
        if not c.held_out.quality.within(self.goal):
            text += f", which does not keep {self.goal.budget}"
        return text

    @property
    def met_confidently(self) -> bool | None:
        """Whether the requirement is met by the lower end of the chosen speedup's interval,
        not only by its estimate (None without a requirement or a choice)."""
        if self.required_speedup is None or self.chosen is None:
            return None
        speed = self.chosen.speed
        low = speed.speedup.low  # 0 when nothing could be trusted: not confidently anything
        return low > 0 and bool(self.goal.reaches(low, speed.baseline_latency))

    @property
    def confidence(self) -> str:
        """Whether a met requirement is met with 95 % confidence, in words."""
        low = self.chosen.speed.speedup.low
        if self.met_confidently:
            return f"met confidently (the interval's low end, {low:.2f}x, reaches it)"
        return f"not confidently: the interval's low end, {low:.2f}x, is below it"

    @property
    def requirement(self) -> str:
        """The required speedup as shown, with the latency asked for (`--req-time`) if any."""
        text = f"{self.required_speedup:.2f}x" if self.required_speedup is not None else "?"
        if self.goal.req_time is not None:
            text += f" ({self.goal.req_time:g}s per batch)"
        return text


def speed_text(speed: SpeedEstimate) -> str:
    s = speed.speedup
    return f"{s.value:.2f}x [{s.low:.2f}, {s.high:.2f}]"


def loss_text(loss: Interval) -> str:
    return f"{loss.value:.2%} [{loss.low:.2%}, {loss.high:.2%}]"


def config_text(config: dict) -> str:
    """`deepcache(cache_interval=3, cache_branch_id=0) tome(...)`"""
    return " ".join(f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"
                    for name, params in config.items())


def choice_of(study: StudyRecord, trial: TrialRecord | None) -> Choice | None:
    """The study's chosen trial as an answer: its confirmed speed and race where it was
    raced."""
    if trial is None:
        return None
    confirmation = study.confirmation
    return Choice(study.combo, study.name, trial.number, trial.config,
                  speed_of(trial, confirmation), trial.quality, raced_by(confirmation, trial),
                  study.held_out.get(trial.number))


def raced_by(confirmation: Confirmation | None, trial: TrialRecord) -> str | None:
    """The race that measured the speed a trial is shown with (None: its own estimate). A
    race written before races were kept apart holds speeds merged from earlier races: those of
    trials that did not enter it are labelled as measured before it."""
    if confirmation is None or trial.number not in confirmation.speeds:
        return None
    if confirmation.judged is None and confirmation.candidates \
            and trial.number not in confirmation.candidates:
        return f"before {confirmation.race}"
    return confirmation.race


def baseline_latency(studies: Sequence[StudyRecord]) -> float | None:
    """The plain latency an answer is stated against: that of the latest race, else the
    latest plain latency any worker measured."""
    raced = [s.confirmation for s in studies if s.confirmation is not None]
    if raced:
        return max(raced, key=lambda c: c.at).baseline_latency
    measured = [p for s in studies for p in s.plain_latencies]
    return max(measured, key=lambda p: p.at).latency if measured else None


def answer(setting: Setting, goal: Goal,
           studies: Sequence[tuple[StudyRecord, list[TrialRecord]]],
           notes: Sequence[str] = ()) -> Answer:
    """The answer for one setting and goal from its combos' studies (in combo order)."""
    required = goal.required_speedup(baseline_latency([s for s, _ in studies]))
    combos = []
    for study, trials in studies:
        chosen, _ = choose(trials, goal, study.confirmation)
        answered = {t.canonical for t in trials if t.answered}
        combos.append(ComboAnswer(
            study.combo, study.name, choice_of(study, chosen),
            sum(t.evaluated for t in trials),
            sum(t.evaluated and t.state == TrialStatus.PRUNED for t in trials),
            study.distinct_points is not None and len(answered) >= study.distinct_points,
            max((t.pruned_below for t in trials if t.pruned == Pruned.FLOOR), default=None),
            sum(t.evaluated and t.quality is not None for t in trials)))
    chosen, met = overall([c.choice for c in combos], goal)
    tried = [t for _, trials in studies for t in trials if t.evaluated or t.invalid]
    identical = bool(tried) and all(t.failure == Failure.IDENTICAL for t in tried)
    undecided = undecided_note(chosen, goal)
    notes = (*notes, undecided) if undecided else tuple(notes)
    return Answer(setting, goal, required, tuple(combos), chosen, met, notes, identical,
                  status_of(studies))


def undecided_note(choice: Choice | None, goal: Goal) -> str | None:
    """When the chosen configuration's loss interval is wider than the budget and holds it, its
    samples cannot tell whether it keeps the budget (it is feasible by its estimate only): say
    so, and about how many samples would tell."""
    if choice is None:
        return None
    loss = choice.quality.loss
    if not loss.undecided(goal.loss_budget):
        return None
    needed = loss.samples_to_decide(goal.loss_budget)
    would = f"about {needed} would (--num-samples)" if needed else \
        "no feasible number would, its estimate being that close to the budget"
    return (f"the answer's {goal.metric} loss {loss_text(loss)} is wider than the budget "
            f"({goal.loss_budget:.1%}): {loss.n} samples cannot tell whether it keeps it, "
            f"it is feasible by its estimate only (--loss-bound upper asks the whole interval "
            f"to be); {would}")


def overall(choices: Sequence[Choice | None], goal: Goal) -> tuple[Choice | None, bool | None]:
    """The answer across combos, by the same rule as within one; and whether it is met."""
    found = [c for c in choices if c is not None]
    return _pick(found, goal, speed=lambda c: c.speed, loss=lambda c: c.quality.loss.value,
                 order=found.index)


__all__ = ["Answer", "Choice", "ComboAnswer", "answer", "baseline_latency", "candidates",
           "choice_of", "choose", "config_text", "eligible", "feasible", "incumbent", "loss_text",
           "overall", "pareto_front", "raced_by", "speed_of", "speed_text", "still_in_race",
           "undecided_note"]
