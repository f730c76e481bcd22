"""The scheduler and the step count as knobs (tuner/accelerators/solver.py)."""

from __future__ import annotations

import itertools
import json
import warnings

import pytest
import torch

from tuner import accelerators
from tuner.accelerators import ALL_COMBOS, apply, canonical, grid, grid_size, solver
from tuner.accelerators.solver import SolverSpace
from tuner.cli import main
from tuner.options import RunOptions

SD_SCHEDULERS = ("DDIM", "DPM-Solver++", "UniPCMultistepScheduler")


def _images(run, steps: int = 4, seen: list | None = None):
    def count(pipe, step, t, kwargs):
        if seen is not None:
            seen.append(int(t))
        return kwargs

    with torch.inference_mode():
        return run(prompt=["a red circle"], num_inference_steps=steps, output_type="pt",
                   generator=torch.Generator("cpu").manual_seed(3),
                   callback_on_step_end=count).images


def _state(pipe):
    return (pipe.scheduler, pipe._internal_dict, dict(pipe.config),
            dict(pipe.scheduler.config), dict(pipe.scheduler.__dict__))


def test_the_swap_is_undone_bit_identically(tiny_sd):
    """The scheduler object, its config and the pipeline's config come back as they were, and
    the plain images are bit-identical, also after the swap composed with DeepCache."""
    plain = _images(tiny_sd)
    before = _state(tiny_sd)
    config = {"solver": {"scheduler": "UniPCMultistepScheduler", "steps": 3}}
    with apply(tiny_sd, config, steps=4) as run:
        assert type(tiny_sd.scheduler).__name__ == "UniPCMultistepScheduler"
        assert tiny_sd.config["scheduler"][1] == "UniPCMultistepScheduler"
        swapped = _images(run)
    assert not torch.equal(swapped, plain)
    after = _state(tiny_sd)
    assert after[0] is before[0] and after[1] is before[1]
    assert after[2:] == before[2:]
    assert torch.equal(_images(tiny_sd), plain)
    with apply(tiny_sd, {**config, "deepcache": {"cache_interval": 2, "cache_branch_id": 0}},
               steps=4) as run:
        assert not torch.equal(_images(run), swapped)
    assert _state(tiny_sd)[0] is before[0]
    assert torch.equal(_images(tiny_sd), plain)


def test_the_wrapped_call_runs_the_configured_steps(tiny_sd):
    seen: list[int] = []
    with apply(tiny_sd, {"solver": {"scheduler": "DDIM", "steps": 3}}, steps=6) as run:
        _images(run, steps=6, seen=seen)
    assert len(seen) == 3
    seen.clear()
    _images(tiny_sd, steps=6, seen=seen)
    assert len(seen) == 6


def test_every_accelerator_s_call_sees_the_solver_s_steps(tiny_sd):
    """An accelerator applied after the solver (here one registered last, so its call is the
    outermost) is called with the step count the configuration runs, not the caller's. Before
    the fix the solver set the count only on the call it wrapped, so MagCache, applied after
    it, configured itself for the caller's count (tests/test_caches.py)."""
    import contextlib

    from tuner.accelerators import Accelerator, Footprint, IntKnob

    asked: list[int] = []

    class Listen(Accelerator):
        name = "listen"
        space = {"on": IntKnob(1, 1)}
        footprint = Footprint()

        @contextlib.contextmanager
        def attach(self, pipe, params, generate, *, absorbed):
            def run(*args, **kwargs):
                asked.append(kwargs["num_inference_steps"])
                return generate(*args, **kwargs)

            yield run

    accelerators.register(Listen)
    try:
        seen: list[int] = []
        config = {"solver": {"scheduler": "DDIM", "steps": 3}, "listen": {"on": 1}}
        with apply(tiny_sd, config, steps=6) as run:
            _images(run, steps=6, seen=seen)
        assert asked == [3] and len(seen) == 3
        with apply(tiny_sd, {"listen": {"on": 1}}, steps=6) as run:  # no solver: the caller's
            _images(run, steps=5)
        assert asked == [3, 5]
    finally:
        accelerators.ACCELERATORS.pop("listen")


def test_without_the_flags_nothing_changes():
    assert RunOptions().combos == ALL_COMBOS == ("deepcache", "deepcache+tome",
                                                 "deepcache+tgate", "deepcache+tome+tgate")
    assert not any("solver" in accelerators.COMBOS[c] for c in ALL_COMBOS)
    assert {c: grid_size(c) for c in ALL_COMBOS} == {
        "deepcache": 16, "deepcache+tome": 576, "deepcache+tgate": 28800,
        "deepcache+tome+tgate": 1036800}
    assert list(grid("deepcache")) == ["deepcache.cache_interval", "deepcache.cache_branch_id"]
    assert RunOptions().solver_space is None
    assert accelerators.space_label("deepcache") == ""


def test_the_flags_add_the_knobs_to_every_combo():
    options = RunOptions(pipe="tiny-shapes", steps=50, search_sched="all", search_steps="auto")
    assert options.combos == ("steps", "deepcache+steps", "deepcache+tome+steps",
                              "deepcache+tgate+steps", "deepcache+tome+tgate+steps")
    space = options.solver_space
    assert space == SolverSpace(schedulers=SD_SCHEDULERS, steps=(12, 50))
    with solver.configured(space):
        assert grid("steps") == {"solver.scheduler": list(SD_SCHEDULERS),
                                 "solver.steps": list(range(12, 51))}
        assert grid_size("deepcache+steps") == 16 * 3 * 39
        assert "12-50 steps" in accelerators.space_label("deepcache+steps")
    only_steps = RunOptions(pipe="tiny-shapes", steps=20, sched="UniPC", search_steps="10-20",
                            combo="deepcache")
    assert only_steps.combos == ("deepcache+steps",)
    assert only_steps.solver_space == SolverSpace(schedulers=("UniPCMultistepScheduler",),
                                                  steps=(10, 20))


def test_canonical_forms_follow_the_steps_each_configuration_runs(tiny_sd):
    def key(solver_steps, **config):
        full = {"solver": {"scheduler": "DDIM", "steps": solver_steps}, **config}
        return canonical(tiny_sd, full, steps=50, height=64, width=64)

    def dc(n):
        return {"deepcache": {"cache_interval": n, "cache_branch_id": 0}}

    assert key(3, **dc(4)) == key(3, **dc(5))  # both only the first step full, at 3 steps
    assert key(10, **dc(4)) != key(10, **dc(5))

    def tg(gate, fi):
        return {"tgate": {"gate_step": gate, "sp_interval": 2, "fi_interval": fi, "warmup": 1}}

    assert key(10, **tg(12, 3)) == key(10, **tg(19, 1))  # gates never reached at 10 steps
    assert key(10, **tg(10, 3)) != key(10, **tg(11, 3))  # gate_step 10 gates the last step
    assert key(50, **tg(12, 3)) != key(50, **tg(19, 1))


def test_distinct_points_count_the_canonical_forms_of_the_joint_space(tiny_sd):
    from tuner.search.space import config_key, distinct_points

    with solver.configured(SolverSpace(schedulers=("DDIM", "UniPCMultistepScheduler"),
                                       steps=(2, 5))):
        knobs = grid("deepcache+steps")
        keys = {config_key(canonical(tiny_sd, accelerators.split_params(dict(zip(knobs, v))),
                                     steps=50, height=64, width=64))
                for v in itertools.product(*knobs.values())}
        assert distinct_points(tiny_sd, "deepcache+steps", steps=50, height=64,
                               width=64) == len(keys) < grid_size("deepcache+steps")


@pytest.mark.parametrize("args, message", [
    (["--pipe", "flux-random", "--search-sched", "DDIM"], "FlowMatchEuler"),
    (["--search-sched", "Euler"], "unknown scheduler"),
    (["--search-steps", "30-10"], "--search-steps"),
    (["--search-steps", "few"], "--search-steps"),
    (["--combo", "steps"], "--combo steps"),
])
def test_bad_knob_values_are_refused_in_one_line(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["run", "--pipe", "tiny-shapes", "--device", "cpu"]
    assert main([*base, *args]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("tuner: error: ") and err.count("\n") == 1, err
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_accelerate_defaults_to_the_tuned_steps_and_warns_at_others(tiny_sd):
    import tuner

    plain = _images(tiny_sd)
    params = {"solver": {"scheduler": "DPM-Solver++", "steps": 3}}
    with tuner.accelerate(tiny_sd, params=params) as fast:
        seen: list[int] = []
        with warnings.catch_warnings():
            warnings.simplefilter("error", tuner.TunedElsewhere)
            with torch.inference_mode():
                fast(prompt=["a red circle"], output_type="pt",
                     callback_on_step_end=lambda p, s, t, k: seen.append(s) or k)
        assert len(seen) == 3
        assert type(tiny_sd.scheduler).__name__ == "DPMSolverMultistepScheduler"
        seen.clear()
        with pytest.warns(tuner.TunedElsewhere, match="tuned for 3 steps are used at 5") as got:
            with torch.inference_mode():
                fast(prompt=["a red circle"], num_inference_steps=5, output_type="pt",
                     callback_on_step_end=lambda p, s, t, k: seen.append(s) or k)
        ours = [w for w in got if issubclass(w.category, tuner.TunedElsewhere)]
        assert len(ours) == 1 and "\n" not in str(ours[0].message)
        assert len(seen) == 5  # the caller's count, with the tuned scheduler
        assert type(tiny_sd.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert type(tiny_sd.scheduler).__name__ != "DPMSolverMultistepScheduler"
    assert torch.equal(_images(tiny_sd), plain)


def test_an_answer_outside_the_searched_values_applies_after_a_run_in_the_process(tiny_sd):
    """A run restricts the knobs it searches for its process (`solver.configure`); an answer
    tuned elsewhere, over other values, still applies in that process. Failed before the fix:
    `accelerate` refused DPM-Solver++ at 3 steps as "outside ['DDIM']"."""
    import tuner

    params = {"solver": {"scheduler": "DPM-Solver++", "steps": 3}}
    with solver.configured(SolverSpace(schedulers=("DDIM",), steps=(10, 20))):
        assert list(solver.Solver.space["scheduler"].values()) == ["DDIM"]  # a search draws it
        with tuner.accelerate(tiny_sd, params=params) as fast:
            seen: list[int] = []
            with torch.inference_mode():
                fast(prompt=["a red circle"], output_type="pt",
                     callback_on_step_end=lambda p, s, t, k: seen.append(s) or k)
            assert len(seen) == 3
            assert type(tiny_sd.scheduler).__name__ == "DPMSolverMultistepScheduler"
        with pytest.raises(accelerators.AcceleratorError, match="outside"):  # still checked
            solver.Solver().validate({"scheduler": "Euler-nonexistent", "steps": 3})
        with pytest.raises(accelerators.AcceleratorError, match="steps=0 is outside 1-1000$"):
            solver.Solver().validate({"scheduler": "DDIM", "steps": 0})


def test_a_run_with_the_flags_answers_with_a_scheduler_and_steps(tmp_path, capsys):
    output = tmp_path / "r.json"
    rc = main(["run", "--pipe", "tiny-shapes", "--device", "cpu", "--threads", "1",
               "--steps", "8", "--num-samples", "2", "--batch-size", "2", "--trials", "4",
               "--combo", "steps", "--search-sched", "all", "--search-steps", "auto",
               "--req-score-loss", "0.9", "--sampler-seed", "1", "--timing-pairs", "2",
               "--max-timing-pairs", "2", "--studies", str(tmp_path / "s"),
               "--output", str(output), "--no-progress"])
    assert rc == 0
    from tuner.api import choose

    _, _, chosen = choose(output)
    assert set(chosen.config) == {"solver"}
    assert chosen.config["solver"]["scheduler"] in SD_SCHEDULERS
    assert 2 <= chosen.config["solver"]["steps"] <= 8
    assert "steps" in json.dumps(json.loads(output.read_text()))
    capsys.readouterr()
    assert main(["show", "--output", str(output)]) == 0
    shown = capsys.readouterr().out
    assert "scheduler=" in shown and f"steps={chosen.config['solver']['steps']}" in shown
