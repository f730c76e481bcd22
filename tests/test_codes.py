"""Codes, not sentences: a trial's state, why it was pruned or failed, and a goal's mode are
stored and compared as codes, and the sentences shown are rendered from them. Studies written
before the codes, which stored the sentences, still read: the same records, the same answer,
the same reasons."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tuner.answer import answer
from tuner.codes import Code
from tuner.record import (Confirmation, Failure, Invalid, Pruned, QualityEstimate,
                          SpeedEstimate, StudyRecord, TrialRecord, TrialStatus, trial_records)
from tuner.setting import Goal, Mode, Setting
from tuner.stats import Interval

SETTING = Setting(pipe="SD1.5", scheduler="DDIM", steps=50, height=512, width=512,
                  device="NVIDIA H100", clip_model="c", prompts="p")
GOAL = Goal(loss_budget=0.02)
CONFIG = {"deepcache": {"cache_interval": 3, "cache_branch_id": 0}}
CRASH = "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"
USELESS = "tome.max_downsample=1 reaches no attention layer of this pipeline"
IDENTICAL = "output is bit-identical to the plain pipeline's"  # as evaluator.py raised it


def speed(value: float) -> SpeedEstimate:
    return SpeedEstimate(Interval(value, value * 0.98, value * 1.02, 4), 1.5, 4)


def quality(loss: float, images: int = 32) -> QualityEstimate:
    interval = Interval(loss, loss - 0.004, loss + 0.004, images)
    return QualityEstimate("clip", interval, 30.0, interval, 30.0, 0.9, images)


# Every way a trial ends, as (Optuna state, speedup, loss, how it was stored before the codes:
# the attributes 9214cba's objective and workers wrote beside the claim, how it is stored now).
TRIALS = [
    (TrialState.COMPLETE, 2.0, 0.01, {}, {}),
    (TrialState.COMPLETE, 3.0, 0.05, {}, {}),  # infeasible
    (TrialState.PRUNED, 1.5, None, {"pruned": "too slow", "pruned_below": 2.0},
     {"pruned": Pruned.SLOW, "pruned_below": 2.0}),
    (TrialState.PRUNED, 1.2, None,
     {"pruned": "slower than another combo's answer", "pruned_below": 2.5},
     {"pruned": Pruned.FLOOR, "pruned_below": 2.5}),
    (TrialState.PRUNED, 2.8, 0.2, {"pruned": "loss over budget"}, {"pruned": Pruned.LOSS}),
    (TrialState.FAIL, None, None, {"fail_reason": "interrupted"},
     {"failure": Failure.INTERRUPTED}),
    (TrialState.FAIL, None, None, {"fail_reason": "worker died"}, {"failure": Failure.ORPHANED}),
    (TrialState.FAIL, None, None, {"fail_reason": "surplus"}, {"failure": Failure.SURPLUS}),
    (TrialState.FAIL, None, None, {"fail_reason": CRASH},
     {"failure": Failure.CRASHED, "detail": CRASH}),
    (TrialState.FAIL, None, None, {"fail_reason": USELESS, "invalid": "checked"},
     {"failure": Failure.INVALID, "detail": USELESS, "invalid": Invalid.CHECKED}),
    (TrialState.FAIL, None, None, {"fail_reason": IDENTICAL, "invalid": "generated"},
     {"failure": Failure.IDENTICAL, "invalid": Invalid.GENERATED}),
]
SENTENCES = ["too slow", "slower than another combo's answer", "loss over budget",
             "interrupted", "worker died", "surplus", CRASH, USELESS, IDENTICAL]


def _old_study(trials=TRIALS, *, duplicate: bool = True) -> optuna.Study:
    """A study as 9214cba wrote it: its record.py's keys, the sentences as the reasons."""
    study = optuna.create_study(study_name="deepcache", direction="maximize")
    study.set_user_attr("setting", SETTING.as_dict())
    study.set_user_attr("goal", {"loss_budget": 0.02, "metric": "clip", "req_speedup": None,
                                 "req_time": None, "loss_bound": "estimate"})
    study.set_user_attr("combo", "deepcache")
    study.set_user_attr("prompts", ["a prompt"])
    study.set_user_attr("device", "NVIDIA H100")
    study.set_user_attr("versions", {"tuner": "0.1"})
    study.set_user_attr("distinct_points", 16)
    study.set_user_attr("baseline", {"clip_scores": [30.0], "measured_at": "2026-11-30T10:00"})
    for number, (state, speedup, loss, old, _) in enumerate(trials):
        trial = study.ask()
        for key, value in (("config", CONFIG), ("canonical", f"k{number}"),
                           ("worker", {"host": "h", "pid": 1}), ("sampler_seed", 7)):
            trial.set_user_attr(key, value)
        if speedup is not None:  # 9214cba's SpeedEstimate.as_dict, without later fields
            s = speed(speedup)
            trial.set_user_attr("speed", {
                "speedup": {"value": s.speedup.value, "low": s.speedup.low,
                            "high": s.speedup.high, "n": 4},
                "baseline_latency": 1.5, "pairs": 4, "rejected": 0, "ratios": []})
            trial.set_user_attr("seconds", {"total": 1.0})
        if loss is not None:
            trial.set_user_attr("quality", quality(loss).as_dict())
        for key, value in old.items():
            trial.set_user_attr(key, value)
        _tell(study, trial, state, speedup)
    if duplicate:  # a repeat of trial 0, answered from it
        trial = study.ask()
        trial.set_user_attr("config", CONFIG)
        trial.set_user_attr("canonical", "k0")
        trial.set_user_attr("duplicate_of", 0)
        trial.set_user_attr("speed", study.trials[0].user_attrs["speed"])
        trial.set_user_attr("quality", study.trials[0].user_attrs["quality"])
        _tell(study, trial, TrialState.COMPLETE, 2.0)
    study.set_user_attr("confirmation", {  # 9214cba's Confirmation.as_dict: no `judged`
        "race": "r1", "at": "2026-11-30T11:00", "baseline_latency": 1.5, "rounds": 3,
        "candidates": [0], "last_trial": len(study.trials) - 1,
        "speeds": {"0": speed(2.1).as_dict()}})
    return study


def _new_study(trials=TRIALS, *, duplicate: bool = True) -> optuna.Study:
    """The same study written by this version, through record.py."""
    study = optuna.create_study(study_name="deepcache", direction="maximize")
    StudyRecord.write_identity(study, setting=SETTING, goal=GOAL, combo="deepcache",
                               prompts=["a prompt"])
    StudyRecord.write_context(study, device="NVIDIA H100", versions={"tuner": "0.1"},
                              distinct_points=16)
    study.set_user_attr("baseline", {"clip_scores": [30.0], "measured_at": "2026-11-30T10:00"})
    for number, (state, speedup, loss, _, new) in enumerate(trials):
        trial = study.ask()
        TrialRecord.write_claim(trial, config=CONFIG, canonical=f"k{number}",
                                worker={"host": "h", "pid": 1}, sampler_seed=7)
        if speedup is not None:
            TrialRecord.write_result(trial, speed=speed(speedup),
                                     quality=quality(loss) if loss is not None else None,
                                     pruned=new.get("pruned"), seconds={"total": 1.0},
                                     goal=GOAL, pruned_below=new.get("pruned_below"))
        if "failure" in new:
            TrialRecord.write_failure(trial, new["failure"], detail=new.get("detail"),
                                      invalid=new.get("invalid"))
        _tell(study, trial, state, speedup)
    if duplicate:
        trial = study.ask()
        TrialRecord.write_copy(trial, trial_records(study)[0], GOAL)
        trial.set_user_attr("config", CONFIG)
        trial.set_user_attr("canonical", "k0")
        _tell(study, trial, TrialState.COMPLETE, 2.0)
    StudyRecord.write_confirmation(study, Confirmation(
        "r1", "2026-11-30T11:00", {0: speed(2.1)}, 1.5, 3, (0,), len(study.trials) - 1))
    return study


def _tell(study, trial, state, speedup) -> None:
    if state == TrialState.COMPLETE:
        study.tell(trial, speedup)
    else:
        study.tell(trial, state=state)


def _answer(study: optuna.Study):
    return answer(SETTING, GOAL, [(StudyRecord.of(study), trial_records(study))])


def test_a_study_written_with_sentences_reads_as_one_written_with_codes():
    """A study written before the codes (9214cba's attributes, the sentences as reasons)
    gives the same records as the same study written now, the same answer, and the same
    reasons in words."""
    old, new = _old_study(), _new_study()
    old_records, new_records = trial_records(old), trial_records(new)
    assert old_records == new_records
    stopped = [r for r in old_records if r.pruned or r.failure]
    assert [r.pruned.text if r.pruned else r.fail_reason for r in stopped] == SENTENCES
    assert [r.state for r in old_records] == [TrialStatus(s.name) for s, *_ in TRIALS] + \
        [TrialStatus.COMPLETE]
    assert _answer(old).as_dict() == _answer(new).as_dict()
    found = _answer(old)
    (combo,) = found.combos
    # Evaluated: the two complete, the three pruned, the crash and the identical output (found
    # by generating); not the interrupted, orphaned, surplus, checked or repeated ones.
    assert (combo.evaluations, combo.pruned, combo.scored, combo.floor) == (7, 3, 3, 2.5)
    assert found.chosen.trial == 0 and found.chosen.confirmed == "r1"
    assert found.chosen.speedup == pytest.approx(2.1) and not found.identical
    assert found.summary().startswith("Fastest within clip loss <= 0.02: deepcache")
    by_number = {r.number: r for r in old_records}
    assert by_number[8].crashed and by_number[8].answered
    assert not by_number[5].answered and not by_number[7].evaluated
    assert by_number[3].settles(2.5) and not by_number[3].settles(2.0)


def test_what_is_stored_now_is_the_code_and_its_message_only_where_it_has_one():
    stored = [t.user_attrs for t in _new_study(duplicate=False).trials]
    assert [a.get("pruned") for a in stored[2:5]] == ["slow", "floor", "loss"]
    assert [a.get("failure") for a in stored[5:]] == [
        "interrupted", "orphaned", "surplus", "crashed", "invalid", "identical"]
    assert [a.get("fail_reason") for a in stored[5:]] == [None, None, None, CRASH, USELESS, None]
    assert [a.get("invalid") for a in stored[5:]] == [None] * 4 + ["checked", "generated"]


IDENTICAL_ONLY = [(TrialState.FAIL, None, None, {"fail_reason": IDENTICAL, "invalid": "generated"},
                   {"failure": Failure.IDENTICAL, "invalid": Invalid.GENERATED})] * 2


@pytest.mark.parametrize("make", [_old_study, _new_study], ids=["sentences", "codes"])
def test_nothing_to_accelerate_is_recognised_by_its_code(make):
    """Every configuration gave the plain pipeline's output: stored with sentences, that was
    the message of an invalid configuration; now it is its code."""
    found = _answer(make(IDENTICAL_ONLY, duplicate=False))
    assert found.identical and found.chosen is None
    assert found.summary().startswith("Every configuration tried gives output bit-identical")


def test_a_message_that_mentions_identical_output_is_not_the_code():
    """An invalid configuration whose own message happens to say "bit-identical" does not
    make the answer "nothing to accelerate": the code decides, not the words."""
    worded = [(TrialState.FAIL, None, None, {},
               {"failure": Failure.INVALID, "detail": f"tgate: {IDENTICAL}",
                "invalid": Invalid.GENERATED})] * 2
    found = _answer(_new_study(worded, duplicate=False))
    assert not found.identical
    assert found.summary().startswith("No configuration keeps")


def test_codes_equal_their_stored_values_and_refuse_unknown_ones():
    assert Goal().mode == "max_speedup" and Goal().mode is Mode.MAX_SPEEDUP
    assert Goal(req_time=0.5).mode is Mode.REQ_SPEEDUP
    assert f"{Pruned.SLOW}|{Failure.ORPHANED:>10}" == "slow|  orphaned"
    assert Pruned.read("too slow") is Pruned.SLOW and Pruned.read("slow") is Pruned.SLOW
    assert Failure.read("worker died") is Failure.ORPHANED and Pruned.read(None) is None
    assert issubclass(Failure, Code)
    with pytest.raises(ValueError, match="not a Pruned code"):
        Pruned.read("slowish")
    record = TrialRecord(0, "PRUNED", pruned="too slow")  # built by hand, from strings
    assert record.state is TrialStatus.PRUNED and record.pruned is Pruned.SLOW
