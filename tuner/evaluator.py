"""Evaluating accelerator configurations against the plain pipeline.

The pipeline is loaded once. Its baseline (images, per-image CLIP scores, latency) is measured
once; every configuration is then applied, run on the same prompts with the same per-image
seeds, and undone. A configuration is evaluated speed first:

1. speed: a warm-up batch, then bracketed timed pairs until the speedup is known to the
   policy's screening precision (timing.py). A configuration that cannot change the answer (its
   speedup interval lies below `slower_than`) stops here, pruned, before any quality work;
2. quality: the remaining prompts batch by batch (the timed batches' images count too), with a
   sequential test after each batch that stops a configuration whose loss is confidently over
   budget (stats.sequential_confidence).

`race` measures a few configurations again against each other, interleaved, to confirm an
answer before it is written (tuner/search/confirm.py decides who takes part and who drops out).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import accelerators, interrupts, metrics
from .accelerators import Config
from .families import family_of, supported
from .record import Pruned, QualityEstimate
from .search.measurer import Evaluation, IdenticalOutput, Measurer, Race
from .search.space import canonical_key, distinct_points
from .setting import LOSS_METRICS, Setting
from .stats import (CONFIDENCE, Interval, mean_interval, relative_loss_interval,
                    sequential_confidence)
from .timing import (Brackets, Clock, DeviceClock, PlainRuns, Run, Stats, StepTimer,
                     TimingPolicy, measure_speedup, takes_step_times, timed_run)


@dataclass
class MeasuredBaseline:
    """What `measure_baseline` measured of the plain pipeline (record.Baseline is what a study
    keeps of it)."""

    latency: Stats  # seconds per batch
    clip_scores: list[float]  # one per image
    images: torch.Tensor = field(repr=False)  # uint8 (N, 3, H, W)

    @property
    def clip_score(self) -> float:
        return statistics.fmean(self.clip_scores)


class BrokenImages(accelerators.AcceleratorError):
    """A configuration produced NaN or blank images."""


class Evaluator(Measurer):
    """Measures configurations on one loaded pipeline (search/measurer.py's contracts)."""

    def __init__(self, pipe, setting: Setting, prompts: Sequence[str],
                 scorer: metrics.CLIPScorer, *, metric: str = "clip",
                 timing: TimingPolicy = TimingPolicy(), clock: Clock | None = None,
                 step_timer: StepTimer | None = None, sample_count: int = 4,
                 baseline_repeats: int = 4):
        if len(prompts) != setting.num_samples:
            raise ValueError(f"{len(prompts)} prompts for num_samples={setting.num_samples}")
        if setting.num_samples < setting.batch_size:
            raise ValueError(f"num_samples={setting.num_samples} is less than one batch "
                             f"({setting.batch_size}): latency is measured on full batches")
        if metric not in LOSS_METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(LOSS_METRICS)}")
        family = family_of(pipe)
        if family is None:
            raise ValueError(f"{type(pipe).__name__} is of no pipeline family tuner supports "
                             f"({supported()})")
        self.pipe, self.family, self.setting, self.prompts = pipe, family, setting, list(prompts)
        self.scorer, self.metric, self.timing = scorer, metric, timing
        self.clock = clock or DeviceClock(pipe.device)
        # Each timed run's denoising steps (the trust rule judges them one by one:
        # timing.step_envelope): on a GPU's own clock (`takes_step_times`), or `step_timer`
        # with a clock of the caller's, whose time is its own (none: runs are judged whole).
        self.step_timer = step_timer if timing.steps else None
        if step_timer is None and clock is None and takes_step_times(timing, pipe.device):
            self.step_timer = StepTimer(pipe.device)
        self.plain_runs = PlainRuns(self.clock, timing)
        self.sample_count, self.baseline_repeats = sample_count, baseline_repeats
        self._batches = self._encode_batches()
        full = [k for k, b in enumerate(self._batches) if b["count"] == setting.batch_size]
        # Timed runs use full batches other than the warm-up one, in turn (a smaller last batch
        # would time another shape).
        self._timed = [k for k in full if k != 0] or [0]
        self.baseline: MeasuredBaseline | None = None
        self._sentinel: Config | None = None  # the configuration measured again (drift)
        self._since_repeat = 0
        # the plain images of the held-out seeds
        self._held_out_base: MeasuredBaseline | None = None

    # -- the space (Measurer) ----------------------------------------------------------------

    @property
    def device(self) -> str:
        return accelerators.device_of(self.pipe)

    def canonical_key(self, config: Config) -> str:
        s = self.setting
        return canonical_key(self.pipe, config, steps=s.steps, height=s.height, width=s.width)

    def distinct_points(self, combo: str) -> int:
        s = self.setting
        return distinct_points(self.pipe, combo, steps=s.steps, height=s.height, width=s.width)

    def check(self, config: Config) -> None:
        accelerators.check(self.pipe, config, steps=self.setting.steps, seed=self.setting.seed)

    @property
    def plain_latency(self) -> float | None:
        return self.plain_runs.latency

    # -- generation -------------------------------------------------------------------------

    def _encode_batches(self) -> list[dict[str, Any]]:
        """Prompt embeddings per batch, encoded once (identical for every configuration)."""
        s = self.setting
        batches = []
        with torch.inference_mode():
            for start in range(0, s.num_samples, s.batch_size):
                prompts = self.prompts[start:start + s.batch_size]
                kwargs = self.family.encode(
                    self.pipe, prompts,
                    guidance=self.family.classifier_free(self.pipe, s.guidance_scale))
                batches.append({"first": start, "count": len(prompts), **kwargs})
        return batches

    def _generate(self, run: Callable[..., Any], batch: dict[str, Any]) -> torch.Tensor:
        """One batch: float images in [0, 1], as the pipeline returns them."""
        s = self.setting
        seeds = range(s.seed + batch["first"], s.seed + batch["first"] + batch["count"])
        embeds = {k: v for k, v in batch.items() if k not in ("first", "count")}
        options = self.family.call_options(self.pipe, s.guidance_scale)
        interrupts.checkpoint()
        with torch.inference_mode():
            return run(**embeds, **options, num_inference_steps=s.steps,
                       height=s.height, width=s.width, output_type="pt",
                       generator=[torch.Generator("cpu").manual_seed(i) for i in seeds],
                       callback_on_step_end=_checkpoint_each_step).images

    def _images(self, run: Callable[..., Any], k: int, *, held_out: bool = False,
                stepped: bool = True) -> tuple[torch.Tensor, Run]:
        """Generate batch `k` (`held_out`: with the seeds after the quality set's,
        `held_out_seeds`); (uint8 images, the timed run, without step times unless
        `stepped`)."""
        batch = self._batches[k]
        if held_out:  # its images' seeds are those of images first + num_samples on
            batch = {**batch, "first": batch["first"] + self.setting.num_samples}
        captured = accelerators.capture_seconds()
        out, timing = self._timed_run(lambda: self._generate(run, batch))
        capture = accelerators.capture_seconds() - captured
        if capture or not stepped:  # graphs captured within the run (not the configuration's
            # speed, nor are its steps), or steps that say nothing (`skips_by_data`): none kept
            timing = Run(timing.start, timing.seconds - capture)
        if not torch.isfinite(out).all():
            raise BrokenImages("produced non-finite (NaN or inf) images")
        return metrics.to_uint8(out), timing

    def _timed_run(self, fn: Callable[[], Any]) -> tuple[Any, Run]:
        """`timed_run`, with the run's step times (Run.steps) where the evaluator takes them."""
        if self.step_timer is None:
            return timed_run(fn, self.clock)
        with self.step_timer.watching(self.family.denoiser(self.pipe)) as stepped:
            out, timing = timed_run(fn, self.clock)
        return out, stepped(timing)

    def _plain(self, k: int, seconds: dict) -> Run:
        timing = self._timed_run(lambda: self._generate(self.pipe, self._batches[k]))[1]
        seconds["plain"] = seconds.get("plain", 0.0) + timing.seconds
        return timing

    def _accelerated(self, config: Config, batches: Sequence[int], images: dict,
                     seconds: dict, *, held_out: bool = False) -> Run:
        """Generate `batches` under one application of `config`, keeping their images (the
        first of each batch); the timed run of the last one."""
        s = self.setting
        begin, spent = self.clock.now(), 0.0
        captured = accelerators.capture_seconds()
        stepped = not accelerators.skips_by_data(config)  # else steps of runs differ in kind
        with accelerators.apply(self.pipe, config, steps=s.steps, seed=s.seed) as run:
            for k in batches:
                out, timing = self._images(run, k, held_out=held_out, stepped=stepped)
                spent += timing.seconds
                images.setdefault(k, out)
        # CUDA graphs are captured within the first run of a configuration (the warm-up), or of
        # a later one when the capture cache dropped them: their seconds are counted apart.
        capture = accelerators.capture_seconds() - captured
        if capture:
            seconds["capture"] = seconds.get("capture", 0.0) + capture
        seconds["apply_undo"] = seconds.get("apply_undo", 0.0) + self.clock.now() - begin - \
            spent - capture
        seconds["accelerated"] = seconds.get("accelerated", 0.0) + spent
        return timing

    # -- baseline ---------------------------------------------------------------------------

    def measure_baseline(self) -> MeasuredBaseline:
        """Generate and score the quality set plainly (which also warms up), then time plain
        runs, which open the series of plain runs that every speedup is measured against."""
        images = torch.cat([self._images(self.pipe, k)[0] for k in range(len(self._batches))])
        runs = [self.plain_runs.add(self._plain(self._timed[i % len(self._timed)], {}))
                for i in range(self.baseline_repeats)]
        scores = self.scorer.score(images, self.prompts)
        self.baseline = MeasuredBaseline(Stats.of([r.seconds for r in runs]),
                                         [float(x) for x in scores], images)
        return self.baseline

    def time_plain_batch(self) -> float:
        """Seconds of one plain batch (for choosing the CPU thread count)."""
        return self._plain(self._timed[0], {}).seconds

    # -- one configuration ------------------------------------------------------------------

    def evaluate(self, config: Config, *, slower_than: float | None = None,
                 loss_budget: float | None = None) -> Evaluation:
        """Speed, then (unless pruned) quality; the pipeline is plain again either way.

        `slower_than`: prune when the speedup is confidently below it. `loss_budget`: prune as
        soon as the loss of the images generated so far is confidently over it, during the
        timing (whose accelerated runs generate quality batches too) or after. Raises
        `accelerators.AcceleratorError` (NoEffect, Unsupported, BrokenImages, IdenticalOutput)
        when the configuration cannot be evaluated.
        """
        if self.baseline is None:
            self.measure_baseline()
        s = self.setting
        self.check(config)
        started = self.clock.now()
        seconds: dict[str, float] = {}
        self._repeat_sentinel(seconds)
        images: dict[int, torch.Tensor] = {}
        scores = _Scores(self, images, seconds)
        # Every scored batch is a look at the loss: the test is corrected for all of them.
        sequential = sequential_confidence(len(self._batches))

        def over_budget() -> bool:
            scores.update()
            return loss_budget is not None and \
                scores.estimate(sequential).loss.low > loss_budget

        def too_slow(interval: Interval | None) -> bool:
            return slower_than is not None and interval is not None and \
                interval.high < slower_than

        warmup = self._accelerated(config, [0], images, seconds)  # its images count
        turns = _Turns(self._timed)
        speed = measure_speedup(lambda: self._plain(turns.bracketed, seconds),
                                lambda: self._accelerated(config, [turns.next()], images,
                                                          seconds),
                                self.plain_runs,
                                precision=self.timing.screening,
                                decided=lambda interval: over_budget() or too_slow(interval),
                                warmup=warmup, key=config_key(config))
        pruned = Pruned.LOSS if over_budget() else \
            Pruned.SLOW if too_slow(speed.speedup) else None
        for k in range(len(self._batches)):
            if pruned is not None:
                break
            if k not in images:
                self._accelerated(config, [k], images, seconds)
                pruned = Pruned.LOSS if over_budget() else None
        quality = scores.estimate()
        ordered = torch.cat([images[k] for k in sorted(images)])
        if quality.images == s.num_samples and torch.equal(ordered, self.baseline.images):
            raise IdenticalOutput()
        seconds["total"] = self.clock.now() - started
        if self._sentinel is None:
            self._sentinel = config
        return Evaluation(config={k: dict(v) for k, v in config.items()}, speed=speed,
                          quality=quality, pruned=pruned,
                          sample_images=ordered[:self.sample_count].cpu(), seconds=seconds)

    def _repeat_sentinel(self, seconds: dict) -> None:
        """Measure this process's first configuration evaluated without error again, briefly, every so often
        (TimingPolicy.repeat_every): how far its speedup moves between moments is part of
        every interval (PlainRuns.between), and only the same configuration measured at two
        moments shows it. Its seconds count as the evaluation's "drift"."""
        every = self.timing.repeat_every
        if self._sentinel is None or not every:
            return
        self._since_repeat += 1
        if self._since_repeat < (every if self.plain_runs.repeats >= 4 else max(1, every // 3)):
            return
        self._since_repeat = 0
        began, spent = self.clock.now(), {}
        batch = self._timed[0]
        warmup = self._accelerated(self._sentinel, [batch], {}, spent)
        measure_speedup(lambda: self._plain(batch, spent),
                        lambda: self._accelerated(self._sentinel, [batch], {}, spent),
                        self.plain_runs, precision=self.timing.screening, warmup=warmup,
                        key=config_key(self._sentinel))
        seconds["drift"] = self.clock.now() - began

    # -- the answer's loss, measured again ----------------------------------------------------

    @property
    def held_out_seeds(self) -> tuple[int, int]:
        """The first and last per-image seeds of `held_out_quality`'s images."""
        s = self.setting
        return s.seed + s.num_samples, s.seed + 2 * s.num_samples - 1

    def held_out_quality(self, config: Config) -> QualityEstimate:
        """The loss of `config` on images no configuration was selected on: the same prompts
        with the next `num_samples` seeds (`held_out_seeds`), against the plain
        pipeline's images of those seeds. One pass of the quality set each, accelerated and
        plain (the plain one once per evaluator).

        The answer is the fastest configuration whose loss *estimate* keeps the budget, so
        among those near the budget the ones that came out low by chance are preferred and
        its own estimate is biased low (the winner's curse of selection). Images it was not
        selected on give an estimate without that bias (a held-out estimate, as a model
        selected on a validation set is reported on a test set)."""
        if self.baseline is None:
            self.measure_baseline()
        if self._held_out_base is None:
            images = torch.cat([self._images(self.pipe, k, held_out=True)[0]
                                for k in range(len(self._batches))])
            scores = self.scorer.score(images, self.prompts)
            self._held_out_base = MeasuredBaseline(self.baseline.latency,
                                                   [float(x) for x in scores], images)
        self.check(config)
        images: dict[int, torch.Tensor] = {}
        self._accelerated(config, range(len(self._batches)), images, {}, held_out=True)
        scores = _Scores(self, images, {}, base=self._held_out_base)
        scores.update()
        return scores.estimate()

    # -- confirmation -----------------------------------------------------------------------

    def race(self, configs: Sequence[Config],
             keep: Callable[[dict[int, Interval]], set[int]], *,
             max_rounds: int | None = None) -> Race:
        """Measure `configs` again, each in brackets of plain runs, round after round.

        After each round from the policy's minimum on, `keep(intervals)` says which are still
        in the race (the others stop being measured); the race ends when every remaining
        configuration's interval is within the precision, or after `max_rounds` rounds.
        """
        if self.baseline is None:
            self.measure_baseline()
        policy, seconds = self.timing, {}
        max_rounds = max_rounds or policy.max_pairs
        batch = self._timed[0]
        # Warm-up, the first run after a while; it judges the candidate's timed runs too.
        warmups = [self._accelerated(config, [batch], {}, seconds) for config in configs]
        race_runs: list[Run] = []  # the race's plain runs, shared by every candidate
        brackets = [Brackets(self.plain_runs, race_runs, references=(w,)) for w in warmups]
        alive = set(range(len(configs)))
        before = self.plain_runs.recent() or self.plain_runs.add(self._plain(batch, seconds))
        rounds = 0
        while alive and rounds < max_rounds:
            for i in sorted(alive):
                accelerated = self._accelerated(configs[i], [batch], {}, seconds)
                after = self.plain_runs.add(self._plain(batch, seconds))
                brackets[i].add(before, accelerated, after)
                before = after
            rounds += 1
            if rounds < policy.min_pairs or not all(brackets[i].judged() for i in alive):
                continue
            intervals = {i: brackets[i].interval() for i in alive}
            alive = {i for i in keep(intervals) if i in alive}
            # this moment's own precision: more rounds cannot narrow the drift between moments
            if all(brackets[i].interval(between=False).relative_half_width <= policy.precision
                   for i in alive):
                break
        plain = [r.seconds for r in brackets[0].trusted_plain()] or \
            [r.seconds for r in race_runs]
        for b, config in zip(brackets, configs):  # every repeat before any interval
            b.remember(config_key(config))
        return Race([b.estimate() for b in brackets], statistics.median(plain), rounds)


class _Turns:
    """The full batches that one speed measurement's timed runs generate, in turn.

    `measure_speedup` runs an opening plain run (when the plain series has no recent one), then
    brackets: accelerated, plain, accelerated, plain... (its docstring's order). Each accelerated
    run takes the `next()` batch, and each plain run the batch of the accelerated run whose
    bracket it closes (`bracketed`), so the two runs of a pair time the same prompts and shape,
    and the quality set is generated in turn along the way; the opening plain run takes the first.
    """

    def __init__(self, batches: Sequence[int]):
        self._cycle = itertools.cycle(batches)
        self.bracketed = next(self._cycle)

    def next(self) -> int:
        self.bracketed = next(self._cycle)
        return self.bracketed


def _checkpoint_each_step(pipe, step: int, timestep, tensors: dict) -> dict:
    """diffusers' step callback: a stop requested mid-batch (interrupts.py) takes effect at the
    end of the denoising step, not of the batch."""
    interrupts.checkpoint()
    return tensors


def config_key(config: Config) -> str:
    """A configuration's name among those one process measures (its repeated measurements
    teach the timing the drift between moments)."""
    return json.dumps(config, sort_keys=True, default=str)


class _Scores:
    """The quality of one configuration's images, scored batch by batch as they come."""

    def __init__(self, evaluator: Evaluator, images: dict[int, torch.Tensor], seconds: dict,
                 *, base: MeasuredBaseline | None = None):
        """`base`: the plain images and scores compared with (the evaluator's baseline)."""
        self.evaluator, self.images, self.seconds = evaluator, images, seconds
        self.base = base or evaluator.baseline
        self.clip: dict[int, torch.Tensor] = {}
        self.ssim: dict[int, torch.Tensor] = {}

    def update(self) -> None:
        ev = self.evaluator
        begin = ev.clock.now()
        for k in sorted(set(self.images) - set(self.clip)):
            batch = ev._batches[k]
            first, count = batch["first"], batch["count"]
            images, base = self.images[k], self.base.images[first:first + count]
            if bool((images.flatten(1).amax(dim=1) == 0).any()) and \
                    not bool((base.flatten(1).amax(dim=1) == 0).any()):
                raise BrokenImages("produced black images")
            self.clip[k] = ev.scorer.score(images, ev.prompts[first:first + count])
            self.ssim[k] = metrics.ssim(images, base).cpu()
        self.seconds["scoring"] = self.seconds.get("scoring", 0.0) + ev.clock.now() - begin

    def estimate(self, confidence: float = CONFIDENCE) -> QualityEstimate:
        """Of the images scored so far; the interval at `confidence`."""
        ev = self.evaluator
        base, order = self.base, sorted(self.clip)
        index = [i for k in order for i in range(ev._batches[k]["first"],
                                                 ev._batches[k]["first"]
                                                 + ev._batches[k]["count"])]
        clip = [float(x) for k in order for x in self.clip[k]]
        ssim = [float(x) for k in order for x in self.ssim[k]]
        clip_loss = relative_loss_interval([base.clip_scores[i] for i in index], clip,
                                           confidence)
        loss = clip_loss if ev.metric == "clip" else \
            mean_interval([1.0 - x for x in ssim], confidence).within(0.0, 2.0)  # SSIM: [-1, 1]
        psnr = metrics.psnr(torch.cat([self.images[k] for k in order]), base.images[index])
        finite = psnr[torch.isfinite(psnr)]
        return QualityEstimate(
            metric=ev.metric, loss=loss, clip_score=statistics.fmean(clip), clip_loss=clip_loss,
            psnr=float(finite.mean()) if len(finite) else math.inf,
            ssim=statistics.fmean(ssim), images=len(index))


__all__ = ["BrokenImages", "Evaluation", "Evaluator", "MeasuredBaseline", "Race"]
