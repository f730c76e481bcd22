"""`tuner run`: one study per combo on one loaded pipeline, resumable, then the answers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from ..accelerators import COMBOS, grid_size
from ..evaluator import Evaluator, Setting
from . import results
from .objective import Objective, TrialFailed
from .selection import Choice, choose, fastest_feasible, overall
from .space import distinct_points, make_sampler
from .studies import (BASELINE_LATENCY, CANONICAL, CONFIG, DUPLICATE_OF, FAIL_REASON, SURPLUS,
                      WORKER, Goal, answered, device_name, finished_count, open_study,
                      recover_orphans, study_name, this_worker, versions)


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


def _answered(trials) -> set[str]:
    """Canonical configurations already answered (scored, or found invalid)."""
    return {t.user_attrs[CANONICAL] for t in trials if answered(t)}


def _best_label(trials) -> str:
    best = fastest_feasible(trials)
    if best is None:
        return "no feasible trial yet"
    return f"best {best.user_attrs['speedup']:.2f}x (loss {best.user_attrs['loss']:.2%})"


def _others_running(trials) -> int:
    me = this_worker()
    return sum(1 for t in trials
               if t.state == TrialState.RUNNING and t.user_attrs.get(WORKER) != me)


def _sampler_seed(storage, name: str, plan: SearchPlan) -> int:
    if plan.sampler == "grid":  # the grid's order comes from the seed: it must stay the same
        return plan.seed
    # A resumed study, or another worker, must not replay the same random draws.
    try:
        done = storage.get_n_trials(storage.get_study_id_from_name(name))
    except KeyError:
        done = 0
    return plan.seed + done + 7919 * plan.worker_index


def run_combo(evaluator: Evaluator, storage, combo: str, goal: Goal, plan: SearchPlan, *,
              required: float | None, on_evaluation: Callable | None = None) -> optuna.Study:
    """Work on one combo's study until its budget is used, its space exhausted, or (with
    stop_when_met) the requirement met. Several processes may do this at once."""
    setting = evaluator.setting
    name = study_name(setting, combo, goal)
    sampler = make_sampler(plan.sampler, combo, seed=_sampler_seed(storage, name, plan))
    study = open_study(storage, setting, combo, goal, sampler)
    _record_context(study, evaluator)
    points = distinct_points(evaluator.pipe, combo)
    study.set_user_attr("distinct_points", points)

    objective = Objective(evaluator, combo, goal, budget=plan.trials, on_evaluation=on_evaluation)
    bar = tqdm(total=plan.trials, desc=combo, unit="trial", file=sys.stderr,
               disable=not plan.progress, dynamic_ncols=True)

    def report_failure(_, trial: FrozenTrial) -> None:
        reason = trial.user_attrs.get(FAIL_REASON)
        if trial.state == TrialState.FAIL and reason != SURPLUS and not bar.disable:
            bar.write(f"  {combo} trial {trial.number} "
                      f"{config_text(trial.user_attrs.get(CONFIG, {}))}: {reason or 'failed'}",
                      file=sys.stderr)

    with bar:
        while True:
            recover_orphans(study)
            trials = study.get_trials(deepcopy=False)
            done = finished_count(trials)
            bar.n = min(done, plan.trials)
            if not bar.disable:
                bar.set_postfix_str(_best_label(trials))
            if done + _others_running(trials) >= plan.trials:
                break
            if len(_answered(trials)) >= points:
                break
            if plan.stop_when_met and required is not None and choose(trials, required).met:
                break
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False,
                           callbacks=[report_failure])
    return study


def _record_context(study: optuna.Study, evaluator: Evaluator) -> None:
    """Device, versions and baselines on the study; reuse the study's quality baseline."""
    base = evaluator.baseline
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    worker = this_worker()
    study.set_user_attr("device", device_name(evaluator.pipe.device))
    study.set_user_attr("versions", versions())
    if "baseline" not in study.user_attrs:
        study.set_user_attr("baseline", {**base.summary(), "measured_at": now})
    # One quality reference for the whole study: the first stored (by any worker) wins.
    base.clip_score = study.user_attrs["baseline"]["clip_score"]
    study.set_user_attr(f"{BASELINE_LATENCY}{worker['host']}:{worker['pid']}:{now}",
                        {"latency": base.latency.median, "spread": base.latency.spread,
                         "at": now, "worker": worker})


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
        evaluated = sum(1 for t in trials if answered(t) and DUPLICATE_OF not in t.user_attrs)
        outcome.combos.append(ComboOutcome(
            combo, study, choose(trials, required), finished_count(trials), evaluated,
            len(_answered(trials)) >= _space_size(study, combo)))
    index, best = overall([c.choice for c in outcome.combos], required)
    outcome.chosen = outcome.combos[index] if index is not None else None
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
                     f"{a['loss']:>7.2%}  {config_text(a['config'])}{note}")
    lines.append("")
    budget = f"{outcome.goal.metric} loss <= {outcome.goal.loss_budget:.1%}"
    if outcome.chosen is None:
        lines.append(f"No configuration keeps {budget}.")
    else:
        a = outcome.chosen.choice.trial.user_attrs
        answer = (f"{outcome.chosen.combo} {config_text(a['config'])}: {a['speedup']:.2f}x, "
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


def config_text(config: dict) -> str:
    """`deepcache(cache_interval=3, cache_branch_id=0) tome(...)`"""
    return " ".join(f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"
                    for name, params in config.items())


__all__ = ["ComboOutcome", "RunOutcome", "SearchPlan", "config_text", "run_combo", "run_search",
           "save", "summarize", "table"]
