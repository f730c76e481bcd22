"""What is stored on trials and studies, typed: the one module that knows the attribute names.

Everything the evaluator measures is written to an Optuna trial's user attributes through
`TrialRecord.write` and read back through `TrialRecord.from_trial`; a study's context (its
setting, goal, baselines, confirmation) through `StudyRecord`. Readers (selection, the answer,
the report, the dashboard's views) never see a string key.

No torch and no Optuna import: the results readers run without either loaded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .codes import Code
from .setting import Goal, Setting
from .stats import Interval, Prior, speedup_interval

# Trial user attributes.
_CONFIG, _CANONICAL, _WORKER, _SEED = "config", "canonical", "worker", "sampler_seed"
_SPEED, _QUALITY, _PRUNED, _SECONDS = "speed", "quality", "pruned", "seconds"
_DUPLICATE_OF, _FAILURE, _INVALID = "duplicate_of", "failure", "invalid"
_FAIL_REASON = "fail_reason"  # the message of a failure (an exception's), where there is one
_PRUNED_BELOW, _QUEUED_AFTER = "pruned_below", "queued_after"
# Study user attributes.
_SETTING, _GOAL, _COMBO, _BASELINE = "setting", "goal", "combo", "baseline"
_POINTS, _DEVICE, _VERSIONS, _PROMPTS = "distinct_points", "device", "versions", "prompts"
_CONFIRMATION, _PLAIN_PREFIX = "confirmation", "plain@"
_HELD_OUT_PREFIX = "held_out@"  # + the trial's number
_RUN_PREFIX = "run@"  # + host:pid:start of the process

# Where a run is (RunMark.phase): searching a combo, racing its answer, past that race, racing
# the combos' answers, measuring the answer's loss on held-out seeds, done.
SEARCH, RACE, RACED, OVERALL, HELD_OUT, ENDED = (
    "search", "race", "raced", "overall race", "held-out", "ended")
PHASES = (SEARCH, RACE, RACED, OVERALL, HELD_OUT, ENDED)

class TrialStatus(Code):
    """A trial's state, by the names of Optuna's `TrialState` (what `state.name` gives)."""

    RUNNING = "RUNNING"
    WAITING = "WAITING"  # queued: re-queued after an interruption, or queued by the search
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"

    def is_finished(self) -> bool:
        """It has ended: nothing will change its numbers (as `TrialState.is_finished`)."""
        return self in (TrialStatus.COMPLETE, TrialStatus.PRUNED, TrialStatus.FAIL)


class Pruned(Code):
    """Why a trial stopped before its quality was known (it ends PRUNED)."""

    SLOW = "slow"  # slower than this study's answer or the required speedup
    # Slower than the answer another combo of the same run already confirmed (the floor): it
    # cannot change the overall answer, though it might have been this combo's own.
    FLOOR = "floor"
    LOSS = "loss"  # its loss confidently over budget

    @property
    def text(self) -> str:
        return _PRUNED_TEXT[self]


# Also what versions before the codes stored, and what `Pruned.read` still accepts.
_PRUNED_TEXT = {Pruned.SLOW: "too slow", Pruned.FLOOR: "slower than another combo's answer",
                Pruned.LOSS: "loss over budget"}


class Failure(Code):
    """Why a trial ended FAIL. The first three did not evaluate anything that counts toward
    the budget (the first two are run again); the others answer their configuration."""

    INTERRUPTED = "interrupted"  # by Ctrl-C or SIGTERM: re-queued
    ORPHANED = "orphaned"  # its worker died: re-queued (workers.py, rule 2)
    SURPLUS = "surplus"  # the budget was full before it ran (workers.py, rule 4)
    INVALID = "invalid"  # the configuration cannot be evaluated (NoEffect, Unsupported, ...)
    IDENTICAL = "identical"  # its output is bit-identical to the plain pipeline's
    CRASHED = "crashed"  # out of memory, an exception inside an accelerator, ...

    @property
    def text(self) -> str:
        return _FAILURE_TEXT.get(self, self.value)

    @property
    def counted(self) -> bool:
        """Whether the trial may count toward the budget (`TrialRecord.evaluated`)."""
        return self not in (Failure.INTERRUPTED, Failure.ORPHANED, Failure.SURPLUS)


# The sentences of the failures that store no message of their own (an invalid or crashed
# trial stores its exception's); versions before the codes stored these sentences instead.
_FAILURE_TEXT = {Failure.ORPHANED: "worker died",
                 Failure.IDENTICAL: "output is bit-identical to the plain pipeline's"}


class Invalid(Code):
    """When a configuration was found invalid: before any generation (free, like a repeat), or
    after generating its images."""

    CHECKED = "checked"
    GENERATED = "generated"


def _legacy_failure(reason: str | None, invalid: Invalid | None) -> Failure | None:
    """The code of a failure stored as a sentence alone (versions before the codes): the three
    fixed sentences; an invalid configuration's message, which named an identical output in
    words; any other message was a crash's."""
    if reason is None:
        return None
    fixed = {f.text: f for f in (Failure.INTERRUPTED, Failure.ORPHANED, Failure.SURPLUS)}
    if reason in fixed:
        return fixed[reason]
    if invalid is not None:
        return Failure.IDENTICAL if "bit-identical" in reason else Failure.INVALID
    return Failure.CRASHED


def _number(value, what: str) -> float:
    """A stored number, refused (TypeError) when it is not one: a hand-edited or foreign file
    must fail where it is read, not where the number is formatted."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} is {value!r}, not a number")
    return value


def _interval(data: dict) -> Interval:
    return Interval(*(_number(data[k], k) for k in ("value", "low", "high")),
                    int(_number(data["n"], "n")))


def _interval_dict(value: Interval) -> dict:
    return asdict(value)


@dataclass(frozen=True)
class SpeedEstimate:
    """A configuration's speedup over the plain pipeline, measured in bracketed pairs.

    `baseline_latency` is the median of the plain runs that bracketed the accelerated ones, and
    the accelerated latency is *defined* as baseline_latency / speedup: the two latencies shown
    always divide to the speedup shown.
    """

    speedup: Interval
    baseline_latency: float  # seconds per batch
    pairs: int  # bracketed pairs that went into the estimate
    rejected: int = 0  # accelerated runs set aside: disturbed, or no clean plain run near them
    # Every accelerated run against the plain runs just around it, trusted or not (to see the
    # noise); `trusted`, `prior` and `options` are what `speedup` was computed from
    # (`recomputed`).
    ratios: tuple[float, ...] = ()
    trusted: tuple[float, ...] = ()  # the trusted runs' ratios, against trusted plain runs
    prior: Prior | None = None  # the variance borrowed from earlier configurations
    options: dict = field(default_factory=dict)  # stats.ratio_interval's other options

    def recomputed(self) -> Interval | None:
        """The speedup's interval computed again from what is stored: `speedup` itself
        (None for an estimate stored before `trusted` was)."""
        if not self.trusted and self.speedup.high != math.inf:
            return None
        return speedup_interval(self.trusted, self.ratios, self.prior, **self.options)

    @property
    def value(self) -> float:
        return self.speedup.value

    @property
    def latency(self) -> float:
        return self.baseline_latency / self.speedup.value

    def as_dict(self) -> dict:
        return {"speedup": _interval_dict(self.speedup), "baseline_latency": self.baseline_latency,
                "pairs": self.pairs, "rejected": self.rejected, "ratios": list(self.ratios),
                "trusted": list(self.trusted),
                "prior": asdict(self.prior) if self.prior is not None else None,
                "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: dict) -> SpeedEstimate:
        prior = data.get("prior")
        return cls(_interval(data["speedup"]),
                   _number(data["baseline_latency"], "baseline_latency"),
                   int(_number(data["pairs"], "pairs")),
                   int(_number(data.get("rejected", 0), "rejected")),
                   tuple(_number(r, "a ratio") for r in data.get("ratios", ())),
                   tuple(_number(r, "a trusted ratio") for r in data.get("trusted", ())),
                   Prior(**prior) if prior else None, dict(data.get("options") or {}))


@dataclass(frozen=True)
class QualityEstimate:
    """Quality against the plain pipeline on the same prompts and seeds.

    `loss` is the loss of the study's metric: the relative CLIP-score loss from paired
    per-image scores, or 1 - SSIM; both with a 95 % interval over the images scored.
    """

    metric: str
    loss: Interval
    clip_score: float
    clip_loss: Interval
    psnr: float
    ssim: float
    images: int  # images scored: fewer than num_samples when stopped early

    def as_dict(self) -> dict:
        return {"metric": self.metric, "loss": _interval_dict(self.loss),
                "clip_score": self.clip_score, "clip_loss": _interval_dict(self.clip_loss),
                "psnr": self.psnr, "ssim": self.ssim, "images": self.images}

    @classmethod
    def from_dict(cls, data: dict) -> QualityEstimate:
        return cls(data["metric"], _interval(data["loss"]),
                   _number(data["clip_score"], "clip_score"), _interval(data["clip_loss"]),
                   _number(data["psnr"], "psnr"), _number(data["ssim"], "ssim"),
                   int(_number(data["images"], "images")))

    def within(self, goal: Goal) -> bool:
        """The feasibility rule (see `Goal`)."""
        bound = self.loss.high if goal.loss_bound == "upper" else self.loss.value
        return bound <= goal.loss_budget

    def constraint(self, goal: Goal) -> float:
        """Optuna's constraint value: <= 0 when feasible."""
        bound = self.loss.high if goal.loss_bound == "upper" else self.loss.value
        return bound - goal.loss_budget


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the tuner reads it."""

    number: int
    state: TrialStatus
    config: dict = field(default_factory=dict)  # {accelerator: {knob: value}}
    canonical: str | None = None
    worker: dict | None = None
    sampler_seed: int | None = None
    speed: SpeedEstimate | None = None
    quality: QualityEstimate | None = None
    pruned: Pruned | None = None
    pruned_below: float | None = None  # the speedup a slow configuration was pruned under
    duplicate_of: int | None = None
    failure: Failure | None = None
    fail_detail: str | None = None  # its own message (an exception's), where it has one
    # The configuration cannot be evaluated (Failure.INVALID or IDENTICAL): when it was found.
    invalid: Invalid | None = None
    seconds: dict = field(default_factory=dict)  # where the trial's time went
    # A trial queued before it ran (re-queued, or queued by the search) runs after trials
    # numbered above it: the highest trial number when it claimed (workers.py, rule 1).
    queued_after: int | None = None

    def __post_init__(self):  # codes, also from plain strings (a record built by hand)
        object.__setattr__(self, "state", TrialStatus(self.state))
        object.__setattr__(self, "pruned", Pruned.read(self.pruned))
        object.__setattr__(self, "failure", Failure.read(self.failure))
        object.__setattr__(self, "invalid", Invalid.read(self.invalid))

    @property
    def fail_reason(self) -> str | None:
        """Why it failed, in words: its own message, else its failure's sentence."""
        if self.fail_detail is not None:
            return self.fail_detail
        return self.failure.text if self.failure is not None else None

    @property
    def claim_order(self) -> tuple[float, int]:
        """Its place in the order of claims (workers.py, rules 1 and 3): its number, or just
        after the trials that existed when a queued trial claimed."""
        if self.queued_after is not None and self.queued_after > self.number:
            return self.queued_after + 0.5, self.number
        return self.number, self.number

    @classmethod
    def from_trial(cls, trial) -> TrialRecord:
        """From an Optuna FrozenTrial (or anything with number, state and user_attrs)."""
        a = trial.user_attrs
        invalid, detail = Invalid.read(a.get(_INVALID)), a.get(_FAIL_REASON)
        failure = Failure.read(a[_FAILURE]) if _FAILURE in a \
            else _legacy_failure(detail, invalid)
        if _FAILURE not in a and failure is not None and failure.text == detail:
            detail = None  # a sentence stored for a code: rendered from the code
        return cls(
            number=trial.number, state=TrialStatus(trial.state.name),
            config=a.get(_CONFIG) or {}, canonical=a.get(_CANONICAL), worker=a.get(_WORKER),
            sampler_seed=a.get(_SEED),
            speed=SpeedEstimate.from_dict(a[_SPEED]) if _SPEED in a else None,
            quality=QualityEstimate.from_dict(a[_QUALITY]) if _QUALITY in a else None,
            pruned=Pruned.read(a.get(_PRUNED)), pruned_below=a.get(_PRUNED_BELOW),
            duplicate_of=a.get(_DUPLICATE_OF), failure=failure, fail_detail=detail,
            invalid=invalid, seconds=a.get(_SECONDS) or {}, queued_after=a.get(_QUEUED_AFTER))

    # -- writing, piece by piece, onto a running optuna.Trial ----------------------------------

    @staticmethod
    def write_claim(trial, *, config: dict, canonical: str, worker: dict,
                    sampler_seed: int | None, queued_after: int | None = None) -> None:
        """What a trial runs and who runs it: written first, read by other workers' dedup."""
        trial.set_user_attr(_CONFIG, config)
        if queued_after is not None:  # before the key: others order it by this once it claims
            trial.set_user_attr(_QUEUED_AFTER, queued_after)
        trial.set_user_attr(_CANONICAL, canonical)
        trial.set_user_attr(_WORKER, worker)
        if sampler_seed is not None:
            trial.set_user_attr(_SEED, sampler_seed)

    @staticmethod
    def write_result(trial, *, speed: SpeedEstimate | None, quality: QualityEstimate | None,
                     pruned: Pruned | None, seconds: dict, goal: Goal,
                     pruned_below: float | None = None) -> None:
        TrialRecord._write_numbers(trial, speed, quality, pruned, pruned_below, goal)
        trial.set_user_attr(_SECONDS, seconds)

    @staticmethod
    def _write_numbers(trial, speed: SpeedEstimate | None, quality: QualityEstimate | None,
                       pruned: Pruned | None, pruned_below: float | None, goal: Goal) -> None:
        if speed is not None:
            trial.set_user_attr(_SPEED, speed.as_dict())
        if quality is not None:
            trial.set_user_attr(_QUALITY, quality.as_dict())
            trial.set_constraint("loss_budget", quality.constraint(goal))
        if pruned is not None:
            trial.set_user_attr(_PRUNED, Pruned(pruned).value)
        if pruned_below is not None:
            trial.set_user_attr(_PRUNED_BELOW, pruned_below)

    @staticmethod
    def write_failure(trial, failure: Failure, *, detail: str | None = None,
                      invalid: Invalid | None = None) -> None:
        """Why it fails: the code, and its own message where it has one (an exception's; the
        others are rendered from the code). `invalid`: when the configuration was found
        invalid (Failure.INVALID, IDENTICAL)."""
        trial.set_user_attr(_FAILURE, Failure(failure).value)
        if detail is not None:
            trial.set_user_attr(_FAIL_REASON, detail)
        if invalid is not None:
            trial.set_user_attr(_INVALID, Invalid(invalid).value)

    @staticmethod
    def write_copy(trial, earlier: TrialRecord, goal: Goal) -> None:
        """Answer a repeated configuration with an earlier trial's numbers."""
        trial.set_user_attr(_DUPLICATE_OF, earlier.number)
        TrialRecord._write_numbers(trial, earlier.speed, earlier.quality, earlier.pruned,
                                   earlier.pruned_below, goal)

    # -- reading ---------------------------------------------------------------------------

    @property
    def original(self) -> bool:
        return self.duplicate_of is None

    @property
    def complete(self) -> bool:
        return self.state == TrialStatus.COMPLETE and self.speed is not None \
            and self.quality is not None

    def feasible(self, goal: Goal) -> bool:
        return self.complete and self.quality.within(goal)

    @property
    def answered(self) -> bool:
        """Its configuration needs no second evaluation: scored, pruned, found invalid, or
        crashed (`crashed`)."""
        return self.canonical is not None and (
            self.state in (TrialStatus.COMPLETE, TrialStatus.PRUNED)
            or (self.state == TrialStatus.FAIL and bool(self.invalid or self.crashed)))

    @property
    def crashed(self) -> bool:
        """Failed while evaluating (out of memory, an exception inside an accelerator): the
        same configuration at the same shapes and seeds fails again, so its record answers
        it, instead of an evaluation counted toward --trials each time it is proposed.
        Interrupted, orphaned and surplus trials did not crash."""
        return self.state == TrialStatus.FAIL and self.failure == Failure.CRASHED

    def settles(self, floor: float | None) -> bool:
        """Whether it answers its configuration in a run whose floor (the speedup another
        combo's confirmed answer set, None without one) is `floor`. A configuration pruned
        under a higher floor than this run's was never measured against this run's question:
        it is evaluated again."""
        if self.pruned == Pruned.FLOOR:
            return self.answered and floor is not None and floor >= self.pruned_below
        return self.answered

    @property
    def finished(self) -> bool:
        """It has ended (COMPLETE, PRUNED or FAIL): nothing will change its numbers."""
        return self.state.is_finished()

    @property
    def evaluated(self) -> bool:

        """It ran the pipeline, so it counts toward --trials (repeats and configurations
        rejected before any generation are free)."""
        if not self.original:
            return False
        if self.state in (TrialStatus.COMPLETE, TrialStatus.PRUNED):
            return True
        if self.state != TrialStatus.FAIL or self.failure is None or not self.failure.counted:
            return False
        return self.invalid != Invalid.CHECKED


def trial_records(study_or_trials) -> list[TrialRecord]:
    trials = study_or_trials.get_trials(deepcopy=False) \
        if hasattr(study_or_trials, "get_trials") else study_or_trials
    return [TrialRecord.from_trial(t) for t in trials]


@dataclass(frozen=True)
class Baseline:
    """The plain pipeline's quality reference: one per study, reused when it resumes."""

    clip_scores: tuple[float, ...]
    measured_at: str

    @property
    def clip_score(self) -> float:
        return sum(self.clip_scores) / len(self.clip_scores) if self.clip_scores else 0.0


@dataclass(frozen=True)
class PlainLatency:
    """A plain latency a worker measured (one entry per worker and run)."""

    latency: float
    spread: float
    at: str
    worker: dict
    threads: int | None = None  # torch threads, on CPU


@dataclass(frozen=True)
class Confirmation:
    """The speedups of a study's candidates measured again against each other, interleaved
    with plain runs (see tuner/search/confirm.py). A study keeps its latest race: its speeds
    are those of the trials that ran in it, measured at the same time, and nothing else."""

    race: str  # one id per race: studies confirmed in the same race share it
    at: str
    speeds: dict[int, SpeedEstimate]  # trial number -> confirmed speed
    baseline_latency: float  # median of the race's plain runs
    rounds: int
    candidates: tuple[int, ...] = ()  # every trial that entered the race
    # Races written before `judged` was kept: the study's highest trial number when the race
    # began (in any state, running ones too), and speeds merged from earlier races.
    last_trial: int | None = None
    # The study's trials that were finished when the race began: the race judged them (raced,
    # or left out as unable to change the answer). None in races written before it was kept.
    judged: frozenset[int] | None = None

    def before(self, trial: int) -> bool:
        """Whether the race judged trial number `trial`: it was finished when the race began.
        A race written without `judged` judged every trial numbered up to its `last_trial`."""
        if self.judged is not None:
            return trial in self.judged
        return self.last_trial is None or trial <= self.last_trial

    def as_dict(self) -> dict:
        data = {"race": self.race, "at": self.at, "baseline_latency": self.baseline_latency,
                "rounds": self.rounds, "candidates": list(self.candidates),
                "last_trial": self.last_trial,
                "speeds": {str(n): s.as_dict() for n, s in self.speeds.items()}}
        if self.judged is not None:
            data["judged"] = sorted(self.judged)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Confirmation:
        judged = data.get("judged")
        return cls(data["race"], data["at"],
                   {int(n): SpeedEstimate.from_dict(s) for n, s in data["speeds"].items()},
                   data["baseline_latency"], data["rounds"], tuple(data.get("candidates", ())),
                   data.get("last_trial"), frozenset(judged) if judged is not None else None)


@dataclass(frozen=True)
class HeldOut:
    """A chosen configuration's quality measured again, after the search, on images it was
    not selected on (evaluator.held_out_quality): the answer's loss."""

    quality: QualityEstimate
    seeds: tuple[int, int]  # the per-image seeds, first and last
    at: str

    def as_dict(self) -> dict:
        return {"quality": self.quality.as_dict(), "seeds": list(self.seeds), "at": self.at}

    @classmethod
    def from_dict(cls, data: dict) -> HeldOut:
        return cls(QualityEstimate.from_dict(data["quality"]), tuple(data["seeds"]),
                   data["at"])


@dataclass(frozen=True)
class RunMark:
    """Where one `tuner run` process is in its work: written on every study it has worked on,
    whenever its phase changes, so that a reader can tell a finished run from an interrupted
    one and from one still going (status.py). A run that ends cleanly writes ENDED; one
    stopped by a signal writes the signal's name (`stopped`) and the trial it re-queued; one
    killed writes nothing more, and its process is gone."""

    worker: dict  # host and pid
    started: str  # when the process began its search: with the worker, the mark's identity
    combos: tuple[str, ...]  # the run's combos, in the order it searches them
    trials: int  # its --trials
    phase: str  # one of PHASES
    combo: str | None = None  # the combo searched or raced (SEARCH, RACE, RACED)
    at: str = ""
    stopped: str | None = None  # the signal that stopped it: SIGINT or SIGTERM
    requeued: int | None = None  # the trial that was running then, queued to run again

    @property
    def key(self) -> str:
        return f"{_RUN_PREFIX}{self.worker['host']}:{self.worker['pid']}:{self.started}"

    def as_dict(self) -> dict:
        data = asdict(self)
        data["combos"] = list(self.combos)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> RunMark:
        mark = cls(**{**data, "combos": tuple(data["combos"])})
        if mark.phase not in PHASES:
            raise ValueError(f"unknown run phase {mark.phase!r}")
        return mark


@dataclass(frozen=True)
class StudyRecord:
    """A study's context: what it measures, for what goal, and what was measured once."""

    name: str
    setting: Setting
    goal: Goal
    combo: str
    baseline: Baseline | None = None
    distinct_points: int | None = None
    device: str = ""
    versions: dict = field(default_factory=dict)
    prompts: tuple[str, ...] = ()
    plain_latencies: tuple[PlainLatency, ...] = ()
    confirmation: Confirmation | None = None
    held_out: dict[int, HeldOut] = field(default_factory=dict)  # trial number -> its loss again
    runs: tuple[RunMark, ...] = ()  # the latest mark of each process that worked on it

    @staticmethod
    def is_tuner_study(user_attrs: dict) -> bool:
        return isinstance(user_attrs.get(_SETTING), dict) and \
            isinstance(user_attrs.get(_GOAL), dict) and bool(user_attrs.get(_COMBO))

    @classmethod
    def from_attrs(cls, name: str, a: dict) -> StudyRecord:
        base = a.get(_BASELINE)
        plain = sorted((PlainLatency(**v) for k, v in a.items() if k.startswith(_PLAIN_PREFIX)),
                       key=lambda p: p.at)
        return cls(
            name=name, setting=Setting.from_dict(a[_SETTING]), goal=Goal.from_dict(a[_GOAL]),
            combo=a[_COMBO],
            baseline=Baseline(tuple(base["clip_scores"]), base["measured_at"]) if base else None,
            distinct_points=a.get(_POINTS), device=a.get(_DEVICE, ""),
            versions=a.get(_VERSIONS) or {}, prompts=tuple(a.get(_PROMPTS) or ()),
            plain_latencies=tuple(plain),
            confirmation=Confirmation.from_dict(a[_CONFIRMATION]) if a.get(_CONFIRMATION)
            else None,
            held_out={int(k[len(_HELD_OUT_PREFIX):]): HeldOut.from_dict(v)
                      for k, v in a.items() if k.startswith(_HELD_OUT_PREFIX)},
            runs=tuple(sorted((RunMark.from_dict(v) for k, v in a.items()
                               if k.startswith(_RUN_PREFIX)), key=lambda m: m.at)))

    @classmethod
    def of(cls, study) -> StudyRecord:
        """From an optuna.Study or FrozenStudy."""
        return cls.from_attrs(study.study_name, study.user_attrs)

    # -- writing ---------------------------------------------------------------------------

    @staticmethod
    def write_identity(study, *, setting: Setting, goal: Goal, combo: str,
                       prompts: list[str]) -> None:
        """Once, when the study is created."""
        study.set_user_attr(_SETTING, setting.as_dict())
        study.set_user_attr(_GOAL, goal.as_dict())
        study.set_user_attr(_COMBO, combo)
        study.set_user_attr(_PROMPTS, list(prompts))

    @staticmethod
    def has_identity(study) -> bool:
        return _SETTING in study.user_attrs

    @staticmethod
    def write_context(study, *, device: str, versions: dict, distinct_points: int) -> None:
        study.set_user_attr(_DEVICE, device)
        study.set_user_attr(_VERSIONS, versions)
        study.set_user_attr(_POINTS, distinct_points)

    @staticmethod
    def write_baseline(study, baseline: Baseline) -> None:
        """The first stored (by any worker) stays the study's quality reference."""
        if _BASELINE not in study.user_attrs:
            study.set_user_attr(_BASELINE, {"clip_scores": list(baseline.clip_scores),
                                            "measured_at": baseline.measured_at})

    @staticmethod
    def write_plain_latency(study, entry: PlainLatency) -> None:
        worker = entry.worker
        study.set_user_attr(f"{_PLAIN_PREFIX}{worker['host']}:{worker['pid']}:{entry.at}",
                            asdict(entry))

    @staticmethod
    def write_confirmation(study, confirmation: Confirmation) -> None:
        study.set_user_attr(_CONFIRMATION, confirmation.as_dict())

    @staticmethod
    def write_held_out(study, trial: int, held_out: HeldOut) -> None:
        study.set_user_attr(f"{_HELD_OUT_PREFIX}{trial}", held_out.as_dict())

    @staticmethod
    def write_run(study, mark: RunMark) -> None:
        """A process's latest mark (one key per process: it replaces the previous one)."""
        study.set_user_attr(mark.key, mark.as_dict())

__all__ = ["ENDED", "HELD_OUT", "OVERALL", "PHASES", "RACE", "RACED", "SEARCH", "Baseline",
           "Confirmation", "Failure", "HeldOut", "Invalid", "PlainLatency", "Pruned",
           "QualityEstimate", "RunMark", "SpeedEstimate", "StudyRecord", "TrialRecord",
           "TrialStatus", "trial_records"]
