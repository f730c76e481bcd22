"""diffusers' caches on full-size random-weight diffusion transformers, and schedulers x steps on
SD1.5, each interleaved against its eager plain pipeline in one process (as graphs_bench.py).

* `dit`: `flux-random` (FLUX.1-dev's architecture, bf16, 1024², 28 steps, batch 1, embedded
  guidance) and `pixart-sigma-random` (PixArt-Σ's, bf16, 1024², 20 steps, batch 1, classifier-
  free guidance): each cache at diffusers' documented defaults and at the fast end of the tuner's
  ranges, applied through the tuner's registry. Every plain run's latents are compared with the
  first plain run's, bit for bit: an application that did not undo exactly would show there.
  TaylorSeer, PAB and FasterCache follow fixed schedules, so their timings are real; MagCache's
  (FLUX's shipped ratios, or calibrated on random weights) and FirstBlockCache's depend on the
  model's residuals: on random weights their speed means nothing, and is marked so.
* `sched`: `sd1.5-random` (fp16, 512², batch 4): DDIM, DPM-Solver++ and UniPC at 50, 25, 15 and
  10 steps, alone and with DeepCache N=3 b0, against the 50-step DDIM plain pipeline.

Prompt embeddings are given, latents are the output (no VAE): denoiser, scheduler and guidance
only. Random weights: timings are real, images meaningless.

    python benchmarks/dit_bench.py dit --out OUT [--rounds 2 3] [--limit 420]
    python benchmarks/dit_bench.py sched --out OUT [--rounds 2] [--limit 240]
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from graphs_bench import arguments, compare, interleave, log, start  # noqa: E402

# name -> (config, whether its speed is meaningful on random weights)
FLUX = {
    "TaylorSeer default (interval 5)": ({"taylorseer": {
        "cache_interval": 5, "disable_cache_before_step": 3, "max_order": 1,
        "use_lite_mode": 0}}, True),
    "TaylorSeer interval 3, lite": ({"taylorseer": {
        "cache_interval": 3, "disable_cache_before_step": 3, "max_order": 1,
        "use_lite_mode": 1}}, True),
    "TaylorSeer interval 8, lite (range end)": ({"taylorseer": {
        "cache_interval": 8, "disable_cache_before_step": 1, "max_order": 1,
        "use_lite_mode": 1}}, True),
    "PAB default (skip 2, t 100-800)": ({"pab": {
        "block_skip_range": 2, "timestep_low": 1, "timestep_high": 8}}, True),
    "PAB skip 5, t 0-1000 (range end)": ({"pab": {
        "block_skip_range": 5, "timestep_low": 0, "timestep_high": 10}}, True),
    "FasterCache default (skip 2, below 700)": ({"fastercache": {
        "block_skip_range": 2, "skip_below": 7}}, True),
    "FasterCache skip 4, below 900 (range end)": ({"fastercache": {
        "block_skip_range": 4, "skip_below": 9}}, True),
    "MagCache default (0.06, K 3, 0.2)": ({"magcache": {
        "threshold": 0.06, "max_skip_steps": 3, "retention_ratio": 0.2}}, False),
    "MagCache 0.24, K 5, 0.1 (published)": ({"magcache": {
        "threshold": 0.24, "max_skip_steps": 5, "retention_ratio": 0.1}}, False),
    # diffusers' default is 0.05, between two points of the tuner's grid (0.02 apart)
    "FirstBlockCache 0.06 (near the default)": ({"fbcache": {"threshold": 0.06}}, False),
}
# PixArt-Σ's transformer has no `enable_cache` in diffusers 0.42, so of these only T-GATE serves
# it (the registry refuses the caches there, which the warm-up records).
PIXART = {
    "T-GATE gate 10 (T-GATE's PixArt example)": ({"tgate": {
        "gate_step": 10, "sp_interval": 5, "fi_interval": 1, "warmup": 2}}, True),
    "T-GATE gate 5 (range end)": ({"tgate": {
        "gate_step": 5, "sp_interval": 5, "fi_interval": 1, "warmup": 2}}, True),
    "FasterCache default (refused)": FLUX["FasterCache default (skip 2, below 700)"],
}
DITS = (("flux-random", 1024, 28, 3.5, FLUX), ("pixart-sigma-random", 1024, 20, 4.5, PIXART))


DEVICE = "cuda"  # --device cpu with tiny presets: a smoke test of this script, not a timing


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


class DitBench:
    """One preset pipeline with its prompt encoded once; `once(config)` as graphs_bench.Bench."""

    def __init__(self, preset: str, size: int, steps: int, scale: float, *, sched=None,
                 batch: int = 1):
        import torch

        from tuner import presets
        from tuner.families import family_of

        began = time.perf_counter()
        dtype = torch.bfloat16 if preset != "sd1.5-random" else torch.float16
        self.pipe = presets.build_pipeline(preset, device=DEVICE, dtype=dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.family = family_of(self.pipe)
        self.preset, self.size, self.steps, self.batch = preset, size, steps, batch
        with torch.inference_mode():
            self.embeds = self.family.encode(
                self.pipe, ["a photo of a cat"] * batch,
                guidance=self.family.classifier_free(self.pipe, scale))
        self.options = self.family.call_options(self.pipe, scale)
        log(f"{preset}: built in {time.perf_counter() - began:.1f}s")

    def generate(self, run, steps=None):
        import torch

        with torch.inference_mode():
            return run(**self.embeds, **self.options, height=self.size, width=self.size,
                       num_inference_steps=steps or self.steps, output_type="latent",
                       generator=[torch.Generator("cpu").manual_seed(i)
                                  for i in range(self.batch)]).images

    def once(self, config: dict | None, steps=None):
        import torch

        from tuner import accelerators

        sync()
        began = time.perf_counter()
        if not config:
            out = self.generate(self.pipe, steps)
        else:
            with accelerators.apply(self.pipe, config, steps=steps or self.steps) as run:
                out = self.generate(run, steps)
        sync()
        return time.perf_counter() - began, out


def table(raw: dict, plain_runs: list, meaningful: dict) -> dict:
    found = {}
    for name, runs in raw.items():
        ratios = [x["ratio"] for x in runs]
        if ratios:
            found[name] = {"median": statistics.median(ratios), "min": min(ratios),
                           "max": max(ratios), "meaningful": meaningful.get(name, True),
                           "seconds_median": statistics.median(x["seconds"] for x in runs)}
            mark = "" if found[name]["meaningful"] else "  (random weights: meaningless)"
            log(f"  {name:44s} {found[name]['median']:.2f}x [{min(ratios):.2f}-"
                f"{max(ratios):.2f}]  {found[name]['seconds_median'] * 1000:.0f} ms{mark}")
    if plain_runs:
        log(f"  {'eager plain':44s} {statistics.median(plain_runs) * 1000:.0f} ms "
            f"[{min(plain_runs) * 1000:.0f}-{max(plain_runs) * 1000:.0f}]")
    return found


def measure(bench, configs: dict, rounds: int, deadline: float, save, entry: dict,
            run=None) -> None:
    """Warm each configuration once (undo checked on the plain run after it), then `rounds`
    interleaved rounds; `entry` gets "warm", "speed" and "undo" as they come."""
    import torch

    run = run or (lambda name: bench.once(configs[name][0])[0])
    ref = bench.once(None)[1]
    entry["warm"], entry["undo"] = {}, {}
    names = []
    for name, (config, _) in configs.items():
        try:
            seconds = run(name)
        except Exception as err:  # noqa: BLE001 - what happened is the result
            entry["warm"][name] = {"error": f"{type(err).__name__}: {err}"[:600],
                                   "traceback": traceback.format_exc()[-2000:]}
            log(f"  {name}: {entry['warm'][name]['error']}")
            continue
        after = bench.once(None)[1]
        entry["undo"][name] = compare(after, ref)
        entry["warm"][name] = {"seconds": seconds}
        log(f"  warm {name}: {seconds * 1000:.0f} ms, plain after it identical "
            f"{entry['undo'][name]['identical']}")
        names.append(name)
        save()
    raw, plain_runs = {n: [] for n in names}, []
    for r in range(rounds):
        if time.perf_counter() > deadline:
            log(f"  stopped after {r} rounds (time limit)")
            break
        interleave(bench, names[r % len(names):] + names[:r % len(names)], run, raw,
                   plain_runs)
        entry["speed"] = {"plain_seconds": plain_runs, "configs": raw}
        save()
        log(f"  round {r + 1} done")
    entry["table"] = table(raw, plain_runs, {n: m for n, (_, m) in configs.items()})
    if DEVICE == "cuda":
        entry["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    save()


def dit(args) -> None:
    import torch

    report, started, save = start(args, "dit_bench", presets={})
    share = (0.68, 1.0)
    for (preset, size, steps, scale, configs), rounds, part in zip(DITS, args.rounds, share):
        preset = args.presets.get(preset)
        if preset is None:
            continue
        size = args.size or size
        bench = DitBench(preset, size, steps, scale)
        entry = report["presets"][preset] = {"size": size, "steps": steps, "batch": 1,
                                             "guidance_scale": scale}
        log(f"{preset} {size}², {steps} steps")
        measure(bench, configs, rounds, started + args.limit * part, save, entry)
        del bench
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    report["wall_s"] = time.perf_counter() - started
    save()


SCHEDULERS = ("DDIM", "DPM-Solver++", "UniPC")


def sched(args) -> None:
    from tuner import pipelines

    report, started, save = start(args, "sched_bench", presets={})
    bench = DitBench(args.sd, args.size or 512, 50, 7.5, batch=4)
    pipelines.set_scheduler(bench.pipe, "DDIM")
    configs, setting = {}, {}
    for name in SCHEDULERS:
        for steps in args.step_counts:
            for cached in (False, True):
                label = f"{name} {steps}" + (" + DeepCache N=3" if cached else "")
                if name == "DDIM" and steps == 50 and not cached:
                    label += " (the baseline, against itself)"
                configs[label] = ({"deepcache": {"cache_interval": 3, "cache_branch_id": 0}}
                                  if cached else {}, True)
                setting[label] = (name, steps)
    base = bench.pipe.scheduler

    def run(label):
        name, steps = setting[label]
        pipelines.set_scheduler(bench.pipe, name)
        try:
            return bench.once(configs[label][0] or None, steps)[0]
        finally:
            bench.pipe.scheduler = base

    entry = report["presets"]["sd1.5-random"] = {"size": 512, "batch": 4, "baseline": "DDIM 50"}
    measure(bench, configs, args.rounds[0], started + args.limit, save, entry, run=run)
    report["wall_s"] = time.perf_counter() - started
    save()


def main() -> None:
    parser = arguments(rounds=(2, 3), limit=420)
    parser.add_argument("part", choices=["dit", "sched"])
    parser.add_argument("--presets", nargs="+", default=[p for p, *_ in DITS],
                        help="which of the two DiT rows to run, or NAME=PRESET to run another "
                        "preset in its place (tiny-flux on the CPU, to try the script)")
    parser.add_argument("--sd", default="sd1.5-random")
    parser.add_argument("--size", type=int, help="pixels, instead of each row's own")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--step-counts", nargs="+", type=int, default=[50, 25, 15, 10])
    args = parser.parse_args()
    args.presets = dict(p.split("=", 1) if "=" in p else (p, p) for p in args.presets)
    global DEVICE
    DEVICE = args.device
    {"dit": dit, "sched": sched}[args.part](args)


if __name__ == "__main__":
    main()
