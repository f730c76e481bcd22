"""The options of `tuner run`, with their defaults, in one place.

The command line builds its parser's defaults from this class and turns the parsed arguments
into it (`RunOptions.from_args`); everything below the command line takes a `RunOptions`.
"""

from __future__ import annotations

import shlex
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .accelerators import ALL_COMBOS, STEPS, with_steps
from .setting import Goal, Setting
from .timing import TimingPolicy

_TIMING = TimingPolicy()


@dataclass(frozen=True)
class RunOptions:
    # the model and what is generated
    pipe: str = "SD1.5"
    sched: str = "auto"  # the first of the model's family's schedulers (`scheduler`)
    steps: int = 50
    batch_size: int = 4
    num_samples: int = 32
    seed: int = 42
    height: int | None = None  # None: the model's native size
    width: int | None = None
    prompts: str | None = None  # a captions file; None: the built-in prompts
    device: str = "auto"
    threads: int | None = None  # torch's CPU threads; None: measured (tuner.app)
    # the goal: its own fields (`--metric`, `--req-score-loss`, ...) are `Goal`'s, given by name
    goal: Goal = field(default_factory=Goal)
    clip_model: str = "auto"
    # the search
    combo: str = "all"
    # the scheduler and step count as knobs (accelerators/solver.py); None: held at sched/steps
    search_sched: str | None = None  # "all" or a comma list
    search_steps: str | None = None  # "auto" or "LO-HI"
    trials: int = 200  # evaluations per combo
    sampler: str = "tpe"
    sampler_seed: int | None = None
    patience: int | None = 40  # 0 or None: off (see `stop_after`)
    full_front: bool = False
    stop_when_met: bool = False
    timeout: float | None = None  # seconds of search, after which no trial starts; None: none
    # timing
    timing_pairs: int = _TIMING.min_pairs
    max_timing_pairs: int = _TIMING.max_pairs
    timing_precision: float = _TIMING.precision
    screening_precision: float = _TIMING.screening
    judge_steps: bool = _TIMING.steps  # False: each timed run judged whole (--judge-whole)
    # where things go
    studies: str = "studies"
    storage: str | None = None  # a database URL shared by several hosts, instead of studies
    output: str = "search_params.json"
    artifacts: bool = True  # sample images as Optuna artifacts (tuner.artifacts)
    artifacts_dir: str | None = None  # default: <studies>/artifacts; none with a storage URL
    # processes
    workers: int = 1
    worker: int | None = None  # this process's index among a launcher's workers
    heartbeat: int = 10
    progress: bool = True
    argv: tuple[str, ...] = field(default=(), compare=False)  # to start workers, to resume

    @classmethod
    def default(cls, name: str):
        """The default of a field, or of a field of the goal."""
        found = next((f for f in fields(cls) if f.name == name), None) or \
            next(f for f in fields(Goal) if f.name == name)
        return found.default if found.default is not MISSING else found.default_factory()

    @classmethod
    def from_args(cls, args, argv=()) -> RunOptions:
        """From parsed arguments whose destinations are named as these fields or the goal's."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        goal = Goal(**{f.name: getattr(args, f.name) for f in fields(Goal)
                       if hasattr(args, f.name)})
        return cls(**{**values, "goal": goal, "argv": tuple(argv)})

    @property
    def combos(self) -> tuple[str, ...]:
        """The combos searched: "all" is those of the model's family (the UNet combos when the
        family cannot be known without loading the model)."""
        if self.combo != "all":
            combos = (self.combo,)
        else:
            family = self.family
            combos = ALL_COMBOS if family is None else tuple(family.combos)
        if not self.searches_solver:
            return combos
        if self.combo == "all":  # the scheduler and steps alone, and beside every combo
            return with_steps(combos)
        return with_steps(combos)[-1:]  # the one combo asked for, with the knobs

    @property
    def searches_solver(self) -> bool:
        return self.search_sched is not None or self.search_steps is not None

    @property
    def solver_space(self):
        """The values of the scheduler and step-count knobs (solver.SolverSpace), or None when
        neither is searched. Raises ValueError (one line) for values that cannot be searched."""
        from .accelerators.solver import SolverSpace

        if not self.searches_solver:
            return None
        return SolverSpace(schedulers=self._searched_schedulers(),
                           steps=searched_steps(self.search_steps, self.steps))

    def _searched_schedulers(self) -> tuple[str, ...]:
        from .messages import PipelineError
        from .pipelines import family_scheduler, scheduler_name

        if self.search_sched is None:
            return (self.scheduler,)
        family = self.family
        if self.search_sched == "all":
            return tuple(family.schedulers) if family else ("DDIM", "DPM-Solver++",
                                                            "UniPCMultistepScheduler")
        names = [n.strip() for n in self.search_sched.split(",") if n.strip()]
        if not names:
            raise ValueError("--search-sched is empty; pass all or a comma list of schedulers")
        try:
            found = [family_scheduler(family, n) if family else scheduler_name(n)
                     for n in names]
        except PipelineError as err:
            raise ValueError(f"--search-sched: {err}") from None
        return tuple(dict.fromkeys(found))

    @property
    def family(self):
        """The model's pipeline family, known without loading it; None when unknown."""
        from .pipelines import family_named

        return family_named(self.pipe)

    @property
    def scheduler(self) -> str:
        """The scheduler's name: `sched`, or for "auto" the family's first (DDIM for SD)."""
        from .pipelines import family_scheduler

        family = self.family
        if family is None:
            return "DDIM" if self.sched == "auto" else self.sched
        return family_scheduler(family, self.sched)

    @property
    def stop_after(self) -> int | None:
        """The patience in effect: none for the grid sampler, which is exhaustive by design
        (BENCHMARKS.md, "Sampler", says why 40 for the others)."""
        return None if self.sampler == "grid" or not self.patience else self.patience

    @property
    def role(self):
        """What this process does in the run (search/roles.py): alone, a launcher of workers,
        or one of them."""
        from .search.roles import role_of

        return role_of(workers=self.workers, worker=self.worker)

    @property
    def timing(self) -> TimingPolicy:
        return TimingPolicy(min_pairs=self.timing_pairs,
                            max_pairs=max(self.max_timing_pairs, self.timing_pairs),
                            precision=self.timing_precision,
                            screening=max(self.screening_precision, self.timing_precision),
                            steps=self.judge_steps)

    @property
    def storage_url(self) -> str:
        from .search.studies import storage_url

        return self.storage or storage_url(self.studies)

    @property
    def artifact_dir(self) -> Path | None:
        from .artifacts import artifact_dir

        return artifact_dir(studies=self.studies, storage=self.storage,
                            explicit=self.artifacts_dir, enabled=self.artifacts)

    def setting(self, *, native: tuple[int, int], device: str, clip_model: str,
                prompts_id: str) -> Setting:
        return Setting(pipe=self.pipe, scheduler=self.scheduler, steps=self.steps,
                       height=self.height or native[0], width=self.width or native[1],
                       batch_size=self.batch_size, num_samples=self.num_samples,
                       seed=self.seed, device=device, clip_model=clip_model, prompts=prompts_id)

    def resume_command(self) -> str:
        return shlex.join(["tuner", *self.argv])


def searched_steps(text: str | None, steps: int) -> tuple[int, int]:
    """--search-steps: "auto" (about a quarter of `steps` up to `steps`), "LO-HI" or "N";
    None: `steps` alone. Raises ValueError with a one-line reason."""
    if text is None:
        return steps, steps
    if text == "auto":
        return max(1, steps // 4), steps
    low, _, high = text.partition("-")
    try:
        bounds = int(low), int(high or low)
    except ValueError:
        raise ValueError(f"--search-steps must be auto, LO-HI or N (e.g. 12-50); got "
                         f"{text!r}") from None
    if not 1 <= bounds[0] <= bounds[1] or bounds[1] > 1000:
        raise ValueError(f"--search-steps needs 1 <= LO <= HI <= 1000; got {text!r}")
    return bounds


__all__ = ["RunOptions", "searched_steps"]
