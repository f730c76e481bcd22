"""`tuner.accelerate`: apply the chosen settings to your own, already-loaded pipeline.

    import tuner

    fast = tuner.accelerate(pipe, "search_params.json")   # the overall choice
    images = fast("a photo of a cat").images                # generate through the handle
    fast.remove()                                           # pipe is exactly plain again

    with tuner.accelerate(pipe, params={"deepcache": {"cache_interval": 3,
                                                      "cache_branch_id": 0}}) as fast:
        images = fast("a photo of a cat", num_inference_steps=50).images

Generate through the handle, not through `pipe(...)`: T-GATE generates through its own
`pipe.tgate(...)`, and the handle is the callable that runs every chosen accelerator.

On a GPU, `"graphs": {"enabled": 1}` beside DeepCache (or alone) replays the UNet's step kinds as
CUDA graphs, captured at the first call of each shape; `{"enabled": 2}` captures them after
`torch.compile` (not bit-identical; accelerators/graphs.py).
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

from .answer import Answer, Choice
from .messages import first_line
from .setting import Mode, Setting

MODES = tuple(m.value for m in Mode)


class AccelerateError(ValueError):
    """The settings cannot be chosen or applied; the message is one line."""


def _listing(names) -> str:
    return "; ".join(repr(n) for n in names)


def _pick_setting(settings: dict, wanted: str | None, path: str) -> str:
    keys = list(settings)
    if wanted is None:
        if len(keys) == 1:
            return keys[0]
        raise AccelerateError(f"{path!r} holds {len(keys)} settings; pass setting= one of "
                              f"(or a unique part of): {_listing(keys)}")
    if wanted in settings:
        return wanted
    matches = [k for k in keys if wanted.lower() in k.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AccelerateError(f"no setting in {path!r} matches {wanted!r}; "
                              f"choose from: {_listing(keys)}")
    raise AccelerateError(f"setting={wanted!r} matches {len(matches)} settings in {path!r}: "
                          f"{_listing(matches)}; pass more of the key")


def _pick_goal(answers: dict, mode: str | None, goal: str | None, key: str) -> str:
    """The answer's goal key, by `goal` (a key or a unique part of it), else by `mode`."""
    keys = list(answers)
    if mode is not None and mode not in MODES:
        raise AccelerateError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if mode is not None:
        keys = [k for k in keys if answers[k].goal.mode == mode]
        if not keys:
            raise AccelerateError(f"no {mode} results for {key!r}; it has: "
                                  f"{_listing(answers) or 'none'}")
    if goal is not None:
        keys = [k for k in keys if goal in k]
        if not keys:
            raise AccelerateError(f"no goal matching {goal!r} for {key!r}; it has: "
                                  f"{_listing(answers)}")
    if len(keys) == 1:
        return keys[0]
    fastest = [k for k in keys if answers[k].goal.mode == Mode.MAX_SPEEDUP]
    if mode is None and goal is None and len(fastest) == 1:
        return fastest[0]
    raise AccelerateError(f"{key!r} has {len(keys)} answers; pass goal= one of (or a unique "
                          f"part of): {_listing(keys)}")


def choose(results: str | Path = "search_params.json", *, mode: str | None = None,
           combo: str | None = None, setting: str | None = None,
           goal: str | None = None) -> tuple[str, Answer, Choice]:
    """The chosen configuration in a results file: (setting key, its Answer, the Choice)."""
    from .search import results as results_file

    path = str(results)
    if not Path(path).is_file():
        raise AccelerateError(f"no results file {path!r}; run `tuner run` first, or pass params=")
    try:
        data = results_file.read(path)
    except results_file.ResultsError as err:
        raise AccelerateError(first_line(err)) from None
    by_setting: dict[str, dict[str, Answer]] = {}
    for key, found in results_file.answers(data):
        by_setting.setdefault(key, {})[found.goal.key] = found
    if not by_setting:
        raise AccelerateError(f"no results in {path!r}; run `tuner run` first")
    key = _pick_setting(by_setting, setting, path)
    found = by_setting[key][_pick_goal(by_setting[key], mode, goal, key)]
    where = f"{key!r} ({found.goal.key})"
    if combo is None:
        if found.chosen is None:
            raise AccelerateError(f"no feasible configuration for {where}: no trial kept "
                                  f"{found.goal.budget}")
        return key, found, found.chosen
    per_combo = {c.combo: c for c in found.combos}
    if combo not in per_combo:
        raise AccelerateError(f"unknown combo {combo!r} for {where}; choose from: "
                              f"{', '.join(per_combo) or 'none'}")
    if per_combo[combo].choice is None:
        raise AccelerateError(f"no feasible configuration of {combo} for {where}: no trial "
                              f"kept {found.goal.budget}")
    return key, found, per_combo[combo].choice


def _default_steps(pipe) -> int:
    try:
        default = inspect.signature(pipe.__call__).parameters["num_inference_steps"].default
    except (KeyError, TypeError, ValueError):
        return 50
    return default if isinstance(default, int) and default > 0 else 50


TUNED_ARGUMENTS = ("height", "width", "num_inference_steps")  # what a setting is tuned for


def _positional_names(pipe, count: int) -> list[str]:
    """The names of the first `count` arguments of the pipeline's call, as it would bind
    them positionally (fewer where it takes fewer)."""
    if not count:
        return []
    try:
        parameters = inspect.signature(pipe.__call__).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:count]


class TunedElsewhere(UserWarning):
    """The settings are applied to another model, scheduler, step count or size than they
    were tuned for."""


class NotFinal(UserWarning):
    """The answer applied is not final: the run that wrote it was interrupted, or is still
    going (what `tuner show` says of it); rerunning its command finishes it."""


def _check_final(key: str, found: Answer, *, strict: bool) -> None:
    """Warn (`NotFinal`), or raise with `strict`, when `found` is not final; as `tuner show`
    does, a run said to be in progress whose process has ended since counts as interrupted."""
    status = found.status.rechecked() if found.status is not None else None
    if status is None or status.final:
        return
    message = f"the answer for {key!r} ({found.goal.key}) is not final: " \
              f"{status.text().removeprefix('Not final: ')}"
    if strict:
        raise AccelerateError(f"{message} (strict=True)")
    warnings.warn(message, NotFinal, stacklevel=3)


class Accelerated:
    """A pipeline with accelerators applied. Call it to generate; `remove()` undoes exactly.

    Calls default `num_inference_steps` to `steps`: when not given, the steps the settings
    were tuned for (the tuned setting's, or the pipeline's default with explicit params; a
    tuned step count, `solver`, sets them). When the model, scheduler, step count (`steps` or
    a call's) or image size differ from the tuned setting, each difference is warned about
    once (`TunedElsewhere`), or raised with `strict=True`; a step count other than a tuned one
    is run with the tuned scheduler. Steps, height and width passed positionally are refused
    (`AccelerateError`): they would go unchecked.
    """

    def __init__(self, pipe, params: dict, *, steps: int | None = None, seed: int = 0,
                 choice: Choice | None = None, setting: Setting | None = None,
                 model: str | None = None, strict: bool = False):
        from . import accelerators
        from .families import family_of, supported

        family = family_of(pipe) if callable(pipe) else None
        if family is None or not hasattr(pipe, "scheduler"):
            raise AccelerateError(f"pipe must be a loaded diffusers pipeline ({supported()}) "
                                  f"with a scheduler; got {type(pipe).__name__}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                                  or steps < 1):
            raise AccelerateError(f"steps must be a positive integer; got {steps!r}")
        self.params = {name: dict(knobs) for name, knobs in params.items()}
        self.pipe, self.family, self.seed = pipe, family, seed
        self.combo = accelerators.combo_of(self.params)
        self.choice, self.setting, self.strict = choice, setting, strict
        self._warned: set[str] = set()
        try:
            # A tuned scheduler and step count (accelerators/solver.py) set the tuned steps.
            self.tuned_steps = accelerators.steps_of(
                self.params, steps=setting.steps if setting is not None else _default_steps(pipe))
            self.steps = self.tuned_steps if steps is None else steps
            self._check_steps(self.steps)
            if setting is not None:
                self._check_model(model)
            self._apply(self._params_at(self.steps))
        except accelerators.AcceleratorError as err:
            raise AccelerateError(first_line(err)) from None
        self.active = True

    def _params_at(self, steps: int) -> dict:
        """The params that run `steps` steps: a tuned step count replaced by `steps`, the
        tuned scheduler kept."""
        from .accelerators import SOLVER

        if SOLVER not in self.params:
            return self.params
        return {**self.params, SOLVER: {**self.params[SOLVER], "steps": steps}}

    def _apply(self, params: dict) -> None:
        from . import accelerators

        self._context = accelerators.apply(self.pipe, params, steps=self.steps, seed=self.seed)
        self._run = self._context.__enter__()
        self._applied_steps = accelerators.steps_of(params, steps=self.steps)

    def _run_at(self, steps: int):
        """The callable that generates `steps` steps: under a tuned step count, the settings
        applied again with the caller's count (the tuned scheduler kept)."""
        from . import accelerators

        if accelerators.SOLVER not in self.params or steps == self._applied_steps:
            return self._run
        self._context.__exit__(None, None, None)
        applied = self._applied_steps
        try:
            self._apply(self._params_at(steps))
        except accelerators.AcceleratorError as err:
            self._apply(self._params_at(applied))
            raise AccelerateError(first_line(err)) from None
        return self._run

    def _differs(self, what: str, message: str) -> None:
        if self.strict:
            raise AccelerateError(f"{message} (strict=True)")
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(message, TunedElsewhere, stacklevel=3)

    def _check_model(self, model: str | None) -> None:
        from .pipelines import SCHEDULERS, model_fingerprint, scheduler_name

        tuned = self.setting
        if model and model != model_fingerprint(self.pipe):
            self._differs("model", f"settings tuned on {tuned.pipe} are applied to a model "
                                   f"with another {self.family.denoiser_title} architecture")
        expected = SCHEDULERS[scheduler_name(tuned.scheduler)][0]
        used = type(self.pipe.scheduler).__name__
        if used != expected:
            self._differs("scheduler", f"settings tuned with {tuned.scheduler} are applied "
                                       f"with {used}")

    def _check_steps(self, steps: int) -> None:
        """Steps other than the tuned ones: warned about (raised with strict=True), where the
        settings were tuned (a results file) or set the step count themselves (a solver)."""
        from .accelerators import SOLVER

        if steps != self.tuned_steps and (self.setting is not None or SOLVER in self.params):
            self._differs("steps", f"settings tuned for {self.tuned_steps} steps are used at "
                                   f"{steps} steps")

    def _check_call(self, kwargs: dict) -> None:
        tuned = self.setting
        native_h, native_w = self.family.native_size(self.pipe)
        size = (kwargs.get("height") or native_h, kwargs.get("width") or native_w)
        if size != (tuned.height, tuned.width):
            self._differs("size", f"settings tuned at {tuned.height}x{tuned.width} are used "
                                  f"at {size[0]}x{size[1]}")

    def __call__(self, *args, **kwargs):
        if not self.active:
            raise AccelerateError("this acceleration was removed; call tuner.accelerate again")
        tuned = [n for n in _positional_names(self.pipe, len(args)) if n in TUNED_ARGUMENTS]
        if tuned:  # the steps could neither default to the tuned ones nor be checked
            raise AccelerateError(f"pass {', '.join(tuned)} by keyword: the tuned settings "
                                  f"depend on them, and positionally they go unchecked")
        kwargs.setdefault("num_inference_steps", self.steps)
        self._check_steps(kwargs["num_inference_steps"])
        if self.setting is not None:
            self._check_call(kwargs)
        return self._run_at(kwargs["num_inference_steps"])(*args, **kwargs)

    def remove(self) -> None:
        """Put the pipeline back exactly as it was (again: nothing happens)."""
        if self.active:
            self.active = False
            self._context.__exit__(None, None, None)

    def __enter__(self) -> Accelerated:
        return self

    def __exit__(self, *exc) -> bool:
        self.remove()
        return False

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"<tuner.Accelerated {self.combo} {self.params} steps={self.steps} ({state})>"


def accelerate(pipe, results: str | Path = "search_params.json", *, mode: str | None = None,
               combo: str | None = None, setting: str | None = None, goal: str | None = None,
               params: dict | None = None, steps: int | None = None,
               strict: bool = False) -> Accelerated:
    """Apply tuned settings to `pipe`; return the handle to generate with.

    From the results file (`tuner run --output`): `setting=None` takes the file's only
    setting, else pass its key or a unique part of it; `goal` picks one of its answers by its
    key or a unique part of it ("fastest | clip loss <= 0.02"), `mode` ("max_speedup" or
    "req_speedup") among its answers (default: the only one, else the fastest-within-budget
    one); `combo=None` takes the overall choice, else that combo's. Or pass explicit `params`
    ({accelerator: {knob: value}}); the file is then not read. `steps` defaults to the tuned
    steps (with `params`, to the pipeline's default; a tuned step count, `solver`, sets them);
    passed, it is the count calls run by default, with the tuned scheduler, warned about where
    it differs from a tuned count. An answer that is not final (its run was interrupted or is
    still going) is warned about (`NotFinal`). `strict=True` raises, instead of warning, when
    the answer is not final, or the pipeline, `steps` or a call differs from what the settings
    were tuned for.

    Raises `AccelerateError` (a ValueError) with a one-line message.
    """
    if params is not None:
        if not isinstance(params, dict) or not params or \
                not all(isinstance(v, dict) for v in params.values()):
            raise AccelerateError("params must be {accelerator: {knob: value}}, e.g. "
                                  "{'deepcache': {'cache_interval': 3, 'cache_branch_id': 0}}")
        return Accelerated(pipe, params, steps=steps, strict=strict)
    key, found, chosen = choose(results, mode=mode, combo=combo, setting=setting, goal=goal)
    _check_final(key, found, strict=strict)
    return Accelerated(pipe, chosen.config, steps=steps, seed=found.setting.seed, choice=chosen,
                       setting=found.setting, model=_model_of(results, key), strict=strict)


def _model_of(results, key: str) -> str | None:
    """The fingerprint of the tuned model's denoiser (the file keys it by the denoiser's name
    in its family, pipelines.model_record)."""
    from .search import results as results_file

    model = results_file.read(results)["settings"][key].get("model") or {}
    return next(iter(model.values()), None)


__all__ = ["AccelerateError", "Accelerated", "NotFinal", "TunedElsewhere", "accelerate",
           "choose"]
