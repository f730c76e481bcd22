"""The tuner's answer against each diffusers cache at its documented default configuration, on
the trained toy `tiny-shapes-dit` (BENCHMARKS.md, "Diffusion transformers: tuned against the
caches' defaults").

* `tune`: `tuner run --pipe tiny-shapes-dit --combo all` at the loss budget (gpu_bench's
  `_tuner`), its studies and search_params.json under OUT/tuned.
* `compare`: in one process, on one evaluator built with the run's setting: the tuned answer
  and the five defaults raced against each other (the tuner's race: bracketed pairs, round
  after round, every configuration against the same plain runs) for their speedups, then each
  one's CLIP-score loss on the held-out seeds (`held_out_quality`: images no configuration was
  selected on, the tuned answer's included) -> OUT/compare.json, OUT/table.md.

The defaults, mapped onto the tuner's knobs (each exact, the knobs the tuner does not search
at the tuner's values, which are diffusers' defaults but where said):
* FirstBlockCache: `threshold` 0.05 (FirstBlockCacheConfig's default).
* TaylorSeer: `cache_interval` 5, `disable_cache_before_step` 3, `max_order` 1, lite mode off
  (TaylorSeerCacheConfig's defaults).
* MagCache: `threshold` 0.06, `max_skip_steps` 3, `retention_ratio` 0.2 (MagCacheConfig's
  defaults). The config has no default ratios (FLUX_MAG_RATIOS are FLUX.1-dev's): they are
  calibrated on the toy, per guidance branch, as the tuner does.
* FasterCache: `block_skip_range` 2 and attention reuse below timestep 681 (FasterCacheConfig's
  defaults; `skip_below` is in hundreds, so 6.81). `is_guidance_distilled` is the tuner's
  (True on FLUX: the pipeline calls the transformer once per branch, no batch to split).
* PAB: `block_skip_range` 2, timesteps (100, 800). The config's timestep range is its default;
  its skip ranges default to None (nothing skipped), so the spatial skip of 2 is from
  diffusers' documented example (`spatial_attention_block_skip_range=2`).

Two defaults fall between the points of the tuner's grids (threshold 0.05 between 0.04 and
0.06; timestep 681 between 600 and 700): in the `compare` process only, those two knobs admit
the exact defaults too (`admitting`), so the tuner's measurement takes them as they are.

    python benchmarks/dit_defaults_bench.py tune --out OUT [--trials 8] [--steps 20] ...
    python benchmarks/dit_defaults_bench.py compare --out OUT [same options]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import gpu_bench  # noqa: E402 - runs `tuner run`, reads answers, writes the header
from gpu_bench import _chosen, _tuner, log  # noqa: E402

PIPE = "tiny-shapes-dit"
DEFAULTS = {
    "FirstBlockCache default (0.05)": {"fbcache": {"threshold": 0.05}},
    "TaylorSeer default (interval 5, from step 3, order 1)": {"taylorseer": {
        "cache_interval": 5, "disable_cache_before_step": 3, "max_order": 1,
        "use_lite_mode": 0}},
    "MagCache default (0.06, K 3, retention 0.2; calibrated)": {"magcache": {
        "threshold": 0.06, "max_skip_steps": 3, "retention_ratio": 0.2}},
    "FasterCache default (skip 2, below 681)": {"fastercache": {
        "block_skip_range": 2, "skip_below": 6.81}},
    "PAB documented (skip 2, t 100-800)": {"pab": {
        "block_skip_range": 2, "timestep_low": 1, "timestep_high": 8}},
}


# Knobs widened in the `compare` process so that the exact defaults validate.
ADMIT = {("fbcache", "threshold"): ("0.01", "0.30", "0.01"),
         ("fastercache", "skip_below"): ("3", "9", "0.01")}


@contextlib.contextmanager
def admitting():
    """The `ADMIT` knobs, finer (DecimalKnob), for the block."""
    from tuner.accelerators import ACCELERATORS, DecimalKnob

    spaces = {name: ACCELERATORS[name].space for name, _ in ADMIT}
    try:
        for (name, knob), (low, high, step) in ADMIT.items():
            ACCELERATORS[name].space = {**ACCELERATORS[name].space,
                                        knob: DecimalKnob(low, high, step)}
        yield
    finally:
        for name, space in spaces.items():
            ACCELERATORS[name].space = space


def _run_options(args):
    from tuner.options import RunOptions
    from tuner.setting import Goal

    return RunOptions(pipe=PIPE, steps=args.steps, batch_size=args.batch_size,
                      num_samples=args.num_samples, device="cpu", threads=args.threads,
                      goal=Goal(loss_budget=args.budget), progress=False)


def tune(out: Path, args) -> None:
    studies = out / "tuned"
    argv = ["--pipe", PIPE, "--device", "cpu", "--combo", "all", "--steps", str(args.steps),
            "--batch-size", str(args.batch_size), "--num-samples", str(args.num_samples),
            "--req-score-loss", str(args.budget), "--trials", str(args.trials),
            "--threads", str(args.threads), "--no-progress", "--no-artifacts",
            "--studies", str(studies), "--output", str(studies / "search_params.json")]
    wall, text = _tuner(argv)
    log(text[-4000:])
    with (out / "tune.log").open("a") as f:
        f.write(f"\n# tuner run {' '.join(argv)}\n# wall {wall:.1f}s\n{text}")


def compare(out: Path, args) -> None:
    from tuner.app import build
    from tuner.timing import TimingPolicy

    from tuner.cli import quiet_libraries

    quiet_libraries(progress=False)
    answer = json.loads((out / "tuned" / "search_params.json").read_text())
    chosen = _chosen(answer)
    configs = {f"tuned ({chosen['combo']})": chosen["params"], **DEFAULTS}
    session = build(_run_options(args))
    ev = session.evaluator
    ev.timing = ev.plain_runs.policy = TimingPolicy(max_pairs=args.max_pairs)
    s = session.setting
    log(f"{s.pipe} {s.steps} steps {s.height}x{s.width} batch {s.batch_size}, "
        f"{s.num_samples} samples, {session.threads} thread(s)")
    base = ev.measure_baseline()
    log(f"plain {base.latency.median:.3f}s per batch")
    began = time.perf_counter()
    with admitting():
        race = ev.race(list(configs.values()), keep=lambda intervals: set(intervals))
        log(f"race: {race.rounds} rounds in {time.perf_counter() - began:.0f}s")
        qualities = [ev.held_out_quality(config) for config in configs.values()]
    first, last = ev.held_out_seeds
    rows = []
    for (label, config), speed, quality in zip(configs.items(), race.speeds, qualities):
        loss = quality.loss
        rows.append({"configuration": label, "config": config, "speed": speed.as_dict(),
                     "held_out_quality": quality.as_dict(),
                     "within_budget": loss.value <= args.budget})
        log(f"{label}: {speed.value:.2f}x [{speed.speedup.low:.2f}, {speed.speedup.high:.2f}] "
            f"({speed.pairs} pairs), loss {loss.value:.2%} [{loss.low:.2%}, {loss.high:.2%}]")
    within = [r for r in rows[1:] if r["within_budget"]]
    fastest = max(within, key=lambda r: r["speed"]["speedup"]["value"], default=None)
    tuned = rows[0]["speed"]["speedup"]["value"]
    ratio = tuned / fastest["speed"]["speedup"]["value"] if fastest else None
    report = {**gpu_bench.header(), "setting": s.as_dict() if hasattr(s, "as_dict") else str(s),
              "threads": session.threads, "budget": args.budget,
              "held_out_seeds": [first, last], "race_rounds": race.rounds,
              "race_baseline_latency": race.baseline_latency, "rows": rows,
              "fastest_default_within": fastest and fastest["configuration"],
              "tuned_over_fastest_default_within": ratio}
    (out / "compare.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    lines = ["| configuration | speedup [95 % CI] | loss [95 % CI] | within 2 %? |",
             "|---|---|---|---|"]
    for r in rows:
        sp, ls = r["speed"]["speedup"], r["held_out_quality"]["loss"]
        lines.append(f"| {r['configuration']} | {sp['value']:.2f}× [{sp['low']:.2f}, "
                     f"{sp['high']:.2f}] | {ls['value']:.2%} [{ls['low']:.2%}, "
                     f"{ls['high']:.2%}] | {'yes' if r['within_budget'] else 'no'} |")
    if ratio:
        lines.append(f"\ntuned / fastest default within budget ({fastest['configuration']}): "
                     f"{ratio:.2f}×")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    log("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["tune", "compare"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--budget", type=float, default=0.02)
    parser.add_argument("--trials", type=int, default=8, help="for tune: --trials per combo")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-pairs", type=int, default=12, help="for compare: race rounds")
    args = parser.parse_args()
    gpu_bench.DEVICE = "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    {"tune": tune, "compare": compare}[args.part](out, args)


if __name__ == "__main__":
    main()
