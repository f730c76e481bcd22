"""The `graphs` accelerator (CUDA graphs of DeepCache's step kinds) where no GPU is needed: it is
refused on the CPU, it is a knob only in CUDA studies, its keys stay exact, and its bookkeeping
(step kinds counted on the host, static inputs, the capture cache) replays what eager runs.

The bookkeeping is checked with a stand-in for a CUDA graph that runs the captured call again at
each replay and writes into the captured outputs, as a real replay does: the real kernels are
checked on a GPU by benchmarks/graphs_bench.py.
"""

from __future__ import annotations

import random

import optuna
import pytest
import torch
from torch.utils._pytree import tree_flatten

import tuner
from tuner import accelerators
from tuner.accelerators import (Unsupported, apply, canonical, check, combo_of, grid, grid_size,
                                leftovers, members)
from tuner.accelerators import graphs as graphs_module
from tuner.accelerators.graphs import Graphs, step_kind
from tuner.api import AccelerateError
from tuner.search.space import canonical_key, distinct_points, random_point, suggest

ON = {"graphs": {"enabled": 1}}
STEPS = 6


def dc(n: int, b: int = 0) -> dict:
    return {"deepcache": {"cache_interval": n, "cache_branch_id": b}}


def test_refused_on_the_cpu(tiny_sd):
    with pytest.raises(Unsupported, match="CUDA device; the pipeline is on cpu"):
        check(tiny_sd, {**dc(3), **ON}, steps=STEPS)
    with pytest.raises(Unsupported):
        with apply(tiny_sd, ON, steps=STEPS):
            pass
    assert leftovers(tiny_sd) == []


def test_the_api_says_why_in_one_line(tiny_sd):
    with pytest.raises(AccelerateError, match="^graphs need a CUDA device"):
        tuner.accelerate(tiny_sd, params={**dc(3), **ON}, steps=STEPS)
    assert leftovers(tiny_sd) == []


def test_refused_with_tome_and_tgate_before_anything_else(tiny_sd):
    tome = {"tome": {"ratio": 0.5, "max_downsample": 1}}
    tgate = {"tgate": {"gate_step": 5, "sp_interval": 2, "fi_interval": 1, "warmup": 1}}
    for other, name in ((tome, "tome"), (tgate, "tgate")):
        with pytest.raises(Unsupported, match=f"^graphs cannot run with {name}: "):
            check(tiny_sd, {**dc(3), **other, **ON}, steps=STEPS)


def test_the_knob_is_absent_from_cpu_spaces():
    for combo in accelerators.COMBOS:
        assert members(combo) == accelerators.COMBOS[combo]
        assert members(combo, device="cpu") == accelerators.COMBOS[combo]
        assert not any(k.startswith("graphs.") for k in grid(combo))
    assert grid_size("deepcache") == 16
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert set(suggest(study.ask(), "deepcache")) == {"deepcache"}
    assert set(random_point("deepcache", random.Random(0))) == {"deepcache.cache_interval",
                                                                "deepcache.cache_branch_id"}


def test_the_knob_is_in_cuda_spaces_where_graphs_compose():
    assert members("deepcache", device="cuda") == ("deepcache", "graphs")
    assert grid("deepcache", device="cuda")["graphs.enabled"] == [0, 1, 2]
    assert grid_size("deepcache", device="cuda") == 48
    for combo in ("deepcache+tome", "deepcache+tgate", "deepcache+tome+tgate"):
        assert members(combo, device="cuda") == accelerators.COMBOS[combo]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    config = suggest(study.ask(), "deepcache", device="cuda")
    assert set(config) == {"deepcache", "graphs"} and config["graphs"]["enabled"] in (0, 1, 2)
    assert "graphs.enabled" in random_point("deepcache", random.Random(0), device="cuda")
    assert combo_of({**dc(3), **ON}) == "deepcache"


class _OnCuda:
    """A pipeline that says it is on CUDA (only its device is read by the space)."""

    def __init__(self, pipe):
        self._pipe = pipe
        self.device = torch.device("cuda")

    def __getattr__(self, name):
        return getattr(self._pipe, name)


def test_keys_stay_exact(tiny_sd):
    size = {"steps": STEPS, "height": 64, "width": 64}
    # A CPU study's keys are what they were: no graphs entry.
    assert canonical_key(tiny_sd, dc(3), **size) == \
        '{"deepcache": {"cache_branch_id": 0, "cache_interval": 3}}'
    on = canonical_key(tiny_sd, {**dc(3), **ON}, **size)
    off = canonical_key(tiny_sd, {**dc(3), "graphs": {"enabled": 0}}, **size)
    compiled = canonical_key(tiny_sd, {**dc(3), "graphs": {"enabled": 2}}, **size)
    assert len({on, off, compiled, canonical_key(tiny_sd, dc(3), **size)}) == 4
    short = {**size, "steps": 4}
    assert canonical(tiny_sd, {**dc(5), **ON}, **short) == canonical(tiny_sd, {**dc(4), **ON},
                                                                     **short)
    assert distinct_points(tiny_sd, "deepcache", **size) == 16
    assert distinct_points(_OnCuda(tiny_sd), "deepcache", **size) == 48


def test_step_kinds():
    assert [step_kind(s, 3) for s in range(7)] == ["full", "shallow", "shallow", "full",
                                                   "shallow", "shallow", "full"]
    assert [step_kind(s, None) for s in range(3)] == ["plain"] * 3
    assert {step_kind(s, 1) for s in range(5)} == {"full"}


# ---------------------------------------------------------------------------------------------
# The bookkeeping, with a stand-in for the GPU's graphs


class _Replay:
    """Runs the captured call again at each replay, in the step state it was captured in, and
    writes the result into the tensors the capture returned (as the kernels of a real graph)."""

    def __init__(self, pipe, call, static, out, state):
        self.pipe, self.call, self.static, self.out, self.state = pipe, call, static, out, state

    def replay(self):
        helper = self.pipe.__dict__.get("deepcache")
        if helper is not None:
            helper.start_timestep, helper.cur_timestep = self.state
        new = self.call(*self.static[0], **self.static[1])
        for mine, fresh in zip(tree_flatten(self.out)[0], tree_flatten(new)[0]):
            mine.copy_(fresh)

    def pool(self):
        return None


@pytest.fixture
def fake_gpu(monkeypatch, tiny_sd):
    captured = []

    def capture(call, static, pool=None, *, compiling=False):
        helper = tiny_sd.__dict__.get("deepcache")
        state = (helper.start_timestep, helper.cur_timestep) if helper else None
        out = call(*static[0], **static[1])
        captured.append(state)
        return _Replay(tiny_sd, call, static, out, state), out

    monkeypatch.setattr(graphs_module, "_capture", capture)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    graphs_module.clear()
    yield captured
    graphs_module.clear()


def _generate(run):
    with torch.inference_mode():
        return run(prompt=["a red circle", "a blue square"], num_inference_steps=STEPS,
                   height=64, width=64, output_type="pt",
                   generator=[torch.Generator("cpu").manual_seed(s) for s in (1, 2)]).images


def _graphed(pipe, config, *, level: int = 1):
    """Images of two generations under one application, graphs forced past the CPU check."""
    with apply(pipe, config, steps=STEPS) as run:
        with Graphs().patch(pipe, {"enabled": level}, run, absorbed={}) as fast:
            return _generate(fast), _generate(fast)


def test_replays_what_eager_deepcache_runs(tiny_sd, fake_gpu):
    for config in (dc(3), dc(2), dc(3, 1)):
        with apply(tiny_sd, config, steps=STEPS) as run:
            eager = _generate(run)
        for images in _graphed(tiny_sd, config):
            assert torch.equal(images, eager), config
        assert leftovers(tiny_sd) == []
    # Captured once per branch, full then shallow: N=2 replays what N=3 captured.
    assert fake_gpu == [(0, 0), (0, 1), (0, 0), (0, 1)]


def test_replays_the_plain_pipeline_and_undoes_exactly(tiny_sd, fake_gpu):
    plain = _generate(tiny_sd)
    before = {k: v for k, v in tiny_sd.unet.__dict__.items()}
    with Graphs().patch(tiny_sd, ON["graphs"], tiny_sd.__call__, absorbed={}) as fast:
        assert torch.equal(_generate(fast), plain)
        assert torch.equal(_generate(fast), plain)
    assert tiny_sd.unet.__dict__ == before and leftovers(tiny_sd) == []
    assert fake_gpu == [None]
    assert torch.equal(_generate(tiny_sd), plain)


def test_the_footprint_declares_everything_graphs_set(tiny_sd, fake_gpu):
    """What graphs set over DeepCache (the UNet's call, DDIM's step) is in their footprint, so
    `patch` restores it; after the undo the pipeline is plain (tests/footprints.py)."""
    from footprints import differences, snapshot, undeclared

    from tuner.accelerators.deepcache import DeepCache

    _generate(tiny_sd)
    first = snapshot(tiny_sd)
    _generate(tiny_sd)
    second = snapshot(tiny_sd)
    with apply(tiny_sd, dc(3), steps=STEPS) as run:
        with Graphs().patch(tiny_sd, ON["graphs"], run, absorbed={}) as fast:
            _generate(fast)
            inside = snapshot(tiny_sd)
    declared = DeepCache.footprint | Graphs.footprint
    assert undeclared((first, second), inside, declared) == []
    assert undeclared((first, second), inside, DeepCache.footprint) == ["scheduler.step"]
    assert differences(second, snapshot(tiny_sd)) <= differences(first, second)


def test_the_cache_is_bounded(tiny_sd, fake_gpu, monkeypatch):
    monkeypatch.setattr(graphs_module, "CACHE_SIZE", 2)
    for b in (0, 1, 2):
        _graphed(tiny_sd, dc(3, b))
    assert len(graphs_module._cache) == 2
    assert len(fake_gpu) == 6
    _graphed(tiny_sd, dc(3, 0))  # evicted: captured again
    assert len(fake_gpu) == 8


def test_enabled_0_is_no_graphs(tiny_sd):
    with Graphs().patch(tiny_sd, {"enabled": 0}, tiny_sd.__call__, absorbed={}) as run:
        assert run == tiny_sd.__call__
    assert leftovers(tiny_sd) == []


def test_a_cuda_study_evaluates_the_eager_side(tiny_sd):
    """Failed at ebf820d: `graphs.enabled=0` raised NoEffect, so on the H200 every eager point
    of the deepcache grid failed as "changes nothing" and the study measured one side only."""
    on_cuda = _OnCuda(tiny_sd)
    check(on_cuda, {**dc(3), "graphs": {"enabled": 0}}, steps=STEPS)
    check(tiny_sd, {**dc(3), "graphs": {"enabled": 0}}, steps=STEPS)  # off is fine anywhere
    with pytest.raises(Unsupported):
        check(tiny_sd, {**dc(3), **ON}, steps=STEPS)


def test_the_api_applies_the_eager_side_anywhere(tiny_sd):
    with apply(tiny_sd, dc(3), steps=STEPS) as run:
        eager = _generate(run)
    with tuner.accelerate(tiny_sd, params={**dc(3), "graphs": {"enabled": 0}},
                          steps=STEPS) as fast:
        assert fast.combo == "deepcache"
        assert torch.equal(_generate(fast), eager)
    assert leftovers(tiny_sd) == []


def test_generations_through_the_pipeline_itself_count_steps_from_0(tiny_sd, fake_gpu):
    """Failed at 917b394: only the handle reset the step count, so a second `pipe(...)` call
    under graphs started at step 6, a shallow step with N=4, and replayed stale features."""
    with apply(tiny_sd, dc(4), steps=STEPS) as run:
        eager = _generate(run)
    with apply(tiny_sd, dc(4), steps=STEPS) as run:
        with Graphs().patch(tiny_sd, ON["graphs"], run, absorbed={}):
            assert torch.equal(_generate(tiny_sd), eager)
            assert torch.equal(_generate(tiny_sd), eager)


# ---------------------------------------------------------------------------------------------
# The scheduler step's timestep, read on the host


def test_host_timestep_reads_the_schedule_elements_the_loop_makes():
    schedule = torch.tensor([981, 961, 941, 921])
    values = schedule.tolist()
    assert [graphs_module.host_timestep(t, schedule, values) for t in schedule] == values
    tail = schedule[2:]  # img2img's loop runs over a slice of the schedule
    assert [graphs_module.host_timestep(t, schedule, values) for t in tail] == [941, 921]
    for other in (torch.tensor(961), schedule.clone()[1], schedule.float()[1], 961):
        assert graphs_module.host_timestep(other, schedule, values) is other
    assert torch.is_tensor(graphs_module.host_timestep(schedule[1], schedule, None))


def test_ddim_is_handed_host_timesteps_and_gets_its_step_back(tiny_sd, fake_gpu, monkeypatch):
    """DDIM's step syncs on a device timestep (`prev_timestep >= 0`) at every step; under
    graphs it gets the same value as a host integer, and the output stays the eager one."""
    seen = []
    inner = type(tiny_sd.scheduler).step

    def spy(self, model_output, timestep, *args, **kwargs):
        seen.append(timestep)
        return inner(self, model_output, timestep, *args, **kwargs)

    monkeypatch.setattr(type(tiny_sd.scheduler), "step", spy)
    with apply(tiny_sd, dc(3), steps=STEPS) as run:
        eager = _generate(run)
    assert all(torch.is_tensor(t) for t in seen)
    schedule = tiny_sd.scheduler.timesteps.tolist()
    seen.clear()
    for images in _graphed(tiny_sd, dc(3)):
        assert torch.equal(images, eager)
    assert seen == schedule * 2 and all(type(t) is int for t in seen)
    assert "step" not in tiny_sd.scheduler.__dict__
    seen.clear()
    monkeypatch.setattr(graphs_module, "options", graphs_module.Options(host_timesteps=False))
    assert torch.equal(_graphed(tiny_sd, dc(3))[0], eager)
    assert all(torch.is_tensor(t) for t in seen)


def test_schedulers_that_reject_integers_keep_device_timesteps(tiny_sd, fake_gpu):
    from diffusers import EulerDiscreteScheduler

    ddim = tiny_sd.scheduler
    tiny_sd.scheduler = EulerDiscreteScheduler.from_config(ddim.config)
    try:
        plain = _generate(tiny_sd)
        with Graphs().patch(tiny_sd, ON["graphs"], tiny_sd.__call__, absorbed={}) as fast:
            assert "step" not in tiny_sd.scheduler.__dict__
            assert torch.equal(_generate(fast), plain)
    finally:
        tiny_sd.scheduler = ddim


def test_compiled_graphs_are_cached_apart(tiny_sd, fake_gpu, monkeypatch):
    compiled = []

    def fake_compile(call, mode):
        compiled.append(mode)
        return call

    monkeypatch.setattr(graphs_module, "_compiled", fake_compile)
    _graphed(tiny_sd, dc(3))
    assert compiled == [] and len(graphs_module._cache) == 1
    _graphed(tiny_sd, dc(3), level=2)
    _graphed(tiny_sd, dc(5), level=2)  # same branch, same compiled entry
    assert compiled == ["default"] and len(graphs_module._cache) == 2
    monkeypatch.setattr(graphs_module, "options", graphs_module.Options(compile="max-autotune"))
    _graphed(tiny_sd, dc(3), level=2)  # another mode, another entry
    assert compiled == ["default", "max-autotune"] and len(graphs_module._cache) == 3
    assert len(fake_gpu) == 6  # full and shallow: eager, compiled, compiled another way
