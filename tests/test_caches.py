"""diffusers' caches as accelerators: each changes the output, every undo is bit-identical, the
footprints are complete, MagCache calibrates once per key, refusals come before any work, and
`canonical` merges only settings that compute the same thing.

Runs on the shipped, trained `tiny-shapes-dit` (a FluxPipeline, 64 px) with its prompts encoded
once, 4 steps, latents out: the transformer is all that runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuner import accelerators
from tuner.accelerators import (COMBOS, NoEffect, Unsupported, apply, canonical, check, leftovers,
                                members)
from tuner.accelerators import magcache
from tuner.accelerators.cache import CACHES, flux_timesteps
from tuner.accelerators.taylorseer import TaylorSeer, computed_steps

WEIGHTS = Path(accelerators.__file__).parent.parent / "weights" / "tiny-shapes-dit"
STEPS = 4
# One setting per cache that changes the output of tiny-shapes-dit in 4 steps.
PARAMS = {
    "fbcache": {"threshold": 0.3},
    "taylorseer": {"cache_interval": 2, "disable_cache_before_step": 1, "max_order": 1,
                   "use_lite_mode": 1},
    "magcache": {"threshold": 0.3, "max_skip_steps": 2, "retention_ratio": 0.1},
    "fastercache": {"block_skip_range": 2, "skip_below": 9},
    "pab": {"block_skip_range": 2, "timestep_low": 0, "timestep_high": 10},
}


@pytest.fixture(scope="module")
def dit():
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(WEIGHTS, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        embeds, pooled, _ = pipe.encode_prompt(["a red circle", "a blue square"],
                                               prompt_2=None, max_sequence_length=32)
    pipe.embeds = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
    yield pipe
    assert leftovers(pipe) == []


def generate(pipe, run=None, *, steps: int = STEPS) -> torch.Tensor:
    with torch.inference_mode():
        return (run or pipe)(**pipe.embeds, num_inference_steps=steps, height=64, width=64,
                             output_type="latent",
                             generator=[torch.Generator("cpu").manual_seed(s) for s in (3, 4)]
                             ).images


_BASE: dict[int, torch.Tensor] = {}


def baseline(pipe, steps: int = STEPS) -> torch.Tensor:
    if steps not in _BASE:
        _BASE[steps] = generate(pipe, steps=steps)
    return _BASE[steps]


def test_every_cache_is_a_registered_one_member_combo():
    for name in CACHES:
        assert COMBOS[name] == (name,)
        assert accelerators.ACCELERATORS[name].denoisers == ("transformer",)
        # CUDA graphs replay a UNet's call: no cache combo gains them on a GPU
        assert members(name, device="cuda") == (name,)
    assert set(CACHES) <= set(accelerators.combos_for("transformer"))
    assert not set(CACHES) & set(accelerators.combos_for("unet"))
    assert accelerators.ALL_COMBOS == accelerators.combos_for("unet", only=True)


@pytest.mark.parametrize("name", CACHES)
def test_each_cache_changes_output_and_its_undo_is_bit_identical(dit, name):
    """Applied, the cache changes the latents (and a second generation in the same application
    gives the same ones); undone, the plain pipeline is bit-identical and nothing is left. The
    footprint covers everything the application set but the blocks' hook registries, and after
    the undo nothing differs from the plain pipeline (tests/footprints.py)."""
    from footprints import differences, snapshot, undeclared

    base = baseline(dit)
    first = snapshot(dit)
    generate(dit)
    second = snapshot(dit)
    with apply(dit, {name: PARAMS[name]}, steps=STEPS) as run:
        out = generate(dit, run)
        inside = snapshot(dit)
        assert torch.equal(generate(dit, run), out)
    assert not torch.equal(out, base)
    assert torch.equal(generate(dit), base)
    assert leftovers(dit) == []
    declared = accelerators.ACCELERATORS[name].footprint
    # The one thing not declared: the blocks' hook registries, which the pipeline's own
    # `cache_context` makes on the transformer too (declared, they would read as a patch left
    # on every plain pipeline). `attach` removes them itself, however it ends.
    left = undeclared((first, second), inside, declared)
    assert left and all(item.endswith("._diffusers_hook") for item in left)
    assert differences(second, snapshot(dit)) <= differences(first, second)


def test_magcache_calibrates_once_per_key_and_counts_its_seconds_apart(dit):
    """The first application at a step count calibrates (one generation that skips nothing),
    later ones reuse the ratios; another step count calibrates again. The calibration leaves
    the call's generators as they were: the first output equals one without calibration."""
    magcache.clear()
    params = PARAMS["magcache"]
    count, seconds, spent = (magcache.calibrations(), magcache.calibration_seconds(),
                             accelerators.capture_seconds())
    with apply(dit, {"magcache": params}, steps=STEPS) as run:
        calibrated = generate(dit, run)
    assert magcache.calibrations() == count + 1
    assert magcache.calibration_seconds() > seconds
    assert accelerators.capture_seconds() - spent >= magcache.calibration_seconds() - seconds
    with apply(dit, {"magcache": params}, steps=STEPS) as run:
        assert torch.equal(generate(dit, run), calibrated)
    assert magcache.calibrations() == count + 1
    with apply(dit, {"magcache": params}, steps=3) as run:
        generate(dit, run, steps=3)
    assert magcache.calibrations() == count + 2
    key = magcache.calibration_key(dit, steps=STEPS, height=64, width=64,
                                   guidance=magcache.guidance_of({}))
    assert {branch: len(r) for branch, r in magcache._ratios[key].items()} == {"cond": STEPS}


@pytest.mark.parametrize("name", CACHES)
def test_each_cache_under_a_solver_runs_at_the_solver_s_steps(dit, name):
    """Beside the solver (`X+steps`), a cache sees the step count the solver sets, not the one
    the caller asks for: called with 4 steps under a 3-step solver (the same scheduler), the
    output is bit-identical to the cache alone at 3 steps. Before the fix MagCache, applied
    outside the solver, read the caller's 4 steps: uncalibrated it raised ("magcache
    calibration recorded {'cond': 3} ratios in 4 steps"), so every `magcache+steps` trial
    crashed, and calibrated at 4 steps it ran configured for the wrong step count."""
    magcache.clear()
    config = {name: PARAMS[name], "solver": {"scheduler": "FlowMatchEuler", "steps": 3}}
    with apply(dit, config, steps=STEPS) as run:
        tuned = generate(dit, run, steps=STEPS)
    with apply(dit, {name: PARAMS[name]}, steps=3) as run:
        alone = generate(dit, run, steps=3)
    assert torch.equal(tuned, alone)
    assert not torch.equal(tuned, baseline(dit, 3))
    assert leftovers(dit) == []


def test_magcache_under_a_solver_gives_what_accelerate_gives(dit):
    """What a `magcache+steps` trial measures (the registry's application, called at the
    baseline's steps) is what `tuner.accelerate` runs for the same params, whichever ran first.
    Before the fix the trial's MagCache was configured for the baseline's 4 steps while 3 ran:
    calibrated at 4 steps by an earlier trial, its output differed from accelerate's."""
    import tuner

    params = PARAMS["magcache"]
    config = {"magcache": params, "solver": {"scheduler": "FlowMatchEuler", "steps": 3}}
    magcache.clear()
    with apply(dit, {"magcache": params}, steps=STEPS) as run:  # ratios for 4 steps cached
        generate(dit, run)
    with apply(dit, config, steps=STEPS) as run:
        tuned = generate(dit, run)
    with tuner.accelerate(dit, params=config) as fast, torch.inference_mode():
        applied = fast(**dit.embeds, height=64, width=64, output_type="latent",
                       generator=[torch.Generator("cpu").manual_seed(s) for s in (3, 4)]
                       ).images
    assert torch.equal(tuned, applied)
    assert leftovers(dit) == []


def test_magcache_calibrates_again_within_one_application_at_another_size_or_guidance(dit):
    """One application (an `Accelerated` handle) called at another size or guidance uses the
    ratios of that size and guidance: each call equals a fresh application's at its setting,
    and each new setting calibrates once. Before the fix `attach` calibrated again only when
    the step count changed, so the later calls ran on the first call's ratios."""
    params = PARAMS["magcache"]
    settings = ((64, 3.5), (32, 3.5), (64, 1.0))

    def at(run, size, guidance):
        with torch.inference_mode():
            return run(**dit.embeds, num_inference_steps=STEPS, height=size, width=size,
                       guidance_scale=guidance, output_type="latent",
                       generator=[torch.Generator("cpu").manual_seed(s) for s in (3, 4)]
                       ).images

    magcache.clear()
    count = magcache.calibrations()
    with apply(dit, {"magcache": params}, steps=STEPS) as run:
        together = [at(run, *setting) for setting in settings]
    assert magcache.calibrations() == count + len(settings)
    for setting, out in zip(settings, together):
        with apply(dit, {"magcache": params}, steps=STEPS) as run:
            assert torch.equal(at(run, *setting), out), setting
    assert magcache.calibrations() == count + len(settings)  # the cached ratios


def generate_guided(pipe, run=None, *, steps: int = 6) -> torch.Tensor:
    """Like `generate`, under true classifier-free guidance (the empty negative prompt at scale
    4), as the tuner runs the toy: two transformer calls a step, "cond" then "uncond"."""
    if "negative_prompt_embeds" not in pipe.embeds:
        with torch.inference_mode():
            negative, pooled, _ = pipe.encode_prompt(["", ""], prompt_2=None,
                                                     max_sequence_length=32)
        pipe.embeds.update(negative_prompt_embeds=negative,
                           negative_pooled_prompt_embeds=pooled)
    with torch.inference_mode():
        return (run or pipe)(**pipe.embeds, true_cfg_scale=4.0, num_inference_steps=steps,
                             height=64, width=64, output_type="latent",
                             generator=[torch.Generator("cpu").manual_seed(s) for s in (3, 4)]
                             ).images


def test_magcache_under_true_cfg_calibrates_each_branch_and_skips_by_its_own_ratios(dit):
    """Under true CFG FluxPipeline calls the transformer twice a step, in the cache contexts
    "cond" and "uncond", and diffusers keeps one MagCache state per context. Each branch is
    calibrated on its own (MagCache's reference code keeps separate ratios and accumulators for
    the conditional and unconditional calls) and computes exactly the steps its own ratios
    decide (`magcache.computed_steps`); the undo is bit-identical.

    Failed before the fix: the calibration recorded both branches' ratios in one list and
    refused ("magcache calibration recorded 12 ratios in 6 steps"), so every magcache trial on
    tiny-shapes-dit (run with true CFG) failed and none was feasible."""
    steps, params = 6, {"threshold": 0.3, "max_skip_steps": 2, "retention_ratio": 0.2}
    magcache.clear()
    base = generate_guided(dit, steps=steps)
    calls: list[list] = []  # per transformer call: [branch, whether its blocks computed]
    with apply(dit, {"magcache": params}, steps=steps) as run:
        out = generate_guided(dit, run, steps=steps)  # calibrates first
        hooks = [dit.transformer.register_forward_pre_hook(
                     lambda *_: calls.append(["cond" if len(calls) % 2 == 0 else "uncond",
                                              False])),
                 dit.transformer.transformer_blocks[0].norm1.register_forward_pre_hook(
                     lambda *_: calls[-1].__setitem__(1, True))]
        try:
            assert torch.equal(generate_guided(dit, run, steps=steps), out)
        finally:
            for hook in hooks:
                hook.remove()
    assert magcache.calibrations() >= 1
    ratios = next(iter(magcache._ratios.values()))
    assert sorted(ratios) == ["cond", "uncond"]
    assert all(len(r) == steps for r in ratios.values())
    assert len(calls) == 2 * steps
    skipped = 0
    for branch in ("cond", "uncond"):
        computed = tuple(i for i, (b, ran) in enumerate(c for c in calls if c[0] == branch)
                         if ran)
        assert computed == magcache.computed_steps(ratios[branch], params, steps=steps)
        skipped += steps - len(computed)
    assert skipped > 0 and not torch.equal(out, base)
    assert torch.equal(generate_guided(dit, steps=steps), base)
    assert leftovers(dit) == []


def attention_steps(pipe, run, generate_with, *, steps: int) -> dict[str, tuple[int, ...]]:
    """Per branch ("cond", "uncond"), the steps at which the first block's attention computed
    (its query projection ran) in one generation."""
    calls: list[list] = []  # per transformer call: [its branch, whether the attention ran]
    guided = generate_with is generate_guided

    def called(*_):
        calls.append(["uncond" if guided and len(calls) % 2 else "cond", False])

    hooks = [pipe.transformer.register_forward_pre_hook(called),
             pipe.transformer.transformer_blocks[0].attn.to_q.register_forward_pre_hook(
                 lambda *_: calls[-1].__setitem__(1, True))]
    try:
        generate_with(pipe, run, steps=steps)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(calls) == (2 if guided else 1) * steps
    return {branch: tuple(i for i, (_, ran) in enumerate(c for c in calls if c[0] == branch)
                          if ran)
            for branch in ("cond", "uncond") if any(c[0] == branch for c in calls)}


@pytest.mark.parametrize("name", ["pab", "fastercache"])
def test_pab_and_fastercache_under_true_cfg_keep_a_schedule_per_branch(dit, name):
    """Under true CFG FluxPipeline calls the transformer twice a step ("cond", then "uncond"),
    and diffusers 0.42.1 keeps one PAB or FasterCache state for both: its call counter then
    counts branches, not steps, and a skipped call reuses the other branch's attention. Each
    branch now keeps a state of its own (`cache.BranchStates`), so each computes its attention
    at exactly the steps a generation without guidance computes it, and the undo is
    bit-identical.

    Failed before the fix: at block_skip_range 2 the conditional branch computed its attention
    at every step and the unconditional one only at the first (outside the range), taking the
    conditional branch's attention at every other step."""
    steps, config = 6, {name: PARAMS[name]}
    base = generate_guided(dit, steps=steps)
    with apply(dit, config, steps=steps) as run:
        alone = attention_steps(dit, run, generate, steps=steps)["cond"]
        both = attention_steps(dit, run, generate_guided, steps=steps)
        out = generate_guided(dit, run, steps=steps)
    assert 0 < len(alone) < steps
    assert both == {"cond": alone, "uncond": alone}
    assert not torch.equal(out, base)
    assert torch.equal(generate_guided(dit, steps=steps), base)
    assert leftovers(dit) == []


@pytest.mark.parametrize("name", CACHES)
def test_each_cache_is_refused_on_a_unet_with_its_reason(tiny_sd, name):
    on_unet = accelerators.ACCELERATORS[name].on_unet
    with pytest.raises(Unsupported, match="has a UNet") as raised:
        check(tiny_sd, {name: PARAMS[name]}, steps=STEPS)
    assert on_unet in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(Unsupported):
        with apply(tiny_sd, {name: PARAMS[name]}, steps=STEPS):
            pass
    assert leftovers(tiny_sd) == []


@pytest.fixture(scope="module")
def tiny_pixart():
    from tuner import presets

    return presets.build_pipeline("tiny-pixart-sigma")


@pytest.mark.parametrize("name", CACHES)
def test_each_cache_on_a_transformer_without_enable_cache_names_it(tiny_pixart, name):
    """PixArt-Σ has a transformer, one without diffusers' CacheMixin: the refusal says so (it
    said "PixArtSigmaPipeline has no transformer")."""
    import diffusers

    with pytest.raises(Unsupported) as raised:
        check(tiny_pixart, {name: PARAMS[name]}, steps=STEPS)
    assert str(raised.value) == (
        f"{name} needs a diffusion transformer with diffusers' caches; PixArtSigmaPipeline's "
        f"transformer, PixArtTransformer2DModel, lacks CacheMixin (enable_cache) in diffusers "
        f"{diffusers.__version__}")
    assert leftovers(tiny_pixart) == []


@pytest.mark.parametrize("pair", [("fbcache", "taylorseer"), ("magcache", "pab"),
                                  ("fastercache", "fbcache")])
def test_two_caches_are_refused_before_any_work(dit, pair):
    config = {name: PARAMS[name] for name in pair}
    with pytest.raises(Unsupported, match="one cache per transformer"):
        check(dit, config, steps=STEPS)
    with pytest.raises(Unsupported):
        with apply(dit, config, steps=STEPS):
            pass
    assert leftovers(dit) == [] and not dit.transformer.is_cache_enabled


def test_taylorseer_that_predicts_nothing_is_rejected(dit):
    params = {**PARAMS["taylorseer"], "disable_cache_before_step": 4}
    with pytest.raises(NoEffect, match="reuses nothing in 4 steps"):
        check(dit, {"taylorseer": params}, steps=4)


def test_schedule_canonical_forms_tell_different_step_sets_apart(dit):
    """PAB ranges and FasterCache thresholds that hold different steps stay apart."""
    def form(name, **knobs):
        return canonical(dit, {name: {**PARAMS[name], **knobs}}, steps=STEPS, height=64, width=64)

    pab = {tuple(form("pab", timestep_high=h)["pab"]["steps_within"]) for h in (6, 7, 8, 9, 10)}
    assert pab == {(3,), (2, 3), (1, 2, 3)}
    faster = {tuple(form("fastercache", skip_below=b)["fastercache"]["steps_within"])
              for b in range(3, 10)}
    assert faster == {(), (3,), (2, 3), (1, 2, 3)}
    assert form("pab", block_skip_range=2) != form("pab", block_skip_range=3)


@pytest.mark.parametrize("steps", [4, 7, 28])
def test_taylorseer_canonical_merges_exactly_the_same_schedules(steps):
    """Two settings share a canonical form exactly when they compute the same steps (with the
    same order and mode)."""
    seer = TaylorSeer()
    knobs = {k: v.values() for k, v in TaylorSeer.space.items()}
    points = [{"cache_interval": i, "disable_cache_before_step": b, "max_order": 1,
               "use_lite_mode": 0}
              for i in knobs["cache_interval"] for b in knobs["disable_cache_before_step"]]
    for a in points:
        for b in points:
            same = (seer.canonical(None, a, steps=steps, height=64, width=64)
                    == seer.canonical(None, b, steps=steps, height=64, width=64))
            assert same == (computed_steps(a, steps=steps) == computed_steps(b, steps=steps))


@pytest.mark.parametrize("steps", [3, 4])
def test_flux_timesteps_are_the_ones_the_pipeline_runs(dit, steps):
    generate(dit, steps=steps)
    assert flux_timesteps(dit, steps=steps, height=64, width=64) == \
        dit.scheduler.timesteps.tolist()
    assert flux_timesteps(object(), steps=steps, height=64, width=64) is None


def test_settings_with_one_canonical_form_compute_the_same(dit):
    """At 4 steps (timesteps 1000, 826, 613, 345 here): TaylorSeer intervals 2 and 8 (full
    steps 0 and 2 either way), MagCache retention 0.2 and 0.3 (one protected step) and
    max_skip_steps 3 and 6 (at most 3 steps after it), PAB ranges (0, 900) and (300, 1000)
    (steps 1-3 inside either way), FasterCache below 700 and 800 (steps 2-3): bit-identical
    latents, and one canonical form."""
    pairs = [("taylorseer", {"cache_interval": 2}, {"cache_interval": 8}),
             ("magcache", {"retention_ratio": 0.2, "max_skip_steps": 3},
              {"retention_ratio": 0.3, "max_skip_steps": 6}),
             ("pab", {"timestep_low": 0, "timestep_high": 9},
              {"timestep_low": 3, "timestep_high": 10}),
             ("fastercache", {"skip_below": 7}, {"skip_below": 8})]
    for name, a, b in pairs:
        first, second = ({name: {**PARAMS[name], **x}} for x in (a, b))
        assert (canonical(dit, first, steps=STEPS, height=64, width=64)
                == canonical(dit, second, steps=STEPS, height=64, width=64))
        outs = []
        for config in (first, second):
            with apply(dit, config, steps=STEPS) as run:
                outs.append(generate(dit, run))
        assert torch.equal(*outs)
        assert not torch.equal(outs[0], baseline(dit))
