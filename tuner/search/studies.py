"""Where studies live and what they are called: one Optuna study per (setting, combo, goal)."""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import optuna
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ..evaluator import Setting
from ..messages import described

DB_NAME = "tuner.db"

# Attribute names on trials.
CONFIG, CANONICAL, FAIL_REASON, DUPLICATE_OF, INVALID, WORKER = (
    "config", "canonical", "fail_reason", "duplicate_of", "invalid", "worker")
BASELINE_LATENCY = "baseline_latency@"  # study attribute prefix; one key per worker


class StudiesError(ValueError):
    """The studies cannot be found or opened; one line."""
PACKAGES = ("tuner", "torch", "diffusers", "transformers", "DeepCache", "tomesd", "tgate", "optuna")


@dataclass(frozen=True)
class Goal:
    """What the search is for.

    With no requirement: maximise speedup and minimise loss (a Pareto front) under the loss
    budget, and pick the fastest feasible trial. With a required speedup (or latency, turned
    into a speedup against the measured baseline): maximise speedup under the budget, and pick
    the feasible trial that reaches the requirement with the lowest loss.
    """

    loss_budget: float = 0.02
    metric: str = "clip"
    req_speedup: float | None = None
    req_time: float | None = None

    @property
    def mode(self) -> str:
        return "max_speedup" if self.req_speedup is None and self.req_time is None \
            else "req_speedup"

    @property
    def multi_objective(self) -> bool:
        return self.mode == "max_speedup"

    @property
    def loss_name(self) -> str:
        return f"{self.metric}_loss"

    def required_speedup(self, baseline_latency: float | None) -> float | None:
        if self.req_speedup is not None:
            return self.req_speedup
        if self.req_time is not None and baseline_latency:
            return baseline_latency / self.req_time
        return None

    def as_dict(self) -> dict:
        return asdict(self)


def study_name(setting: Setting, combo: str, goal: Goal) -> str:
    """Readable in optuna-dashboard; every part that changes the measurements is in it."""
    objective = "speedup x loss" if goal.multi_objective else "speedup"
    return " | ".join(filter(None, [
        setting.pipe, setting.scheduler, f"{setting.steps} steps",
        f"{setting.height}x{setting.width}", f"batch {setting.batch_size}",
        f"{setting.num_samples} samples", f"seed {setting.seed}", setting.device,
        f"{goal.metric} loss <= {goal.loss_budget:g}", combo, objective,
    ]))


def check_storage_url(url: str) -> None:
    """Raise ValueError (one line) unless `url` is a database URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        raise ValueError(f"--storage {url!r} is not a database URL "
                         f"(e.g. postgresql://user@host/db or sqlite:///path.db)") from None


def storage_url(studies: str | Path) -> str:
    return f"sqlite:///{Path(studies).resolve() / DB_NAME}"


def open_storage(url: str, *, heartbeat: int = 10) -> RDBStorage:
    """An RDB storage whose running trials beat every `heartbeat` seconds; a trial silent for
    three beats (its worker was killed) is failed and re-queued with the same parameters."""
    import warnings

    sqlite = url.startswith("sqlite")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else {},
                heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
        if sqlite:  # readers (the dashboard, other workers) no longer block the writer
            with storage.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    except Exception as err:  # no driver, a server that does not answer, a broken file
        raise StudiesError(f"cannot open the studies at {url}: {described(err)}") from None
    return storage


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def open_study(storage, setting: Setting, combo: str, goal: Goal, sampler) -> optuna.Study:
    name = study_name(setting, combo, goal)
    directions = ["maximize", "minimize"] if goal.multi_objective else ["maximize"]
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                directions=directions, load_if_exists=True)
    if "setting" not in study.user_attrs:
        study.set_metric_names(["speedup", goal.loss_name] if goal.multi_objective
                               else ["speedup"])
        study.set_user_attr("setting", setting.as_dict())
        study.set_user_attr("combo", combo)
        study.set_user_attr("goal", goal.as_dict())
    return study


def baseline_latencies(study: optuna.Study) -> list[dict]:
    """Every baseline latency measured for this study, one entry per worker (and run)."""
    return sorted((v for k, v in study.user_attrs.items() if k.startswith(BASELINE_LATENCY)),
                  key=lambda entry: entry["at"])


def latest_baseline_latency(studies) -> float | None:
    """The most recent baseline latency any worker recorded on these studies."""
    history = sorted((h for s in studies for h in baseline_latencies(s)), key=lambda h: h["at"])
    return history[-1]["latency"] if history else None


# -- counting trials ---------------------------------------------------------------------------

# Reasons for failed trials that do not use up the budget: the first two are re-run.
INTERRUPTED, ORPHANED, SURPLUS = "interrupted", "worker died", "surplus"
NOT_COUNTED = (INTERRUPTED, ORPHANED, SURPLUS)


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Finished trials count; those killed, interrupted or surplus do not."""
    if trial.state == TrialState.COMPLETE:
        return True
    return (trial.state == TrialState.FAIL and FAIL_REASON in trial.user_attrs
            and trial.user_attrs[FAIL_REASON] not in NOT_COUNTED)


def finished_count(trials) -> int:
    return sum(counts_toward_budget(t) for t in trials)


def answered(trial: FrozenTrial) -> bool:
    """Scored, or found invalid: its configuration needs no second evaluation."""
    return CANONICAL in trial.user_attrs and (
        trial.state == TrialState.COMPLETE
        or (trial.state == TrialState.FAIL and bool(trial.user_attrs.get(INVALID))))


def this_worker() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_orphans(study: optuna.Study) -> list[int]:
    """Fail and re-queue (same parameters) the running trials of dead workers.

    Workers on this host are checked by process id, at once; trials of other hosts' workers
    go stale through the storage's heartbeat instead.
    """
    optuna.storages.fail_stale_trials(study)
    me, recovered = this_worker(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER)
        if not worker or worker["host"] != me["host"] or worker["pid"] == me["pid"] \
                or _alive(worker["pid"]):
            continue
        storage = study._storage  # noqa: SLF001 - the public API has no way to fail a trial
        try:
            storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, ORPHANED)  # noqa: SLF001
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):  # noqa: SLF001
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        requeue(study, trial)
        recovered.append(trial.number)
    return recovered


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a re-run of `trial`'s parameters, marked as Optuna's heartbeat retries are."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        # The sampler's own marks (GridSampler's grid_id) go along, as in Optuna's retries.
        system_attrs={**trial.system_attrs,
                      "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                      "retry_history": history}))
