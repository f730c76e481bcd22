"""Evaluating one accelerator configuration against the plain pipeline.

The pipeline is loaded once. Its baseline (latency, CLIP scores and images) is measured once; every
configuration is then applied, run on the same prompts with the same per-image seeds, timed in
runs interleaved with plain ones, scored, and undone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from . import accelerators, metrics
from .accelerators import Config
from .timing import Clock, DeviceClock, Speedup, Stats, Timer, interleave, timed

LOSS_METRICS = ("clip", "ssim")


@dataclass(frozen=True)
class Setting:
    """Everything that changes the answer for a given model."""

    pipe: str
    scheduler: str
    steps: int
    height: int
    width: int
    batch_size: int = 4
    num_samples: int = 32
    seed: int = 42
    guidance_scale: float = 7.5
    device: str = ""  # the GPU's name: speedups differ from one GPU to another

    @property
    def key(self) -> str:
        """A readable identifier, e.g. `SD1.5|DDIM|50 steps|512x512|batch 4|NVIDIA H100`."""
        return "|".join(filter(None, [
            self.pipe, self.scheduler, f"{self.steps} steps", f"{self.height}x{self.width}",
            f"batch {self.batch_size}", self.device]))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TimingPlan:
    """How many bracketed pairs of timed runs each configuration gets."""

    pairs: int = 4  # see BENCHMARKS.md: 4 pairs kept 5 measurements within 1.8 %
    baseline_repeats: int = 6  # timed plain runs for the baseline latency


@dataclass
class Baseline:
    latency: Stats  # seconds per batch
    clip_score: float
    clip_scores: list[float]
    images: torch.Tensor = field(repr=False)  # uint8 (N, 3, H, W)

    def summary(self) -> dict:
        return {"latency": self.latency.median, "latency_spread": self.latency.spread,
                "clip_score": self.clip_score}


@dataclass
class Evaluation:
    config: dict
    speedup: float
    speedup_spread: float  # (max - min) / median of the bracketed ratios
    latency: float  # accelerated seconds per batch (median)
    baseline_latency: float  # plain seconds per batch, measured interleaved (median)
    clip_score: float
    clip_loss: float  # relative: (baseline - accelerated) / baseline
    psnr: float  # mean over images, against the baseline images
    ssim: float
    loss: float  # the loss of the chosen metric
    images: int
    timing: Speedup = field(repr=False)
    sample_images: torch.Tensor = field(repr=False)  # uint8, the first few images
    # Seconds spent: in accelerated and plain runs, applying/undoing, scoring, and in total.
    work: dict[str, float] = field(default_factory=dict)

    NUMBERS = ("speedup", "speedup_spread", "latency", "baseline_latency", "clip_score",
               "clip_loss", "psnr", "ssim", "loss", "images")

    def summary(self) -> dict:
        """The plain numbers, as recorded on a trial."""
        return {**{k: getattr(self, k) for k in self.NUMBERS},
                "speedup_ratios": list(self.timing.ratios.samples), "seconds": dict(self.work)}


class BrokenImages(accelerators.AcceleratorError):
    """A configuration produced NaN or blank images."""


def relative_loss(baseline: float, value: float) -> float:
    return (baseline - value) / baseline if baseline > 0 else 0.0


class Evaluator:
    def __init__(self, pipe, setting: Setting, prompts: Sequence[str],
                 scorer: metrics.CLIPScorer, *, metric: str = "clip",
                 timing: TimingPlan = TimingPlan(), clock: Clock | None = None,
                 sample_count: int = 4):
        if len(prompts) != setting.num_samples:
            raise ValueError(f"{len(prompts)} prompts for num_samples={setting.num_samples}")
        if setting.num_samples < setting.batch_size:
            raise ValueError(f"num_samples={setting.num_samples} is less than one batch "
                             f"({setting.batch_size}): latency is measured on full batches")
        if metric not in LOSS_METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(LOSS_METRICS)}")
        self.pipe, self.setting, self.prompts = pipe, setting, list(prompts)
        self.scorer, self.metric, self.plan = scorer, metric, timing
        self.clock = clock or DeviceClock(pipe.device)
        self.sample_count = sample_count
        self._batches = self._encode_batches()
        self.baseline: Baseline | None = None

    # -- generation -------------------------------------------------------------------------

    def _encode_batches(self) -> list[dict[str, Any]]:
        """Prompt embeddings per batch, encoded once (identical for every configuration)."""
        s, pipe = self.setting, self.pipe
        batches = []
        with torch.inference_mode():
            for start in range(0, s.num_samples, s.batch_size):
                prompts = self.prompts[start:start + s.batch_size]
                encoded = pipe.encode_prompt(prompts, device=pipe.device,
                                             num_images_per_prompt=1,
                                             do_classifier_free_guidance=s.guidance_scale > 1)
                names = ["prompt_embeds", "negative_prompt_embeds"]
                if len(encoded) == 4:  # SDXL
                    names += ["pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
                kwargs = {n: e for n, e in zip(names, encoded) if e is not None}
                batches.append({"first": start, "count": len(prompts), **kwargs})
        return batches

    def _generate(self, run: Callable[..., Any], batch: dict[str, Any]) -> torch.Tensor:
        """One batch: float images in [0, 1], as the pipeline returns them."""
        s = self.setting
        seeds = range(s.seed + batch["first"], s.seed + batch["first"] + batch["count"])
        embeds = {k: v for k, v in batch.items() if k not in ("first", "count")}
        with torch.inference_mode():
            return run(**embeds, num_inference_steps=s.steps, guidance_scale=s.guidance_scale,
                       height=s.height, width=s.width, output_type="pt",
                       generator=[torch.Generator("cpu").manual_seed(i) for i in seeds]).images

    def _timed_images(self, run: Callable[..., Any], batch: dict[str, Any]):
        """Generate one batch; (uint8 images, seconds of the generation alone)."""
        out, seconds = timed(lambda: self._generate(run, batch), self.clock)
        if not torch.isfinite(out).all():
            raise BrokenImages("produced non-finite (NaN or inf) images")
        return metrics.to_uint8(out), seconds

    def _timed_batch(self) -> Callable[[int], int]:
        """Which batch the i-th timed run uses: full batches other than the warm-up one, in
        turn, so that every timing is of the same shape (a smaller last batch is not timed)."""
        full = [k for k, b in enumerate(self._batches) if b["count"] == self.setting.batch_size]
        cycle = [k for k in full if k != 0] or [0]
        return lambda i: cycle[i % len(cycle)]

    # -- baseline ---------------------------------------------------------------------------

    def measure_baseline(self) -> Baseline:
        """Generate and score the quality set plainly (which also warms up), then time."""
        images = torch.cat([self._timed_images(self.pipe, batch)[0] for batch in self._batches])
        batch = self._batches[self._timed_batch()(0)]
        latency = Timer(self.clock, warmup=0, repeats=self.plan.baseline_repeats).measure(
            lambda: self._generate(self.pipe, batch))
        scores = self.scorer.score(images, self.prompts)
        self.baseline = Baseline(latency, float(scores.mean()), [float(x) for x in scores], images)
        return self.baseline

    # -- one configuration ------------------------------------------------------------------

    def evaluate(self, config: Config) -> Evaluation:
        """Apply `config`, generate the quality set, time it against the plain pipeline, undo.

        Raises `accelerators.AcceleratorError` (NoEffect, Unsupported, BrokenImages) when the
        configuration cannot be scored; the pipeline is plain again either way.
        """
        if self.baseline is None:
            self.measure_baseline()
        s, pipe, clock = self.setting, self.pipe, self.clock
        accelerators.check(pipe, config, steps=s.steps, seed=s.seed)
        started = clock.now()
        work = {"accelerated": 0.0, "plain": 0.0, "apply_undo": 0.0, "scoring": 0.0}
        images: list[torch.Tensor | None] = [None] * len(self._batches)
        batch_of = self._timed_batch()

        def accelerated(*batches: int) -> float:
            """Run `batches` under one application; the seconds of the last one."""
            begin, spent = clock.now(), 0.0
            with accelerators.apply(pipe, config, steps=s.steps, seed=s.seed) as run:
                for k in batches:
                    out, seconds = self._timed_images(run, self._batches[k])
                    spent += seconds
                    if images[k] is None:
                        images[k] = out
            work["apply_undo"] += clock.now() - begin - spent
            work["accelerated"] += spent
            return seconds

        def plain(k: int) -> float:
            seconds = timed(lambda: self._generate(pipe, self._batches[k]), clock)[1]
            work["plain"] += seconds
            return seconds

        timed_batches = {batch_of(i) for i in range(self.plan.pairs)}
        untimed = [k for k in range(1, len(self._batches)) if k not in timed_batches]
        accelerated(0, *untimed)  # the warm-up run first; all images count
        speed = interleave(lambda i: plain(batch_of(i)), lambda i: accelerated(batch_of(i)),
                           self.plan.pairs)
        begin = clock.now()
        evaluation = self._score(config, torch.cat(images), speed)
        work["scoring"] = clock.now() - begin
        work["total"] = clock.now() - started
        evaluation.work = work
        return evaluation

    def _score(self, config: Config, images: torch.Tensor, speed: Speedup) -> Evaluation:
        base = self.baseline
        if torch.equal(images, base.images):
            raise accelerators.NoEffect("output is bit-identical to the plain pipeline's")
        if bool((images.flatten(1).amax(dim=1) == 0).any()) and \
                not bool((base.images.flatten(1).amax(dim=1) == 0).any()):
            raise BrokenImages("produced black images")
        clip = float(self.scorer.score(images, self.prompts).mean())
        psnr = metrics.psnr(images, base.images)
        ssim = float(metrics.ssim(images, base.images).mean())
        finite_psnr = psnr[torch.isfinite(psnr)]
        clip_loss = relative_loss(base.clip_score, clip)
        return Evaluation(
            config={k: dict(v) for k, v in config.items()},
            speedup=speed.speedup, speedup_spread=speed.ratios.spread,
            latency=speed.accelerated.median, baseline_latency=speed.baseline.median,
            clip_score=clip, clip_loss=clip_loss,
            psnr=float(finite_psnr.mean()) if len(finite_psnr) else math.inf, ssim=ssim,
            loss=clip_loss if self.metric == "clip" else 1.0 - ssim,
            images=len(images), timing=speed,
            sample_images=images[:self.sample_count].cpu(),
        )
