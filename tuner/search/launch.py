"""Putting a search together: load once, measure the baseline, work on the studies, answer.

With several workers the launching process loads nothing: it starts one worker process per GPU
(each measures its own baseline on its own GPU and works on the shared studies), shows the
progress it reads from the storage, and writes the answer once they are done.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from tqdm.auto import tqdm

from ..evaluator import Setting
from ..presets import RANDOM_WEIGHTS_NOTE, is_preset
from . import runner
from .studies import (Goal, device_name, finished_count, latest_baseline_latency, open_storage,
                      storage_url, study_name)


@dataclass
class RunConfig:
    pipe: str = "SD1.5"
    sched: str = "DDIM"
    steps: int = 50
    batch_size: int = 4
    num_samples: int = 32
    seed: int = 42
    goal: Goal = field(default_factory=Goal)
    combos: tuple[str, ...] = ()
    trials: int = 200
    sampler: str = "tpe"
    studies: str = "studies"
    storage: str | None = None  # overrides studies
    output: str = "search_params.json"
    device: str = "auto"
    clip_model: str = "auto"
    prompts: str | None = None
    height: int | None = None
    width: int | None = None
    timing_pairs: int = 4
    heartbeat: int = 10
    stop_when_met: bool = False
    progress: bool = True
    workers: int = 1
    worker: int | None = None  # index of this process among several workers
    argv: tuple[str, ...] = ()  # the command line, to start workers and print the resume command
    artifacts: bool = True  # sample images as Optuna artifacts (see tuner.artifacts)
    artifacts_dir: str | None = None  # default: <studies>/artifacts; none with a storage URL

    @property
    def storage_url(self) -> str:
        return self.storage or storage_url(self.studies)

    def plan(self) -> runner.SearchPlan:
        return runner.SearchPlan(self.combos, self.trials, self.sampler, self.seed,
                                 self.stop_when_met, self.progress and self.worker is None,
                                 worker_index=self.worker or 0)

    def setting(self, native: tuple[int, int], device: str) -> Setting:
        return Setting(self.pipe, self.sched, self.steps, self.height or native[0],
                       self.width or native[1], self.batch_size, self.num_samples, self.seed,
                       device=device)

    @property
    def artifact_dir(self) -> Path | None:
        from ..artifacts import artifact_dir

        return artifact_dir(studies=self.studies, storage=self.storage,
                            explicit=self.artifacts_dir, enabled=self.artifacts)

    def resume_command(self) -> str:
        return shlex.join(["tuner", *self.argv])


def _say(config: RunConfig, message: str) -> None:
    if config.progress and config.worker is None:
        print(message, file=sys.stderr)


def _storage(config: RunConfig):
    if config.storage is None:
        Path(config.studies).mkdir(parents=True, exist_ok=True)
    return open_storage(config.storage_url, heartbeat=config.heartbeat)


def run(config: RunConfig) -> int:
    """`tuner run` in this process (alone, or as one of several workers)."""
    from .. import metrics, pipelines, prompts
    from ..evaluator import Evaluator, TimingPlan

    # A shared database is reached first: if it cannot be, say so before minutes of work.
    storage = _storage(config) if config.storage else None
    pool = prompts.load_prompts(config.prompts) if config.prompts \
        else list(prompts.BUILTIN_PROMPTS)
    chosen = prompts.choose_prompts(pool, config.num_samples, config.seed)
    device = pipelines.resolve_device(config.device)
    _say(config, f"loading {config.pipe} on {device} ...")
    pipe = pipelines.load_pipeline(config.pipe, device=device)
    pipelines.set_scheduler(pipe, config.sched)
    setting = config.setting(pipelines.native_size(pipe), device_name(device))
    clip_name = metrics.default_clip_model(config.pipe) if config.clip_model == "auto" \
        else config.clip_model
    scorer = metrics.load_clip_scorer(clip_name, device=device,
                                      dtype=pipelines.default_dtype(device))
    evaluator = Evaluator(pipe, setting, chosen, scorer, metric=config.goal.metric,
                          timing=TimingPlan(pairs=config.timing_pairs))
    _say(config, f"measuring the plain pipeline ({setting.key}) ...")
    base = evaluator.measure_baseline()
    _say(config, f"baseline: {base.latency.median:.3f}s per batch "
                 f"(spread {base.latency.spread:.0%}), CLIP score {base.clip_score:.2f}")
    storage = storage or _storage(config)
    try:
        required = runner.run_search(evaluator, storage, config.goal, config.plan(),
                                     on_evaluation=_uploader(config, base))
    except KeyboardInterrupt:
        if config.worker is None:
            _print_resume(config)
        return 130
    if config.worker is not None:
        return 0
    return _answer(config, storage, setting, required)


def _uploader(config: RunConfig, base):
    """The callback that stores each evaluated trial's sample images, or None."""
    from ..artifacts import SampleUploader, open_store

    folder = config.artifact_dir
    if folder is None:
        return None
    try:
        store = open_store(folder)
    except OSError as err:
        print(f"tuner: warning: no sample images: cannot create {str(folder)!r}: "
              f"{err.strerror or err}", file=sys.stderr)
        return None
    return SampleUploader(store, base.images)


def _answer(config: RunConfig, storage, setting: Setting, required: float | None) -> int:
    outcome = runner.summarize(storage, setting, config.goal, required)
    print(runner.table(outcome))
    runner.save(outcome, setting, config.output)
    print(f"\nwrote {config.output}; studies in {config.storage_url}")
    if is_preset(config.pipe):
        print(f"note: {RANDOM_WEIGHTS_NOTE}")
    return 0


def _print_resume(config: RunConfig) -> None:
    print(f"\ninterrupted: the running trial was marked failed and is queued to run again.\n"
          f"Resume with:\n  {config.resume_command()}", file=sys.stderr)


# -- several workers ---------------------------------------------------------------------------


def worker_devices(config: RunConfig) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each worker (None: leave the environment as it is)."""
    import torch

    from ..pipelines import PipelineError, resolve_device

    device = resolve_device(config.device)
    if device.type != "cuda":
        return [None] * config.workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    if config.workers > len(ids):
        raise PipelineError(f"--workers {config.workers} needs as many GPUs; "
                            f"{len(ids)} visible")
    return ids[:config.workers]


def run_workers(config: RunConfig) -> int:
    """Start one worker per GPU on the shared studies; wait; answer."""
    from ..pipelines import native_size_of, resolve_device

    devices = worker_devices(config)
    setting = config.setting(native_size_of(config.pipe),
                             device_name(resolve_device(config.device)))
    storage = _storage(config)  # created here once, so workers don't race to create tables
    threads = str(max(1, (os.cpu_count() or 1) // config.workers))
    procs = []
    for index, device in enumerate(devices):
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", threads)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        # Their own session: a Ctrl-C reaches them once, forwarded by this process.
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tuner", *config.argv, "--worker", str(index)], env=env,
            start_new_session=True))
    _say(config, f"started {len(procs)} workers on {config.storage_url}")
    try:
        _follow(config, storage, setting, procs)
    except BaseException as err:  # Ctrl-C, or anything else: the workers stop cleanly too
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            proc.wait()
        if isinstance(err, KeyboardInterrupt):
            _print_resume(config)
            return 130
        raise
    failed = [p.returncode for p in procs if p.returncode != 0]
    if failed:
        print(f"tuner: error: {len(failed)} of {len(procs)} workers failed "
              f"(exit codes {failed}); rerun to resume", file=sys.stderr)
        return 1
    studies = [optuna.load_study(study_name=study_name(setting, combo, config.goal),
                                 storage=storage) for combo in config.combos]
    required = config.goal.required_speedup(latest_baseline_latency(studies))
    return _answer(config, storage, setting, required)


def _follow(config: RunConfig, storage, setting: Setting, procs) -> None:
    """A progress bar over all combos' finished trials, read from the storage."""
    total = config.trials * len(config.combos)
    studies: dict[str, optuna.Study] = {}
    with tqdm(total=total, unit="trial", file=sys.stderr, disable=not config.progress,
              dynamic_ncols=True) as bar:
        while any(p.poll() is None for p in procs):
            for combo in config.combos:
                if combo not in studies:
                    name = study_name(setting, combo, config.goal)
                    with contextlib.suppress(KeyError):  # the workers have not made it yet
                        studies[combo] = optuna.load_study(study_name=name, storage=storage)
            bar.n = sum(min(finished_count(s.get_trials(deepcopy=False)), config.trials)
                        for s in studies.values())
            bar.refresh()
            time.sleep(1.0)


def launch(config: RunConfig) -> int:
    return run_workers(config) if config.workers > 1 and config.worker is None else run(config)
