"""`tuner run`: one study per combo on one loaded pipeline, resumable, then the answers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from ..accelerators import COMBOS, grid_size
from ..evaluator import Evaluator, Setting
from . import results
from .objective import (CANONICAL, CONFIG, DUPLICATE_OF, FAIL_REASON, INVALID, WORKER, Objective,
                        TrialFailed)
from .selection import Choice, choose, fastest_feasible
from .space import distinct_points, make_sampler
from .studies import (SURPLUS, Goal, device_name, finished_count, open_study, recover_orphans,
                      study_name, this_worker, versions)


@dataclass
class SearchPlan:
    combos: Sequence[str]
    trials: int = 200
    sampler: str = "tpe"
    seed: int = 42
    stop_when_met: bool = False
    progress: bool = True
    worker_index: int = 0  # workers sharing a study draw different samples


@dataclass
class ComboOutcome:
    combo: str
    study: optuna.Study
    choice: Choice
    finished: int  # trials that count toward the budget
    evaluations: int  # pipeline evaluations in the study (repeats are answered without one)
    exhausted: bool  # every distinct configuration has been answered


@dataclass
class RunOutcome:
    goal: Goal
    required_speedup: float | None
    combos: list[ComboOutcome] = field(default_factory=list)
    chosen: ComboOutcome | None = None
    met: bool | None = None


def _answered(study: optuna.Study) -> set[str]:
    """Canonical configurations already answered (scored, or found invalid)."""
    return {t.user_attrs[CANONICAL] for t in study.get_trials(deepcopy=False)
            if CANONICAL in t.user_attrs
            and (t.state == TrialState.COMPLETE or t.user_attrs.get(INVALID))}


def _best_label(study: optuna.Study) -> str:
    best = fastest_feasible(study.get_trials(deepcopy=False))
    if best is None:
        return "no feasible trial yet"
    return f"best {best.user_attrs['speedup']:.2f}x (loss {best.user_attrs['loss']:.2%})"


def _others_running(study: optuna.Study) -> int:
    me = this_worker()
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.user_attrs.get(WORKER) != me)


def run_combo(evaluator: Evaluator, storage, combo: str, goal: Goal, plan: SearchPlan, *,
              required: float | None, on_evaluation: Callable | None = None) -> optuna.Study:
    """Work on one combo's study until its budget is used, its space exhausted, or (with
    stop_when_met) the requirement met. Several processes may do this at once."""
    setting = evaluator.setting
    name = study_name(setting, combo, goal)
    seed = plan.seed
    if plan.sampler != "grid":  # the grid's order comes from the seed: it must stay the same
        # A resumed study, or another worker, must not replay the same random draws.
        existing = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}
        seed += existing.get(name, 0) + 7919 * plan.worker_index
    sampler = make_sampler(plan.sampler, combo, seed=seed)
    study = open_study(storage, setting, combo, goal, sampler)
    _record_context(study, evaluator)
    points = distinct_points(evaluator.pipe, combo)
    study.set_user_attr("distinct_points", points)

    objective = Objective(evaluator, combo, goal, budget=plan.trials, on_evaluation=on_evaluation)
    bar = tqdm(total=plan.trials, initial=min(finished_count(study), plan.trials), desc=combo,
               unit="trial", file=sys.stderr, disable=not plan.progress, dynamic_ncols=True)
    with bar:
        while True:
            recover_orphans(study)
            done = finished_count(study)
            bar.n = min(done, plan.trials)
            bar.set_postfix_str(_best_label(study))
            if done + _others_running(study) >= plan.trials:
                break
            if len(_answered(study)) >= points:
                break
            if plan.stop_when_met and required is not None and \
                    choose(study.get_trials(deepcopy=False), required).met:
                break
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
            last = study.get_trials(deepcopy=False)[-1]
            reason = last.user_attrs.get(FAIL_REASON)
            if last.state == TrialState.FAIL and reason != SURPLUS:
                bar.write(f"  {combo} trial {last.number} {_params(last.user_attrs[CONFIG])}: "
                          f"{reason or 'failed'}")
    return study


def _record_context(study: optuna.Study, evaluator: Evaluator) -> None:
    """Device, versions and baselines on the study; reuse the study's quality baseline."""
    base = evaluator.baseline
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    study.set_user_attr("device", device_name(evaluator.pipe.device))
    study.set_user_attr("versions", versions())
    stored = study.user_attrs.get("baseline")
    if stored is None:
        study.set_user_attr("baseline", {**base.summary(), "measured_at": now})
    else:
        base.clip_score = stored["clip_score"]  # one quality reference for the whole study
    history = study.user_attrs.get("baseline_latency_history", [])
    study.set_user_attr("baseline_latency_history",
                        [*history, {"latency": base.latency.median,
                                    "spread": base.latency.spread, "at": now,
                                    "worker": this_worker()}])


def run_search(evaluator: Evaluator, storage, goal: Goal, plan: SearchPlan, *,
               on_evaluation: Callable | None = None) -> float | None:
    """Work on every combo's study in turn; return the required speedup (if any)."""
    base = evaluator.baseline or evaluator.measure_baseline()
    required = goal.required_speedup(base.latency.median)
    for combo in plan.combos:
        run_combo(evaluator, storage, combo, goal, plan, required=required,
                  on_evaluation=on_evaluation)
    return required


def summarize(storage, setting: Setting, goal: Goal, required: float | None) -> RunOutcome:
    """The answer per combo and overall, read back from every combo's study of this setting
    and goal (also those of earlier runs with other --combo choices)."""
    outcome = RunOutcome(goal, required)
    names = set(optuna.get_all_study_names(storage))
    for combo in COMBOS:
        name = study_name(setting, combo, goal)
        if name not in names:
            continue
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        evaluated = sum(1 for t in trials if CANONICAL in t.user_attrs
                        and DUPLICATE_OF not in t.user_attrs
                        and (t.state == TrialState.COMPLETE or t.user_attrs.get(INVALID)))
        outcome.combos.append(ComboOutcome(
            combo, study, choose(trials, required), finished_count(study), evaluated,
            len(_answered(study)) >= _space_size(study, combo)))
    best = choose([c.choice.trial for c in outcome.combos if c.choice.trial], required)
    outcome.chosen = next((c for c in outcome.combos if c.choice.trial is best.trial), None) \
        if best.trial else None
    outcome.met = best.met
    return outcome


def _space_size(study: optuna.Study, combo: str) -> int:
    return study.user_attrs.get("distinct_points", grid_size(combo))


def save(outcome: RunOutcome, setting: Setting, path) -> None:
    """Merge this run's answers into the results file."""

    def as_result(c: ComboOutcome | None):
        if c is None:
            return None
        return results.result(c.choice.trial, combo=c.combo, study=c.study.study_name,
                              baseline_clip=c.study.user_attrs["baseline"]["clip_score"])

    mode_entry = {
        "goal": outcome.goal.as_dict(), "required_speedup": outcome.required_speedup,
        "met": outcome.met, "chosen": as_result(outcome.chosen),
        "per_combo": {c.combo: as_result(c) for c in outcome.combos},
    }
    results.merge(path, setting.key, {"setting": setting.as_dict(), "device": setting.device},
                  outcome.goal.mode, mode_entry)


def table(outcome: RunOutcome) -> str:
    """The final table: one line per combo, and the answer."""
    lines = [f"{'combo':<22} {'trials':>6} {'runs':>5} {'speedup':>8} {'loss':>7}  params"]
    for c in outcome.combos:
        t = c.choice.trial
        note = " (space exhausted)" if c.exhausted else ""
        if t is None:
            lines.append(f"{c.combo:<22} {c.finished:>6} {c.evaluations:>5} "
                         f"{'-':>8} {'-':>7}  no feasible trial{note}")
            continue
        a = t.user_attrs
        lines.append(f"{c.combo:<22} {c.finished:>6} {c.evaluations:>5} {a['speedup']:>7.2f}x "
                     f"{a['loss']:>7.2%}  {_params(a['config'])}{note}")
    lines.append("")
    budget = f"{outcome.goal.metric} loss <= {outcome.goal.loss_budget:.1%}"
    if outcome.chosen is None:
        lines.append(f"No configuration keeps {budget}.")
    else:
        a = outcome.chosen.choice.trial.user_attrs
        answer = (f"{outcome.chosen.combo} {_params(a['config'])}: {a['speedup']:.2f}x, "
                  f"{a['loss']:.2%} {outcome.goal.metric} loss "
                  f"({a['baseline_latency']:.3f}s -> {a['latency']:.3f}s per batch)")
        if outcome.required_speedup is None:
            lines.append(f"Fastest within {budget}: {answer}")
        elif outcome.met:
            lines.append(f"Meets {outcome.required_speedup:.2f}x within {budget} with the "
                         f"lowest loss: {answer}")
        else:
            lines.append(f"Nothing reaches {outcome.required_speedup:.2f}x within {budget}; "
                         f"closest: {answer}")
    return "\n".join(lines)


def _params(config: dict) -> str:
    return " ".join(f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"
                    for name, params in config.items())


__all__ = ["ComboOutcome", "RunOutcome", "SearchPlan", "run_combo", "run_search", "save",
           "summarize", "table"]
