"""Steps and solver as knobs: the answer with them against the best one with the scheduler and
step count fixed, raced side by side in one process.

Two `tuner run`s on the same setting (the baseline is the user's --sched and --steps in both):
`fixed` searches the accelerators (`--combo all`), `knobs` searches them with the scheduler and
step count (`--combo all --search-sched all --search-steps auto`). Their answers are then
measured again here, in one race against the same plain runs (interleaved: each configuration
in brackets of plain runs, round after round), and their losses again on held-out seeds.

    PYTHONPATH=. python benchmarks/steps_bench.py --out benchmarks/results/2026-12-05-cpu-steps \\
        --steps 50 --trials 6 --num-samples 8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

RUNS = {"fixed": [], "knobs": ["--search-sched", "all", "--search-steps", "auto"]}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tune(label: str, out: Path, args) -> dict:
    """One `tuner run`; its answer (the overall choice) and its wall seconds."""
    output, done_file = out / f"{label}.json", out / f"{label}-run.json"
    if done_file.is_file():  # an earlier invocation's run: answered, only raced again here
        return json.loads(done_file.read_text())
    command = [sys.executable, "-m", "tuner", "run", "--pipe", args.pipe, "--device", "cpu",
               "--steps", str(args.steps), "--combo", "all", "--trials", str(args.trials),
               "--num-samples", str(args.num_samples), "--threads", str(args.threads),
               "--sampler-seed", str(args.sampler_seed), "--studies", str(out / f"{label}-studies"),
               "--output", str(output), "--no-artifacts", "--no-progress", *RUNS[label]]
    log("$ " + shlex.join(command))
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - began
    (out / f"{label}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{label}: tuner run exited {done.returncode}: {done.stderr[-2000:]}")
    from tuner.api import choose

    _, _, chosen = choose(output)
    log(f"{label}: {wall:.0f} s; answer {chosen.config} at {chosen.speedup:.2f}x")
    found = {"wall_s": wall, "params": chosen.config, "search_speed": chosen.speed.as_dict(),
             "search_loss": chosen.quality.loss.value}
    done_file.write_text(json.dumps(found, indent=1))
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pipe", default="tiny-shapes")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sampler-seed", type=int, default=0)
    parser.add_argument("--race-pairs", type=int, default=12)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"args": {k: str(v) for k, v in vars(args).items()},
              "runs": {label: tune(label, args.out, args) for label in RUNS}}

    from tuner.app import build
    from tuner.options import RunOptions
    from tuner.timing import TimingPolicy

    session = build(RunOptions(pipe=args.pipe, steps=args.steps, num_samples=args.num_samples,
                               device="cpu", threads=args.threads, progress=False))
    ev = session.evaluator
    ev.measure_baseline()
    ev.timing = ev.plain_runs.policy = TimingPolicy(max_pairs=args.race_pairs)
    configs = [report["runs"][label]["params"] for label in RUNS]
    race = ev.race(configs, keep=lambda intervals: set(intervals))
    for label, config, speed in zip(RUNS, configs, race.speeds):
        held = ev.held_out_quality(config)
        report["runs"][label]["raced"] = speed.as_dict()
        report["runs"][label]["held_out"] = held.as_dict()
        log(f"{label} {config}: {speed.value:.2f}x [{speed.speedup.low:.2f}, "
            f"{speed.speedup.high:.2f}], held-out {held.metric} loss {held.loss.value:.2%} "
            f"[{held.loss.low:.2%}, {held.loss.high:.2%}]")
    fixed, knobs = race.speeds
    report["knobs_over_fixed"] = knobs.value / fixed.value
    report["baseline_latency_s"] = race.baseline_latency
    log(f"knobs / fixed, raced side by side: {report['knobs_over_fixed']:.2f}x "
        f"(plain batch {race.baseline_latency:.3f} s)")
    (args.out / "steps_bench.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
