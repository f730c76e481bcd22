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
"""

from __future__ import annotations

import inspect
from pathlib import Path

from .messages import first_line

MODES = ("max_speedup", "req_speedup")


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


def _pick_mode(slot: dict, wanted: str | None, key: str) -> str:
    present = [m for m in MODES if isinstance(slot.get(m), dict)]
    if wanted is not None:
        if wanted not in MODES:
            raise AccelerateError(f"unknown mode {wanted!r}; choose from {', '.join(MODES)}")
        if wanted not in present:
            raise AccelerateError(f"no {wanted} results for {key!r}; it has: "
                                  f"{', '.join(present) or 'none'}")
        return wanted
    if not present:
        raise AccelerateError(f"no results for {key!r} (neither {' nor '.join(MODES)})")
    return present[0] if len(present) == 1 else "max_speedup"


def choose(results: str | Path = "search_params.json", *, mode: str | None = None,
           combo: str | None = None, setting: str | None = None) -> dict:
    """The chosen result from a results file: {"key", "mode", "setting", "result"} where
    result is the file's <result> (combo, params, speedup, loss, ...)."""
    from .search import results as results_file

    path = str(results)
    if not Path(path).is_file():
        raise AccelerateError(f"no results file {path!r}; run `tuner run` first, or pass params=")
    try:
        data = results_file.read(path)
    except results_file.ResultsError as err:
        raise AccelerateError(first_line(err)) from None
    settings = data["settings"]
    if not settings:
        raise AccelerateError(f"no results in {path!r}; run `tuner run` first")
    key = _pick_setting(settings, setting, path)
    slot = settings[key]
    mode = _pick_mode(slot, mode, key)
    entry = slot[mode]
    goal = entry.get("goal") or {}
    budget = f"{goal.get('metric', '?')} loss <= {goal.get('loss_budget', 0):.1%}"
    if combo is None:
        chosen = entry.get("chosen")
        if chosen is None:
            raise AccelerateError(f"no feasible configuration for {key!r} ({mode}): no trial "
                                  f"kept {budget}")
    else:
        per_combo = entry.get("per_combo") or {}
        if combo not in per_combo:
            raise AccelerateError(f"unknown combo {combo!r} for {key!r} ({mode}); "
                                  f"choose from: {', '.join(per_combo) or 'none'}")
        chosen = per_combo[combo]
        if chosen is None:
            raise AccelerateError(f"no feasible configuration of {combo} for {key!r} ({mode}): "
                                  f"no trial kept {budget}")
    if not isinstance(chosen, dict) or not isinstance(chosen.get("params"), dict):
        raise AccelerateError(f"results file {path!r} has no params for {key!r} ({mode})")
    return {"key": key, "mode": mode, "setting": slot.get("setting") or {}, "result": chosen}


def _default_steps(pipe) -> int:
    try:
        default = inspect.signature(pipe.__call__).parameters["num_inference_steps"].default
    except (KeyError, TypeError, ValueError):
        return 50
    return default if isinstance(default, int) and default > 0 else 50


class Accelerated:
    """A pipeline with accelerators applied. Call it to generate; `remove()` undoes exactly.

    Calls default `num_inference_steps` to the steps the settings were tuned for.
    """

    def __init__(self, pipe, params: dict, *, steps: int, seed: int = 0,
                 result: dict | None = None, setting: str | None = None,
                 mode: str | None = None):
        from . import accelerators

        self.pipe, self.steps, self.seed = pipe, steps, seed
        self.params = {name: dict(knobs) for name, knobs in params.items()}
        self.combo = accelerators.combo_of(self.params)
        self.result, self.setting, self.mode = result, setting, mode
        try:
            self._context = accelerators.apply(pipe, self.params, steps=steps, seed=seed)
            self._run = self._context.__enter__()
        except accelerators.AcceleratorError as err:
            raise AccelerateError(first_line(err)) from None
        self.active = True

    def __call__(self, *args, **kwargs):
        if not self.active:
            raise AccelerateError("this acceleration was removed; call tuner.accelerate again")
        if len(args) <= 1:  # prompt alone (or nothing) positionally
            kwargs.setdefault("num_inference_steps", self.steps)
        return self._run(*args, **kwargs)

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
               combo: str | None = None, setting: str | None = None,
               params: dict | None = None, steps: int | None = None) -> Accelerated:
    """Apply tuned settings to `pipe`; return the handle to generate with.

    From the results file (`tuner run --output`): `mode` defaults to the only mode present, else
    "max_speedup"; `combo=None` takes the overall choice, else that combo's; `setting=None`
    takes the file's only setting, else pass its key or a unique part of it. Or pass explicit
    `params` ({accelerator: {knob: value}}); the file is then not read. `steps` defaults to the
    setting's steps (with `params`, to the pipeline's default).

    Raises `AccelerateError` (a ValueError) with a one-line message.
    """
    if params is not None:
        if not isinstance(params, dict) or not params or \
                not all(isinstance(v, dict) for v in params.values()):
            raise AccelerateError("params must be {accelerator: {knob: value}}, e.g. "
                                  "{'deepcache': {'cache_interval': 3, 'cache_branch_id': 0}}")
        return Accelerated(pipe, params, steps=steps or _default_steps(pipe))
    chosen = choose(results, mode=mode, combo=combo, setting=setting)
    tuned = chosen["setting"]
    return Accelerated(pipe, chosen["result"]["params"],
                       steps=steps or int(tuned.get("steps") or _default_steps(pipe)),
                       seed=int(tuned.get("seed", 0)), result=chosen["result"],
                       setting=chosen["key"], mode=chosen["mode"])


__all__ = ["AccelerateError", "Accelerated", "accelerate", "choose"]
