"""The evaluator end to end on tiny-sd with tiny-clip (CPU, 4 steps, batches of 2)."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import pytest
import torch

from tuner import metrics
from tuner.accelerators import ACCELERATORS, NoEffect, apply, leftovers, register
from tuner.evaluator import Evaluator
from tuner.metrics import CLIPScorer, to_uint8
from tuner.pipelines import native_size
from tuner.prompts import BUILTIN_PROMPTS, choose_prompts
from tuner.record import Pruned
from tuner.setting import Setting
from tuner.stats import relative_loss_interval
from tuner.timing import Run, StepTimer, TimingPolicy

STEPS = 4
PLAN = TimingPolicy(min_pairs=2, max_pairs=2)
DEEPCACHE = {"deepcache": {"cache_interval": 2, "cache_branch_id": 0}}


def setting_for(pipe, name: str, **overrides) -> Setting:
    height, width = native_size(pipe)
    values = dict(pipe=name, scheduler="DDIM", steps=STEPS, height=height, width=width,
                  batch_size=2, num_samples=4)
    values.update(overrides)
    return Setting(**values)


@pytest.fixture(scope="module")
def scorer():
    return CLIPScorer.from_preset("tiny-clip")


@pytest.fixture(scope="module")
def setting(tiny_sd):
    return setting_for(tiny_sd, "tiny-sd")


@pytest.fixture(scope="module")
def prompts(setting):
    # Seed 0: with tiny-clip's random weights one of these images scores above 0 (most score 0,
    # the clamped cosine), so the relative CLIP loss is not the 0 of its zero-baseline guard.
    return choose_prompts(BUILTIN_PROMPTS, setting.num_samples, seed=0)


@pytest.fixture(scope="module")
def evaluator(tiny_sd, setting, prompts, scorer):
    ev = Evaluator(tiny_sd, setting, prompts, scorer, timing=PLAN, baseline_repeats=2)
    ev.measure_baseline()
    return ev


@pytest.fixture(scope="module")
def deepcache_eval(evaluator):
    result = evaluator.evaluate(DEEPCACHE)
    assert leftovers(evaluator.pipe) == []
    return result


def test_each_plain_run_times_the_batch_of_the_accelerated_run_it_closes(tiny_sd, scorer,
                                                                         monkeypatch):
    """The timed runs take the quality set's full batches in turn (the warm-up's excepted), and
    the plain run closing a bracket generates the same batch as the accelerated run in it."""
    setting = setting_for(tiny_sd, "tiny-sd", num_samples=6)  # batches 0 (warm-up), 1 and 2
    ev = Evaluator(tiny_sd, setting, choose_prompts(BUILTIN_PROMPTS, 6, seed=0), scorer,
                   timing=TimingPolicy(min_pairs=3, max_pairs=3), baseline_repeats=2)
    ev.measure_baseline()
    runs = []
    plain, accelerated = ev._plain, ev._accelerated
    monkeypatch.setattr(ev, "_plain", lambda k, seconds: runs.append(("plain", k)) or
                        plain(k, seconds))
    monkeypatch.setattr(ev, "_accelerated", lambda config, batches, *a, **kw: runs.append(
        ("accelerated", *batches)) or accelerated(config, batches, *a, **kw))
    ev.evaluate(DEEPCACHE)
    assert runs[0] == ("accelerated", 0)  # the warm-up
    brackets = [(a, p) for a, p in zip(runs, runs[1:]) if a[0] == "accelerated" != p[0]]
    assert len(brackets) >= 3
    assert all(a[1] == p[1] for a, p in brackets)
    assert [a[1] for a, _ in brackets[:2]] == [2, 1]  # in turn (1 opens, when a plain run must)
    assert leftovers(tiny_sd) == []


def direct_images(pipe, setting: Setting, prompts, run=None) -> torch.Tensor:
    """What the evaluator should produce: same prompts, batches and per-image seeds."""
    run = run or pipe
    out = []
    for start in range(0, setting.num_samples, setting.batch_size):
        batch = prompts[start:start + setting.batch_size]
        seeds = range(setting.seed + start, setting.seed + start + len(batch))
        with torch.inference_mode():
            images = run(prompt=list(batch), num_inference_steps=setting.steps,
                         guidance_scale=setting.guidance_scale, height=setting.height,
                         width=setting.width, output_type="pt",
                         generator=[torch.Generator("cpu").manual_seed(s) for s in seeds]).images
        out.append(to_uint8(images))
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# Baseline


def test_baseline_images(tiny_sd, evaluator, setting, prompts):
    base = evaluator.baseline
    assert base.images.dtype == torch.uint8
    assert base.images.shape == (setting.num_samples, 3, setting.height, setting.width)
    assert torch.equal(base.images, direct_images(tiny_sd, setting, prompts))
    assert len(base.latency.samples) == 2
    assert all(math.isfinite(x) and x > 0 for x in base.latency.samples)
    assert leftovers(tiny_sd) == []


def test_baseline_clip_score_is_bounded_and_deterministic(tiny_sd, evaluator, setting, prompts):
    base = evaluator.baseline
    assert 0.0 <= base.clip_score <= 100.0
    assert len(base.clip_scores) == setting.num_samples
    assert all(0.0 <= s <= 100.0 for s in base.clip_scores)
    assert base.clip_score == pytest.approx(sum(base.clip_scores) / len(base.clip_scores))
    assert base.clip_score > 0
    other = Evaluator(tiny_sd, setting, prompts, CLIPScorer.from_preset("tiny-clip"),
                      timing=PLAN, baseline_repeats=1)
    again = other.measure_baseline()
    assert torch.equal(again.images, base.images)
    assert again.clip_score == base.clip_score
    assert again.clip_scores == base.clip_scores


# ---------------------------------------------------------------------------------------------
# One configuration


def test_deepcache_evaluation_numbers(evaluator, deepcache_eval, setting):
    e = deepcache_eval
    assert e.config == DEEPCACHE and e.pruned is None
    speed, quality = e.speed, e.quality
    assert speed.value > 0 and math.isfinite(speed.value)
    assert speed.speedup.low <= speed.value <= speed.speedup.high
    assert speed.pairs + speed.rejected == len(speed.ratios) >= PLAN.min_pairs
    assert speed.baseline_latency > 0
    assert speed.baseline_latency / speed.latency == pytest.approx(speed.value)
    assert quality.images == setting.num_samples
    assert math.isfinite(quality.psnr)
    assert 0.0 < quality.ssim <= 1.0
    assert 0.0 <= quality.clip_score <= 100.0
    assert evaluator.baseline.clip_score > 0
    # The loss comes from paired per-image scores.
    scores = evaluator.scorer.score(e.sample_images, evaluator.prompts)
    expected = relative_loss_interval(evaluator.baseline.clip_scores, [float(x) for x in scores])
    got = quality.clip_loss
    assert (got.value, got.low, got.high) == pytest.approx(
        (expected.value, expected.low, expected.high), rel=1e-4)  # scored batch by batch
    assert quality.loss == quality.clip_loss  # metric="clip"
    assert e.sample_images.dtype == torch.uint8
    assert set(e.seconds) >= {"accelerated", "plain", "apply_undo", "scoring", "total"}


def test_evaluated_images_equal_a_direct_generation_under_apply(tiny_sd, evaluator,
                                                                 deepcache_eval, setting,
                                                                 prompts):
    assert len(deepcache_eval.sample_images) == setting.num_samples  # sample_count 4 = all
    with apply(tiny_sd, DEEPCACHE, steps=setting.steps, seed=setting.seed) as run:
        expected = direct_images(tiny_sd, setting, prompts, run)
    assert torch.equal(deepcache_eval.sample_images, expected)
    assert not torch.equal(expected, evaluator.baseline.images)
    # Quality numbers are those of these images against the baseline.
    ssim = float(metrics.ssim(expected, evaluator.baseline.images).mean())
    assert deepcache_eval.quality.ssim == pytest.approx(ssim, rel=1e-12)


def test_tome_evaluation_matches_direct_generation(tiny_sd, evaluator, setting, prompts):
    """tome draws random numbers: the evaluator's images must still be reproducible."""
    config = {"tome": {"ratio": 0.5, "max_downsample": 1}}
    result = evaluator.evaluate(config)
    with apply(tiny_sd, config, steps=setting.steps, seed=setting.seed) as run:
        expected = direct_images(tiny_sd, setting, prompts, run)
    assert torch.equal(result.sample_images, expected)


def test_pipeline_is_plain_after_evaluate(tiny_sd, evaluator, deepcache_eval, setting, prompts):
    assert leftovers(tiny_sd) == []
    assert type(tiny_sd.scheduler).__name__ == "DDIMScheduler"
    assert torch.equal(direct_images(tiny_sd, setting, prompts), evaluator.baseline.images)


def test_ssim_metric_loss(tiny_sd, evaluator, setting, prompts, scorer):
    ev = Evaluator(tiny_sd, setting, prompts, scorer, metric="ssim", timing=PLAN)
    ev.baseline = evaluator.baseline  # the same baseline; no need to measure it again
    e = ev.evaluate(DEEPCACHE)
    assert e.quality.loss.value == pytest.approx(1.0 - e.quality.ssim)
    assert e.quality.loss != e.quality.clip_loss


# ---------------------------------------------------------------------------------------------
# Errors leave the pipeline plain


def test_evaluate_that_raises_no_effect_leaves_sdxl_plain(tiny_sdxl, scorer):
    setting = setting_for(tiny_sdxl, "tiny-sdxl", batch_size=1, num_samples=1)
    ev = Evaluator(tiny_sdxl, setting, ["a red car"], scorer,
                   timing=TimingPolicy(min_pairs=1, max_pairs=1), baseline_repeats=1)
    # SDXL's embeddings (pooled ones included), encoded once, give what the prompt gives.
    assert torch.equal(ev.measure_baseline().images,
                       direct_images(tiny_sdxl, setting, ["a red car"]))
    with pytest.raises(NoEffect):
        ev.evaluate({"deepcache": DEEPCACHE["deepcache"],
                     "tome": {"ratio": 0.5, "max_downsample": 1}})
    assert leftovers(tiny_sdxl) == []


def test_evaluate_that_raises_midway_leaves_the_pipeline_plain(tiny_sd, evaluator, setting,
                                                               prompts, scorer, monkeypatch):
    ev = Evaluator(tiny_sd, setting, prompts, scorer, timing=PLAN)
    ev.baseline = evaluator.baseline
    original = ev._generate
    calls = []

    def failing(run, batch):
        if run is not tiny_sd:
            calls.append(run)
            if len(calls) == 2:  # the first timed accelerated run
                raise RuntimeError("out of memory (simulated)")
        return original(run, batch)

    monkeypatch.setattr(ev, "_generate", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        ev.evaluate({"deepcache": DEEPCACHE["deepcache"],
                     "tgate": {"gate_step": 5, "sp_interval": 2, "fi_interval": 1, "warmup": 1}})
    assert leftovers(tiny_sd) == []
    assert torch.equal(direct_images(tiny_sd, setting, prompts[:2] + prompts[2:]),
                       evaluator.baseline.images)


# ---------------------------------------------------------------------------------------------
# Uneven batches, argument checks


def test_num_samples_not_divisible_by_batch_size(tiny_sd, scorer):
    setting = setting_for(tiny_sd, "tiny-sd", num_samples=3)
    prompts = choose_prompts(BUILTIN_PROMPTS, 3, seed=5)
    ev = Evaluator(tiny_sd, setting, prompts, scorer, timing=PLAN, sample_count=3)
    base = ev.measure_baseline()
    assert base.images.shape[0] == 3
    assert [b["count"] for b in ev._batches] == [2, 1]
    e = ev.evaluate(DEEPCACHE)
    assert e.quality.images == 3
    assert e.sample_images.shape[0] == 3
    with apply(tiny_sd, DEEPCACHE, steps=setting.steps, seed=setting.seed) as run:
        expected = direct_images(tiny_sd, setting, prompts, run)
    assert torch.equal(e.sample_images, expected)
    assert leftovers(tiny_sd) == []


class BatchClock:
    """A fake clock: a batch of n images takes n seconds plainly and n / 2 accelerated, once
    `times` has put it on an evaluator's batches."""

    def __init__(self):
        self.t = 0.0

    def now(self):
        return self.t

    def sync(self):
        pass

    def times(self, ev, plain, monkeypatch, *, after=lambda run: None):
        """Advance on each batch `ev` generates (`plain`: its plain pipeline); `after(run)` is
        called after each batch, to spend more."""
        original = ev._generate

        def generate(run, batch):
            images = original(run, batch)
            self.t += batch["count"] * (1.0 if run is plain else 0.5)
            after(run)
            return images

        monkeypatch.setattr(ev, "_generate", generate)


def test_speedup_is_unbiased_with_an_uneven_last_batch(tiny_sd, scorer, monkeypatch):
    setting = setting_for(tiny_sd, "tiny-sd", num_samples=5, steps=2)  # batches 2, 2, 1
    prompts = choose_prompts(BUILTIN_PROMPTS, 5, seed=5)
    clock = BatchClock()
    ev = Evaluator(tiny_sd, setting, prompts, scorer, clock=clock, timing=PLAN,
                   baseline_repeats=1)
    clock.times(ev, tiny_sd, monkeypatch)
    e = ev.evaluate(DEEPCACHE)
    # Every accelerated batch is exactly twice as fast as the same batch run plainly.
    assert e.speed.ratios == (2.0,) * 2
    assert e.speed.value == pytest.approx(2.0)


class FakeSteps(StepTimer):
    """Step times on a fake clock: each call of the denoiser advances it by `seconds(call)`
    (call: its index within the run); `report=False` gives runs no step times (runs are
    then judged whole)."""

    def __init__(self, clock, seconds, *, report=True):
        super().__init__("cpu")
        self.clock, self.seconds, self.report = clock, seconds, report
        self.call = 0

    def _mark(self):
        return self.clock.t

    @contextlib.contextmanager
    def watching(self, module):
        self.call = 0

        def advance(*_):
            self.clock.t += self.seconds(self.call)
            self.call += 1

        hook = module.register_forward_hook(advance)  # before the timer's end mark
        try:
            with super().watching(module) as stepped:
                yield stepped if self.report else (lambda run: run)
        finally:
            hook.remove()


@pytest.mark.parametrize("burst,report", [(False, True), (True, True), (True, False)])
def test_a_burst_over_some_steps_of_the_plain_runs_no_longer_moves_the_speedup(
        tiny_sd, scorer, monkeypatch, burst, report):
    """Plain steps take 0.1 s, DeepCache N=2's full steps 0.1 s and its shallow ones 0.02 s,
    each run 0.05 s more besides; from the third plain run on, a burst slows one step of every
    plain run 2x (a different step each time). Judged whole (no step times: as before step
    times were taken), every plain run agrees with the others and the speedup reads 1.90x for
    1.55x; judged step by step, exact."""
    setting = setting_for(tiny_sd, "tiny-sd", num_samples=4, steps=4)
    prompts = choose_prompts(BUILTIN_PROMPTS, 4, seed=5)
    clock, state = BatchClock(), {"plain": True, "runs": 0}

    def seconds(call):
        if state["plain"]:
            slowed = burst and state["runs"] >= 3 and call == state["runs"] % 4
            return 0.1 * (2.0 if slowed else 1.0)
        return 0.1 if call % 2 == 0 else 0.02

    ev = Evaluator(tiny_sd, setting, prompts, scorer, clock=clock,
                   timing=dataclasses.replace(PLAN, steps=True),
                   step_timer=FakeSteps(clock, seconds, report=report))
    original = ev._generate

    def generate(run, batch):
        state["plain"] = run is tiny_sd
        state["runs"] += state["plain"]
        images = original(run, batch)
        clock.t += 0.05
        return images

    monkeypatch.setattr(ev, "_generate", generate)
    e = ev.evaluate(DEEPCACHE)
    truth = (4 * 0.1 + 0.05) / (2 * 0.1 + 2 * 0.02 + 0.05)
    if report:
        assert e.speed.value == pytest.approx(truth, rel=1e-9)
    else:
        assert e.speed.value == pytest.approx((4 * 0.1 + 0.15) / (0.24 + 0.05), rel=1e-9)
    assert leftovers(tiny_sd) == []


def test_the_device_step_timer_gives_each_denoiser_call_its_seconds(tiny_sd, setting, prompts,
                                                                    scorer):
    """On the CPU (perf_counter), where a step timer is asked for, every timed run carries
    one step time per denoising step, within the run's seconds, plain and accelerated alike; the
    hooks are gone after. Unasked, runs on the CPU carry none (`takes_step_times`)."""
    policy = dataclasses.replace(PLAN, steps=True)
    assert Evaluator(tiny_sd, setting, prompts, scorer, timing=policy).step_timer is None
    ev = Evaluator(tiny_sd, setting, prompts, scorer, timing=policy, step_timer=StepTimer("cpu"))
    run = ev._plain(ev._timed[0], {})
    assert len(run.steps) == setting.steps and 0 < sum(run.steps) <= run.seconds
    accelerated = ev._accelerated(DEEPCACHE, [ev._timed[0]], {}, {})
    assert len(accelerated.steps) == setting.steps
    assert leftovers(tiny_sd) == []


def test_runs_whose_skipped_steps_depend_on_the_data_carry_no_step_times(tiny_sd, setting,
                                                                         prompts, scorer):
    """An accelerator that decides from each batch which steps to skip (FirstBlockCache) runs
    other computations at the same step of two runs, which take other batches: its runs are
    judged whole. Here DeepCache declared so: its runs carry no step times, the plain ones
    theirs. Failed before the fix: every accelerated run carried its step times."""
    assert ACCELERATORS["fbcache"].skips_by_data and not ACCELERATORS["deepcache"].skips_by_data

    class ByData(ACCELERATORS["deepcache"]):
        name, skips_by_data = "deepcache-by-data", True

    register(ByData)
    try:
        ev = Evaluator(tiny_sd, setting, prompts, scorer,
                       timing=dataclasses.replace(PLAN, steps=True), step_timer=StepTimer("cpu"))
        params = DEEPCACHE["deepcache"]
        assert len(ev._accelerated(DEEPCACHE, [0], {}, {}).steps) == setting.steps
        assert ev._accelerated({ByData.name: params}, [0], {}, {}).steps == ()
        assert len(ev._plain(0, {}).steps) == setting.steps
    finally:
        ACCELERATORS.pop(ByData.name)


def test_argument_errors(tiny_sd, setting, prompts, scorer):
    with pytest.raises(ValueError, match="prompts"):
        Evaluator(tiny_sd, setting, prompts[:3], scorer)
    with pytest.raises(ValueError, match="prompts"):
        Evaluator(tiny_sd, setting, prompts + ["one more"], scorer)
    with pytest.raises(ValueError, match="metric"):
        Evaluator(tiny_sd, setting, prompts, scorer, metric="lpips")
    assert leftovers(tiny_sd) == []


# ---------------------------------------------------------------------------------------------
# Speed first, quality only where it can matter


class CountingClock(BatchClock):
    """BatchClock that also counts generations by kind."""

    def __init__(self, speedup: float):
        super().__init__()
        self.speedup, self.runs = speedup, {"plain": 0, "accelerated": 0}


def counted(ev, tiny_sd, clock, monkeypatch):
    original = ev._generate

    def generate(run, batch):
        images = original(run, batch)
        kind = "plain" if run is tiny_sd else "accelerated"
        clock.runs[kind] += 1
        clock.t += batch["count"] * (1.0 if kind == "plain" else 1.0 / clock.speedup)
        return images

    monkeypatch.setattr(ev, "_generate", generate)


def test_a_configuration_that_cannot_be_the_answer_stops_before_its_quality(
        tiny_sd, scorer, monkeypatch):
    setting = setting_for(tiny_sd, "tiny-sd", num_samples=8, batch_size=1, steps=2)
    prompts = choose_prompts(BUILTIN_PROMPTS, 8, seed=5)
    clock = CountingClock(speedup=1.5)
    ev = Evaluator(tiny_sd, setting, prompts, scorer, clock=clock,
                   timing=TimingPolicy(min_pairs=3, max_pairs=6), baseline_repeats=1)
    counted(ev, tiny_sd, clock, monkeypatch)
    ev.measure_baseline()
    clock.runs["plain"] = 0
    # 1.5x exactly, but its interval includes the drift between moments (6 % until learned,
    # BENCHMARKS.md "Coverage"): up to 2.16 at 3 pairs with nothing learned yet
    e = ev.evaluate(DEEPCACHE, slower_than=2.5)
    assert e.pruned == Pruned.SLOW
    assert e.speed.value == pytest.approx(1.5) and e.speed.speedup.high < 2.5
    # the warm-up and 3 timed runs: the other 4 quality batches were never generated
    assert clock.runs["accelerated"] == 4
    assert e.quality.images == 4
    clock.runs = {"plain": 0, "accelerated": 0}
    full = ev.evaluate(DEEPCACHE, slower_than=1.2)
    assert full.pruned is None and full.quality.images == 8
    assert clock.runs["accelerated"] == 8
    assert leftovers(tiny_sd) == []


def test_a_loss_confidently_over_budget_stops_the_evaluation(tiny_sd, scorer, monkeypatch):
    setting = setting_for(tiny_sd, "tiny-sd", num_samples=12, batch_size=1, steps=3)
    prompts = choose_prompts(BUILTIN_PROMPTS, 12, seed=5)
    clock = CountingClock(speedup=2.0)
    ev = Evaluator(tiny_sd, setting, prompts, scorer, metric="ssim", clock=clock,
                   timing=TimingPolicy(min_pairs=2, max_pairs=2), baseline_repeats=1)
    counted(ev, tiny_sd, clock, monkeypatch)
    ev.measure_baseline()
    clock.runs["plain"] = 0
    config = {"deepcache": {"cache_interval": 3, "cache_branch_id": 0}}
    everything = ev.evaluate(config)
    assert everything.quality.images == 12 and everything.pruned is None
    assert everything.quality.loss.low > 0.001  # clearly over a 0.1 % budget
    clock.runs = {"plain": 0, "accelerated": 0}
    stopped = ev.evaluate(config, loss_budget=0.001)
    assert stopped.pruned == Pruned.LOSS
    assert stopped.quality.images < 12
    assert clock.runs["accelerated"] < 12
    assert stopped.quality.loss.value > 0.001
    clock.runs = {"plain": 0, "accelerated": 0}
    kept = ev.evaluate(config, loss_budget=0.5)  # far within a loose budget: nothing stops
    assert kept.pruned is None and kept.quality.images == 12


def test_capture_seconds_are_counted_apart(tiny_sd, scorer, monkeypatch):
    """CUDA graphs capture within a configuration's first run, or within a timed one when the
    capture cache dropped them: those seconds are recorded as "capture", not as its speed.
    Failed at 653c5be: the timed run that captured measured 0.5x for a 2x configuration."""
    from tuner import accelerators

    setting = setting_for(tiny_sd, "tiny-sd", num_samples=4, steps=2)  # batches 2, 2
    prompts = choose_prompts(BUILTIN_PROMPTS, 4, seed=5)
    clock, spent, accelerated = BatchClock(), [0.0], [0]
    ev = Evaluator(tiny_sd, setting, prompts, scorer, clock=clock, timing=PLAN,
                   baseline_repeats=1)

    def capture(run):
        if run is not tiny_sd:
            accelerated[0] += 1
            if accelerated[0] in (1, 3):  # the warm-up, and the second timed run
                clock.t += 3.0
                spent[0] += 3.0

    clock.times(ev, tiny_sd, monkeypatch, after=capture)
    monkeypatch.setattr(accelerators, "capture_seconds", lambda: spent[0])
    e = ev.evaluate(DEEPCACHE)
    assert accelerated[0] >= 3
    assert set(e.speed.ratios) == {2.0}
    assert e.seconds["capture"] == pytest.approx(6.0)
    assert e.seconds["accelerated"] == pytest.approx(1.0 * accelerated[0])
    assert e.seconds["apply_undo"] == pytest.approx(0.0)
