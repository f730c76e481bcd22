"""The scheduler and the step count as knobs: the fastest pipeline configuration, not only the
fastest accelerator setting on a fixed sampler.

An experienced user's first move for speed is fewer steps with a stronger solver (DPM-Solver++
or UniPC at 20 steps instead of DDIM at 50). `scheduler` swaps the pipeline's scheduler for one
of `pipelines.SCHEDULERS` (built from the scheduler's own config, as `pipelines.set_scheduler`
does, so the noise schedule is kept), and `steps` is the step count every generation under this
configuration runs: whatever count the caller passes, the registry's `apply` passes `steps` to
the outermost call, so every accelerator of the configuration sees the count that runs. The
baseline stays the user's setting; speedup and loss are measured against it.

The knobs' values are the run's (`--search-sched`, `--search-steps`): `configure` sets them
(`space`), and a search draws from them; every scheduler and 1 to 1000 steps are accepted
(`accepted`) whatever the run searched, which is what applying a stored answer
(`tuner.accelerate`) needs, also in the process of a run that searched other values.

**Undo.** The swap goes through the pipeline's own attribute setter, which also rewrites its
config's entry for the scheduler; on exit the original scheduler object and the original config
object are put back, so both are bit-identical (the original scheduler is never touched while
the other one runs). Nothing of it is left for a footprint to record.

**The space stays a product, made exact by `canonical`; it is not normalised.** Other knobs mean
something else at another step count (DeepCache's N=5 is 4 full steps at 20 steps and 10 at 50;
T-GATE's gate_step must fall below the step count to gate anything). Two ways out:

* normalised knobs (an interval or a gate as a share of the steps) would make one value mean
  different computations at different step counts and round equal shares onto equal integers,
  so neither "one value, one computation" nor the exact dedupe would hold;
* a conditional space (gate_step drawn below the drawn step count) is what Optuna's
  define-by-run allows, but its distributions change from trial to trial: multivariate TPE then
  falls back to independent sampling of the changing knobs, and the grid sampler cannot
  enumerate it.

So each knob keeps its fixed, absolute range (what a user applies in code), and the registry
hands every accelerator the step count the configuration runs (`denoising_steps`) for its
`check` and `canonical`: DeepCache's intervals at or beyond the step count are one point,
T-GATE's gates beyond it are one point (and without DeepCache rejected as changing nothing), and
such repeats are answered from the earlier trial for free. Equivalent computations stay one
point; the samplers see a fixed space.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from .base import Accelerator, ChoiceKnob, Footprint, Generate, IntKnob, Params, Unsupported

ANY_STEPS = (1, 1000)  # the step counts accepted when no run restricts them


@dataclass(frozen=True)
class SolverSpace:
    """The values of the two knobs. `schedulers`: pipelines.SCHEDULERS' names (None: all of
    them); `steps`: the lowest and highest step count, both included."""

    schedulers: tuple[str, ...] | None = None
    steps: tuple[int, int] = ANY_STEPS

    def __post_init__(self):
        low, high = self.steps
        if not 1 <= low <= high:
            raise ValueError(f"steps must be 1 <= low <= high; got {low}-{high}")
        if self.schedulers is not None and not self.schedulers:
            raise ValueError("no scheduler to search")

    def knobs(self) -> dict[str, ChoiceKnob | IntKnob]:
        schedulers = self.schedulers
        if schedulers is None:
            from ..pipelines import SCHEDULERS

            schedulers = tuple(SCHEDULERS)
        return {"scheduler": ChoiceKnob(tuple(schedulers)), "steps": IntKnob(*self.steps)}

    @property
    def label(self) -> str:
        """The space in words, for the study's name: `DDIM, UniPC x 12-50 steps`."""
        names = ", ".join(self.schedulers) if self.schedulers else "any scheduler"
        low, high = self.steps
        return f"{names} x {low}-{high} steps" if low != high else f"{names} x {low} steps"


space = SolverSpace()


def configure(searched: SolverSpace) -> None:
    """Set the knobs' values for this process (a run's --search-sched and --search-steps)."""
    global space
    space = searched


@contextlib.contextmanager
def configured(searched: SolverSpace):
    """`configure` within a block, the earlier values back after it."""
    before = space
    configure(searched)
    try:
        yield searched
    finally:
        configure(before)


class _Knobs:
    """`Solver.space`: the knobs of the values `configure` set, read when asked."""

    def __get__(self, instance, owner) -> dict:
        return space.knobs()


class Solver(Accelerator):
    name = "solver"
    space = _Knobs()
    denoisers = ("unet", "transformer")
    sets_steps = True
    # The scheduler is swapped through the pipeline's setter and put back by `attach` itself
    # (module docstring): the pipeline keeps a scheduler either way, so there is no attribute
    # whose presence a footprint could tell.
    footprint = Footprint()

    def accepted(self):
        # A search draws the run's values (`configure`); any scheduler and step count applies,
        # so that an answer tuned over other values applies in this process too.
        return SolverSpace().knobs()

    def denoising_steps(self, params, *, steps):
        return params["steps"]

    def check(self, pipe, params, *, steps, absorbed):
        from ..families import family_of  # the families know their schedulers

        family = family_of(pipe)
        if family is not None and params["scheduler"] not in family.schedulers:
            raise Unsupported(f"{family.title} models do not run with the "
                              f"{params['scheduler']} scheduler")

    @contextlib.contextmanager
    def attach(self, pipe, params: Params, generate: Generate, *,
               absorbed: Mapping[str, Params]):
        from ..pipelines import set_scheduler

        # The step count is not set here but by the registry, on the outermost call
        # (`sets_steps`, `denoising_steps`): an accelerator applied after the solver reads it.
        scheduler, config = pipe.scheduler, pipe._internal_dict
        set_scheduler(pipe, params["scheduler"])
        try:
            yield generate
        finally:
            pipe.scheduler = scheduler  # the setter rewrites the config's entry ...
            pipe._internal_dict = config  # ... and the original config object comes back


__all__ = ["ANY_STEPS", "Solver", "SolverSpace", "configure", "configured"]
