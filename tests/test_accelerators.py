"""Accelerators: each one changes the output, every undo is exact, validation and search space.

Everything runs on the tiny random-weight pipelines (CPU, a few steps, one or two prompts).
Baseline outputs are computed once per (pipeline, scheduler, steps, prompts) and cached.
"""

from __future__ import annotations

import pytest
import torch

from tuner import accelerators
from tuner.accelerators import (COMBOS, AcceleratorError, NoEffect, Unsupported, apply, canonical,
                                check, grid, grid_size, leftovers, split_params)
from tuner.accelerators.base import Footprint, restoring, traces
from tuner.accelerators.deepcache import DeepCache
from tuner.accelerators.tgate import TGate
from tuner.accelerators.tome import ToMe
from tuner.pipelines import set_scheduler

PROMPTS = ("a red bicycle leaning on a wall", "a bowl of fruit on a table")
SEEDS = (7, 11)
STEPS = 4  # most tests
COMBO_STEPS = 6  # the combo/undo matrix: T-GATE's gate (step 5) is reached and passed

SCHEDULERS = ("DDIM", "DPM-Solver++", "UniPC")
# The combos of the UNet pipelines here (diffusers' caches, for transformers: test_caches.py).
UNET_COMBOS = accelerators.combos_for("unet", only=True)
PIPES = ("tiny_sd", "tiny_sdxl")

# One setting per accelerator that does something on both tiny pipelines at STEPS/COMBO_STEPS.
DEEPCACHE = {"cache_interval": 2, "cache_branch_id": 0}
TOME = {"ratio": 0.5, "max_downsample": 2}
# Reuses self-attention at step 3 (warm-up at 1, cache at 2, reuse at 3) within 4 steps.
TGATE = {"gate_step": 5, "sp_interval": 2, "fi_interval": 1, "warmup": 1}
PARAMS = {"deepcache": DEEPCACHE, "tome": TOME, "tgate": TGATE}


def config_of(combo: str) -> dict:
    return {name: dict(PARAMS[name]) for name in COMBOS[combo]}


def generate(run, *, steps: int = STEPS, prompts=PROMPTS, seeds=SEEDS, **kwargs) -> torch.Tensor:
    """Images (float, output_type='pt') with one fixed-seed CPU generator per image."""
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds[:len(prompts)]]
    with torch.inference_mode():
        out = run(prompt=list(prompts), num_inference_steps=steps, output_type="pt",
                  generator=generators, **kwargs)
    return out.images


_BASELINES: dict[tuple, torch.Tensor] = {}


def baseline(pipe, pipe_name: str, scheduler: str = "DDIM", *, steps: int = STEPS,
             prompts=PROMPTS) -> torch.Tensor:
    """The plain pipeline's output, computed once per key (the pipeline must be plain)."""
    key = (pipe_name, scheduler, steps, tuple(prompts))
    if key not in _BASELINES:
        assert leftovers(pipe) == []
        assert type(pipe.scheduler).__name__ == {
            "DDIM": "DDIMScheduler", "DPM-Solver++": "DPMSolverMultistepScheduler",
            "UniPC": "UniPCMultistepScheduler"}[scheduler]
        _BASELINES[key] = generate(pipe, steps=steps, prompts=prompts)
    return _BASELINES[key]


@pytest.fixture
def ddim_after(request):
    """Yield a function that swaps a pipeline's scheduler; put the original back afterwards."""
    saved = []

    def swap(pipe, name):
        saved.append((pipe, pipe.scheduler))
        set_scheduler(pipe, name)

    yield swap
    for pipe, scheduler in reversed(saved):
        pipe.scheduler = scheduler
        assert type(pipe.scheduler).__name__ == "DDIMScheduler"


def one_line(err: BaseException) -> str:
    message = str(err)
    assert message and "\n" not in message, repr(message)
    return message


# ---------------------------------------------------------------------------------------------
# Each accelerator does something


@pytest.mark.parametrize("name,params", [
    ("deepcache", DEEPCACHE),
    ("tome", {"ratio": 0.5, "max_downsample": 1}),  # full-resolution attention only
    ("tgate", TGATE),
])
def test_each_accelerator_alone_changes_tiny_sd_output(tiny_sd, name, params):
    base = baseline(tiny_sd, "tiny_sd")
    with apply(tiny_sd, {name: params}, steps=STEPS) as run:
        assert leftovers(tiny_sd) != []  # it is patched while inside
        out = generate(run)
        again = generate(run)  # reproducible within one application (tome reseeds per call)
    assert out.shape == base.shape
    assert torch.isfinite(out).all()
    assert not torch.equal(out, base)
    assert torch.equal(out, again)
    assert leftovers(tiny_sd) == []
    assert torch.equal(generate(tiny_sd), base)


# ---------------------------------------------------------------------------------------------
# Exact undo


@pytest.mark.parametrize("combo", list(UNET_COMBOS))
@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("pipe_name", PIPES)
def test_undo_restores_bit_identical_output(request, ddim_after, pipe_name, scheduler, combo):
    pipe = request.getfixturevalue(pipe_name)
    ddim_after(pipe, scheduler)
    base = baseline(pipe, pipe_name, scheduler, steps=COMBO_STEPS)
    with apply(pipe, config_of(combo), steps=COMBO_STEPS) as run:
        accelerated = generate(run, steps=COMBO_STEPS)
    assert torch.isfinite(accelerated).all()
    assert not torch.equal(accelerated, base), f"{combo} changed nothing"
    assert leftovers(pipe) == []
    assert torch.equal(generate(pipe, steps=COMBO_STEPS), base)


def _declared(config) -> Footprint:
    found = Footprint()
    for name in config:
        found |= accelerators.ACCELERATORS[name].footprint
    return found


@pytest.mark.parametrize("config", [{name: params} for name, params in PARAMS.items()]
                         + [config_of(combo) for combo in UNET_COMBOS if "+" in combo],
                         ids=lambda config: "+".join(config))
def test_each_footprint_declares_everything_its_patch_sets(tiny_sd, config):
    """Every attribute an application sets (on the pipeline, its components and their modules)
    is one its accelerators declare, so `patch` restores all of it; after the undo nothing
    differs from the plain pipeline but what a plain generation changes by itself."""
    from footprints import differences, snapshot, undeclared

    generate(tiny_sd, steps=COMBO_STEPS)
    first = snapshot(tiny_sd)
    generate(tiny_sd, steps=COMBO_STEPS)
    second = snapshot(tiny_sd)
    with apply(tiny_sd, config, steps=COMBO_STEPS) as run:
        generate(run, steps=COMBO_STEPS)
        inside = snapshot(tiny_sd)
    assert undeclared((first, second), inside, _declared(config)) == []
    assert undeclared((first, second), inside, Footprint()) != []  # the check can fail
    assert differences(second, snapshot(tiny_sd)) <= differences(first, second)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("combo", list(UNET_COMBOS))
def test_undo_when_generation_raises_midway(tiny_sd, combo):
    base = baseline(tiny_sd, "tiny_sd")

    def explode(pipe, step, timestep, kwargs):
        if step == 2:  # after a cached DeepCache step, with T-GATE caches filled
            raise Boom("stop")
        return kwargs

    with pytest.raises(Boom):
        with apply(tiny_sd, config_of(combo), steps=STEPS) as run:
            generate(run, callback_on_step_end=explode)
    assert leftovers(tiny_sd) == []
    assert torch.equal(generate(tiny_sd), base)


def test_undo_when_the_block_raises_after_generating(tiny_sdxl):
    base = baseline(tiny_sdxl, "tiny_sdxl")
    with pytest.raises(Boom):
        with apply(tiny_sdxl, config_of("deepcache+tome+tgate"), steps=STEPS) as run:
            generate(run)
            raise Boom("after the generation")
    assert leftovers(tiny_sdxl) == []
    assert torch.equal(generate(tiny_sdxl), base)


def test_many_apply_undo_cycles_stay_exact(tiny_sd):
    prompts = PROMPTS[:1]
    first = generate(tiny_sd, prompts=prompts)
    combos = list(UNET_COMBOS) + ["tome", "tgate"]
    seen: dict[str, torch.Tensor] = {}
    for cycle in range(22):
        combo = combos[cycle % len(combos)]
        config = config_of(combo) if combo in UNET_COMBOS else {combo: PARAMS[combo]}
        with apply(tiny_sd, config, steps=STEPS) as run:
            out = generate(run, prompts=prompts)
        assert leftovers(tiny_sd) == [], (cycle, combo)
        if combo in seen:  # the same config gives the same images every time
            assert torch.equal(out, seen[combo]), (cycle, combo)
        seen[combo] = out
        assert not torch.equal(out, first), (cycle, combo)
    assert torch.equal(generate(tiny_sd, prompts=prompts), first)


# ---------------------------------------------------------------------------------------------
# Every generation under one application starts from a clean state


def sampled_configs(pipe, combo: str, count: int, *, steps: int, seed: int) -> list[dict]:
    """`count` settings of `combo` that `pipe` accepts, drawn from its declared space (T-GATE's
    gate inside `steps`)."""
    import random

    rng = random.Random(seed)
    found = []
    while len(found) < count:
        config = {name: {knob: rng.choice(spec.values())
                         for knob, spec in accelerators.ACCELERATORS[name].space.items()}
                  for name in COMBOS[combo]}
        if "tgate" in config:
            config["tgate"]["gate_step"] = rng.randrange(5, steps)
        try:
            check(pipe, config, steps=steps)
        except AcceleratorError:
            continue
        found.append(config)
    return found


REPEAT_STEPS = 8


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("pipe_name", PIPES)
@pytest.mark.parametrize("combo", list(UNET_COMBOS))
def test_a_later_generation_equals_a_fresh_application(request, combo, pipe_name, batch):
    """The second call under one application (after a call at another batch size, with other
    prompts) gives exactly what the first call of a fresh application gives. T-GATE's attention
    caches used to leak from one call into the next under DeepCache."""
    pipe = request.getfixturevalue(pipe_name)
    prompts, seeds = PROMPTS[:batch], SEEDS[:batch]
    other = ("a green lamp on a desk", "a boat on a lake")[:3 - batch]
    issue_case = {"deepcache": {"cache_interval": 3, "cache_branch_id": 0},
                  "tome": {"ratio": 0.5, "max_downsample": 2},
                  "tgate": {"gate_step": 5, "sp_interval": 2, "fi_interval": 2, "warmup": 1}}
    configs = sampled_configs(pipe, combo, 2, steps=REPEAT_STEPS, seed=len(combo) + batch)
    configs.append({name: issue_case[name] for name in COMBOS[combo]})
    for config in configs:
        with apply(pipe, config, steps=REPEAT_STEPS) as run:
            generate(run, steps=REPEAT_STEPS, prompts=other, seeds=(3, 5))
            later = generate(run, steps=REPEAT_STEPS, prompts=prompts, seeds=seeds)
        with apply(pipe, config, steps=REPEAT_STEPS) as run:
            fresh = generate(run, steps=REPEAT_STEPS, prompts=prompts, seeds=seeds)
        assert torch.equal(later, fresh), f"{config}: max |diff| {(later - fresh).abs().max()}"


# ---------------------------------------------------------------------------------------------
# Identity settings (outside the search space, so patched directly) give the plain output


def test_deepcache_interval_1_is_identity(tiny_sd):
    base = baseline(tiny_sd, "tiny_sd")
    with DeepCache().patch(tiny_sd, {"cache_interval": 1, "cache_branch_id": 0},
                           tiny_sd.__call__, absorbed={}) as run:
        assert leftovers(tiny_sd) != []
        out = generate(run)
    assert torch.equal(out, base)
    assert leftovers(tiny_sd) == []


def test_tome_ratio_0_is_identity(tiny_sd):
    base = baseline(tiny_sd, "tiny_sd")
    with ToMe().patch(tiny_sd, {"ratio": 0.0, "max_downsample": 4}, tiny_sd.__call__,
                      absorbed={}) as run:
        assert any("ToMeBlock" in item for item in leftovers(tiny_sd))
        out = generate(run)
    assert torch.equal(out, base)
    assert leftovers(tiny_sd) == []


@pytest.mark.parametrize("params", [
    {"gate_step": 10, "sp_interval": 2, "fi_interval": 1, "warmup": 10},  # outside the space
    {"gate_step": 19, "sp_interval": 2, "fi_interval": 1, "warmup": 3},  # inside: caches, no reuse
])
def test_tgate_beyond_the_step_count_is_identity_and_rejected(tiny_sd, params):
    base = baseline(tiny_sd, "tiny_sd")
    with TGate().patch(tiny_sd, params, tiny_sd.__call__, absorbed={}) as run:
        out = generate(run)
        assert "pipe.tgate" in leftovers(tiny_sd)
    assert torch.equal(out, base)
    assert leftovers(tiny_sd) == []
    with pytest.raises(NoEffect):
        TGate().check(tiny_sd, params, steps=STEPS, absorbed={})


def test_tgate_without_effect_is_rejected_by_apply(tiny_sd):
    config = {"tgate": {"gate_step": 19, "sp_interval": 2, "fi_interval": 1, "warmup": 3}}
    with pytest.raises(NoEffect) as err:
        with apply(tiny_sd, config, steps=STEPS):
            pytest.fail("apply should have refused")
    one_line(err.value)
    assert leftovers(tiny_sd) == []
    # With DeepCache absorbed the combo still does something, so it is accepted.
    check(tiny_sd, {**config, "deepcache": DEEPCACHE}, steps=STEPS)
    # The same T-GATE settings do something with enough steps.
    check(tiny_sd, config, steps=20)


# ---------------------------------------------------------------------------------------------
# NoEffect / Unsupported detection


def test_tome_max_downsample_1_on_sdxl_has_no_effect(tiny_sdxl):
    config = {"tome": {"ratio": 0.5, "max_downsample": 1}}
    with pytest.raises(NoEffect) as err:
        check(tiny_sdxl, config, steps=STEPS)
    one_line(err.value)
    with pytest.raises(NoEffect):
        with apply(tiny_sdxl, config, steps=STEPS):
            pytest.fail("apply should have refused")
    assert leftovers(tiny_sdxl) == []
    # The claim behind the check: tomesd really merges nothing there.
    base = baseline(tiny_sdxl, "tiny_sdxl")
    with ToMe().patch(tiny_sdxl, config["tome"], tiny_sdxl.__call__, absorbed={}) as run:
        assert torch.equal(generate(run), base)
    # max_downsample 2 reaches SDXL's attention and is accepted.
    check(tiny_sdxl, {"tome": {"ratio": 0.5, "max_downsample": 2}}, steps=STEPS)


def test_tome_max_downsample_1_on_sd_is_accepted(tiny_sd):
    config = {"tome": {"ratio": 0.5, "max_downsample": 1}}
    check(tiny_sd, config, steps=STEPS)
    with apply(tiny_sd, config, steps=STEPS):
        assert leftovers(tiny_sd) != []
    assert leftovers(tiny_sd) == []


def test_deepcache_rejects_schedulers_that_repeat_timesteps(tiny_sd):
    from diffusers import HeunDiscreteScheduler

    original = tiny_sd.scheduler
    tiny_sd.scheduler = HeunDiscreteScheduler.from_config(original.config)
    try:
        with pytest.raises(Unsupported) as err:
            check(tiny_sd, {"deepcache": DEEPCACHE}, steps=STEPS)
        one_line(err.value)
        for combo in UNET_COMBOS:  # every combo contains DeepCache
            with pytest.raises(Unsupported):
                with apply(tiny_sd, config_of(combo), steps=STEPS):
                    pytest.fail("apply should have refused")
            assert leftovers(tiny_sd) == []
    finally:
        tiny_sd.scheduler = original
    check(tiny_sd, {"deepcache": DEEPCACHE}, steps=STEPS)


# ---------------------------------------------------------------------------------------------
# canonical


NATIVE = {"height": 128, "width": 128}


def test_canonical_tome_max_downsample(tiny_sd):
    def form(md):
        return canonical(tiny_sd, {"deepcache": DEEPCACHE,
                                   "tome": {"ratio": 0.3, "max_downsample": md}},
                         steps=STEPS, **NATIVE)

    assert form(3) == form(2)
    assert form(4) != form(2)
    assert form(1) != form(2)
    assert form(2)["deepcache"] == DEEPCACHE
    assert canonical(tiny_sd, {"tome": {"ratio": 0.3, "max_downsample": 3}},
                     steps=STEPS, **NATIVE) != \
        canonical(tiny_sd, {"tome": {"ratio": 0.4, "max_downsample": 3}}, steps=STEPS, **NATIVE)


def test_canonical_deepcache_interval_at_or_beyond_the_step_count():
    def form(interval, steps):
        return DeepCache().canonical(None, {"cache_interval": interval, "cache_branch_id": 1},
                                     steps=steps, **NATIVE)

    assert form(4, 4) == form(5, 4) == form(5, 5 - 1)
    assert form(3, 4) != form(4, 4)
    assert form(4, 5) != form(5, 5)


@pytest.mark.parametrize("pipe_name,size", [("tiny_sd", 128), ("tiny_sd", 72),
                                            ("tiny_sdxl", 128), ("tiny_sdxl", 72)])
def test_canonical_tome_forms_match_what_tomesd_computes(request, pipe_name, size):
    """Both directions, on real outputs: ToMe settings with equal canonical forms give
    bit-identical images, and settings with different forms give different images. At 72 px
    tomesd counts the 1/4-size blocks as downsampled 3x (max_downsample 2 and 3 differ), and
    at 128 px ratios 0.8 and 0.9 merge the same tokens (tomesd caps merging at 3/4 of a block's
    tokens)."""
    pipe = request.getfixturevalue(pipe_name)
    prompts, steps = PROMPTS[:1], 3
    groups: dict[str, torch.Tensor] = {}
    for ratio in ToMe.space["ratio"].values():
        for md in ToMe.space["max_downsample"].values():
            config = {"tome": {"ratio": ratio, "max_downsample": md}}
            try:
                check(pipe, config, steps=steps)
            except NoEffect:
                continue
            key = str(canonical(pipe, config, steps=steps, height=size, width=size))
            with apply(pipe, config, steps=steps) as run:
                out = generate(run, steps=steps, prompts=prompts, height=size, width=size)
            if key in groups:
                assert torch.equal(out, groups[key]), f"{config} differs from its twin {key}"
            else:
                assert not any(torch.equal(out, o) for o in groups.values()), \
                    f"{config} computes what another canonical form computes"
                groups[key] = out
    tome = ToMe()
    forms = {md: tome.canonical(pipe, {"ratio": 0.3, "max_downsample": md}, steps=steps,
                                height=size, width=size) for md in (2, 3)}
    if pipe_name == "tiny_sd":
        assert (forms[2] == forms[3]) == (size == 128)
    high = [tome.canonical(pipe, {"ratio": r, "max_downsample": 4}, steps=steps, height=size,
                           width=size) for r in (0.8, 0.9)]
    assert (high[0] == high[1]) == (size == 128)  # at 72 px a 5x5 block merges 20 or 21


# ---------------------------------------------------------------------------------------------
# Double patching


@pytest.mark.parametrize("outer", ["deepcache", "tome", "tgate"])
def test_second_apply_inside_an_apply_is_refused(tiny_sd, outer):
    base = baseline(tiny_sd, "tiny_sd")
    with apply(tiny_sd, {outer: PARAMS[outer]}, steps=STEPS) as run:
        patched = leftovers(tiny_sd)
        assert patched
        for inner in ({"deepcache": DEEPCACHE}, {outer: PARAMS[outer]}):
            with pytest.raises(AcceleratorError) as err:
                with apply(tiny_sd, inner, steps=STEPS):
                    pytest.fail("a second apply should have been refused")
            one_line(err.value)
            assert "already patched" in str(err.value)
        assert leftovers(tiny_sd) == patched  # the refused apply touched nothing
        out = generate(run, prompts=PROMPTS[:1])
    assert leftovers(tiny_sd) == []
    with apply(tiny_sd, {outer: PARAMS[outer]}, steps=STEPS) as run:
        assert torch.equal(generate(run, prompts=PROMPTS[:1]), out)  # the outer ran unharmed
    assert torch.equal(generate(tiny_sd), base)


# ---------------------------------------------------------------------------------------------
# Why `restoring` exists: tgate never undoes itself


def test_tgate_leaves_patches_behind_without_our_undo(tiny_sd):
    import tgate

    one = PROMPTS[:1]
    base = baseline(tiny_sd, "tiny_sd", prompts=one)
    with restoring(tiny_sd, TGate.footprint):
        tgate.TgateSDLoader(tiny_sd)
        generate(lambda **kw: tiny_sd.tgate(**kw, gate_step=2, sp_interval=2, fi_interval=1,
                                           warm_up=1), prompts=one)
        left = leftovers(tiny_sd)
        assert "pipe.tgate" in left
        assert any(item.endswith(".forward") for item in left)
        assert any(item.endswith(".cache") for item in left)
        # The trap: a plain call now runs tgate's last-step attention, which reuses the cached
        # (guidance-averaged, one-image) cross-attention: other images, and no error at all.
        assert not torch.equal(generate(tiny_sd, prompts=one), base)
    assert leftovers(tiny_sd) == []
    assert torch.equal(generate(tiny_sd, prompts=one), base)


def test_tgate_trap_cleaned_by_popping_as_notes_describe(tiny_sdxl):
    import tgate

    base = baseline(tiny_sdxl, "tiny_sdxl")
    tgate.TgateSDXLLoader(tiny_sdxl)
    try:
        generate(lambda **kw: tiny_sdxl.tgate(**kw, gate_step=2, sp_interval=2, fi_interval=1,
                                             warm_up=1))
        assert leftovers(tiny_sdxl) != []
    finally:
        for module in tiny_sdxl.unet.modules():
            if type(module).__name__ == "Attention":
                module.__dict__.pop("forward", None)
                module.__dict__.pop("cache", None)
        tiny_sdxl.__dict__.pop("tgate", None)
        tiny_sdxl.__dict__.pop("deepcache", None)
    assert leftovers(tiny_sdxl) == []
    assert torch.equal(generate(tiny_sdxl), base)


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("config,words", [
    ({"turbo": {}}, ["unknown accelerator", "turbo"]),
    ({"deepcache": DEEPCACHE, "xformers": {}}, ["unknown accelerator", "xformers"]),
    ({"deepcache": {"cache_interval": 2}}, ["cache_branch_id"]),
    ({"deepcache": {**DEEPCACHE, "skip_mode": "uniform"}}, ["skip_mode"]),
    ({"deepcache": {"cache_interval": 6, "cache_branch_id": 0}}, ["cache_interval", "6"]),
    ({"deepcache": {"cache_interval": 1, "cache_branch_id": 0}}, ["cache_interval", "1"]),
    ({"tome": {"ratio": 0.35, "max_downsample": 1}}, ["ratio", "0.35"]),
    ({"tome": {"ratio": 0.5, "max_downsample": 8}}, ["max_downsample", "8"]),
    ({"tgate": {**TGATE, "gate_step": 20}}, ["gate_step", "20"]),
    ({"tgate": {**TGATE, "warmup": 0}}, ["warmup", "0"]),
])
def test_invalid_configs_raise_one_line_errors(tiny_sd, config, words):
    for attempt in (lambda: check(tiny_sd, config, steps=STEPS),
                    lambda: apply(tiny_sd, config, steps=STEPS).__enter__()):
        with pytest.raises(AcceleratorError) as err:
            attempt()
        assert not isinstance(err.value, (NoEffect, Unsupported))
        message = one_line(err.value)
        for word in words:
            assert word in message
    assert leftovers(tiny_sd) == []


def test_canonical_validates_too(tiny_sd):
    with pytest.raises(AcceleratorError):
        canonical(tiny_sd, {"tome": {"ratio": 0.5}}, steps=STEPS, **NATIVE)


# ---------------------------------------------------------------------------------------------
# Search space


def test_search_space_is_exact():
    assert DeepCache.space["cache_interval"].values() == [2, 3, 4, 5]
    assert DeepCache.space["cache_branch_id"].values() == [0, 1, 2, 3]
    assert set(DeepCache.space) == {"cache_interval", "cache_branch_id"}
    assert TGate.space["gate_step"].values() == list(range(5, 20))
    assert TGate.space["sp_interval"].values() == list(range(2, 10))
    assert TGate.space["fi_interval"].values() == list(range(1, 6))
    assert TGate.space["warmup"].values() == [1, 2, 3]
    assert set(TGate.space) == {"gate_step", "sp_interval", "fi_interval", "warmup"}
    ratios = ToMe.space["ratio"].values()
    assert [repr(r) for r in ratios] == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8",
                                         "0.9"]
    assert all(type(r) is float for r in ratios)
    assert 0.30000000000000004 not in ratios
    assert ToMe.space["max_downsample"].values() == [1, 2, 3, 4]
    assert set(ToMe.space) == {"ratio", "max_downsample"}


def test_grid_sizes():
    assert grid_size("deepcache") == 16
    assert grid_size("deepcache+tome") == 576
    assert grid_size("deepcache+tgate") == 28800
    assert grid_size("deepcache+tome+tgate") == 28800 * 36
    assert set(grid("deepcache+tome")) == {"deepcache.cache_interval", "deepcache.cache_branch_id",
                                           "tome.ratio", "tome.max_downsample"}


def test_split_params_round_trips_a_grid_point(tiny_sd):
    flat = {key: values[len(values) // 2] for key, values in grid("deepcache+tome+tgate").items()}
    config = split_params(flat)
    assert set(config) == {"deepcache", "tome", "tgate"}
    assert config["tome"] == {"ratio": 0.5, "max_downsample": 3}
    assert accelerators.combo_of(config) == "deepcache+tome+tgate"
    check(tiny_sd, config, steps=20)  # a grid point is valid


# ---------------------------------------------------------------------------------------------
# `restoring` on its own (a toy pipeline and footprint: no generation needed)


def test_restoring_puts_back_exactly_what_was_there():
    import types

    unet = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.ReLU()))
    scheduler = types.SimpleNamespace(step=None)
    pipe = types.SimpleNamespace(unet=unet, scheduler=scheduler)
    linear, inner = unet[0], unet[1]
    footprint = Footprint(pipe=("helper", "method"), components={"scheduler": ("step", "sync")},
                          modules={"unet": ("forward", "cache", "settings")}, classes=("Swapped",))
    kept_forward = linear.forward  # an instance attribute that was there before: must stay
    linear.forward = kept_forward
    kept_hook = inner.register_forward_hook(lambda *a: None)
    pipe.helper = "theirs"
    before = traces(pipe, footprint)
    assert before == ["pipe.helper", "scheduler.step", "0.forward", "1: forward hooks"]

    class Swapped(torch.nn.ReLU):
        pass

    with pytest.raises(Boom):
        with restoring(pipe, footprint):
            linear.forward = lambda x: x
            inner.forward = lambda x: x
            inner.cache = torch.zeros(1)
            unet.settings = {}
            inner[0].__class__ = Swapped
            inner.register_forward_pre_hook(lambda *a: None)
            linear.register_forward_hook(lambda *a: None)
            pipe.method = "patched"
            pipe.helper = "replaced"
            scheduler.step = "patched"
            scheduler.sync = False
            assert "1.0: Swapped class" in traces(pipe, footprint)
            raise Boom("inside")
    assert traces(pipe, footprint) == before
    assert linear.__dict__["forward"] is kept_forward
    assert type(inner[0]) is torch.nn.ReLU
    assert list(inner._forward_hooks) == [kept_hook.id]
    assert not inner._forward_pre_hooks and not linear._forward_hooks
    assert pipe.helper == "theirs" and not hasattr(pipe, "method")
    assert scheduler.step is None and not hasattr(scheduler, "sync")
    other = types.SimpleNamespace(transformer=torch.nn.Linear(2, 2))  # no unet, no scheduler
    with restoring(other, footprint):
        other.helper = "patched"
        assert traces(other, footprint) == ["pipe.helper"]
    assert traces(other, footprint) == [] and not hasattr(other, "helper")


def test_distinct_points_count_what_tomesd_and_deepcache_compute(tiny_sd):
    from tuner.search.space import distinct_points

    # ToMe at 128 px: 9 ratios x 3 block sets (md 3 = md 2), less 0.9 = 0.8 at each: 24 forms.
    assert distinct_points(tiny_sd, "deepcache+tome", steps=50, **NATIVE) == 16 * 24
    # At 3 steps DeepCache intervals 3, 4 and 5 all run one full step.
    assert distinct_points(tiny_sd, "deepcache", steps=3, **NATIVE) == 2 * 4


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_deepcache_step_lookup_runs_the_same_steps_as_deepcaches_own(tiny_sd, ddim_after,
                                                                     scheduler):
    """Our dict lookup of the current step (one host sync per step on CUDA instead of one per
    timestep compared) gives exactly the images DeepCache's own list lookup gives."""
    import tuner.accelerators.deepcache as module

    ddim_after(tiny_sd, scheduler)
    for params in ({"cache_interval": 3, "cache_branch_id": 0},
                   {"cache_interval": 2, "cache_branch_id": 3}):
        with apply(tiny_sd, {"deepcache": params}, steps=COMBO_STEPS) as run:
            assert "_find_steps_once" in tiny_sd.unet.forward.__qualname__
            ours = generate(run, steps=COMBO_STEPS)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(module, "_find_steps_once", lambda pipe, helper: None)
            with apply(tiny_sd, {"deepcache": params}, steps=COMBO_STEPS) as run:
                theirs = generate(run, steps=COMBO_STEPS)
        assert torch.equal(ours, theirs)
