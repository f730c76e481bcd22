"""GPU benchmark of tuner: accelerator speedups with the tuner's own adaptive measurement, the
tuner's answer on the DeepCache grid, and GPU-seconds per answer against the fixed-pair
protocol of tuner 0.1 (commit 419cd41).

Full-size SD1.5 and SDXL architectures are built from their configs with seeded random weights
(no downloads): timings are real, quality numbers are meaningless (the runs score SSIM to the
plain images so that "within budget" is at least defined). Every speedup is the tuner's own
estimate: bracketed pairs, added until the 95 % interval is within +-2 % (or a cap).

    python benchmarks/gpu_bench.py speedups --out OUT     # per-configuration speedups, pairs spent
    python benchmarks/gpu_bench.py grid --out OUT         # tuner run on the DeepCache grid
    python benchmarks/gpu_bench.py cost --out OUT         # GPU-seconds per answer, defaults
    python benchmarks/gpu_bench.py cost --old OLD --trials 3 --out OUT  # tuner 0.1, per trial
    python benchmarks/gpu_bench.py compare --out OUT      # the runs side by side, answers raced
    python benchmarks/gpu_bench.py trace --out OUT        # raw plain/accelerated run timings
    python benchmarks/gpu_bench.py spent --out OUT        # where a cost run's seconds went

`cost` and `compare` also run on the CPU with the trained tiny-shapes pipeline, whose losses are
real (for a toy): benchmarks/results/2026-12-01-cpu-cost/commands.sh (BENCHMARKS.md, section 3).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import stored  # noqa: E402 - stored runs' data over 50 KB is compressed

DC = {"deepcache": {"cache_interval": 3, "cache_branch_id": 0}}
TGATE = {"gate_step": 10, "sp_interval": 5, "fi_interval": 1, "warmup": 2}
TOME = {"ratio": 0.5, "max_downsample": 1}
SD15_CONFIGS = {
    "DeepCache N=2 b0": {"deepcache": {"cache_interval": 2, "cache_branch_id": 0}},
    "DeepCache N=3 b0": DC,
    "DeepCache N=5 b0": {"deepcache": {"cache_interval": 5, "cache_branch_id": 0}},
    "DeepCache N=3 b2": {"deepcache": {"cache_interval": 3, "cache_branch_id": 2}},
    "ToMe 0.5 md1": {"tome": TOME},
    "T-GATE 10/5/1/2": {"tgate": TGATE},
    "DC N=3 + ToMe 0.5 md1": {**DC, "tome": TOME},
    "DC N=3 + T-GATE": {**DC, "tgate": TGATE},
    "DC N=3 + ToMe + T-GATE": {**DC, "tome": TOME, "tgate": TGATE},
}
SDXL_CONFIGS = {
    "DeepCache N=3 b0": DC,
    "DeepCache N=5 b0": {"deepcache": {"cache_interval": 5, "cache_branch_id": 0}},
    "DC N=3 + T-GATE": {**DC, "tgate": TGATE},
}


def log(*parts):
    print(*parts, flush=True)


DEVICE = "cuda"


def header() -> dict:
    import torch

    from tuner.pipelines import device_name
    from tuner.search.studies import versions

    return {"device": device_name(torch.device(DEVICE)), "versions": versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def speedups(out: Path, args) -> None:
    from tuner.app import build
    from tuner.options import RunOptions
    from tuner.setting import Goal

    report = header()
    for name, preset, batch, configs in (("sd15", args.sd, 4, SD15_CONFIGS),
                                         ("sdxl", args.sdxl, 1, SDXL_CONFIGS)):
        options = RunOptions(pipe=preset, steps=args.steps, batch_size=batch,
                             num_samples=2 * batch, goal=Goal(metric="ssim"),
                             clip_model=args.clip,
                             device=DEVICE, progress=False)
        session = build(options)
        base = session.evaluator.measure_baseline()
        log(f"{name} plain {base.latency.median:.3f}s (spread {base.latency.spread:.1%})")
        rows = []
        for label, config in configs.items():
            started = time.perf_counter()
            e = session.evaluator.evaluate(config)
            s = e.speed
            rows.append({"config": label, "params": config, "speed": s.as_dict(),
                         "latency": s.latency, "seconds": e.seconds,
                         "wall": time.perf_counter() - started})
            log(f"  {label}: {s.value:.3f}x [{s.speedup.low:.3f}, {s.speedup.high:.3f}] "
                f"pairs {s.pairs} set aside {s.rejected}; {s.baseline_latency:.3f}s -> "
                f"{s.latency:.3f}s")
        report[name] = {"baseline": base.latency.as_dict(), "rows": rows}
        del session
        import torch

        torch.cuda.empty_cache()
    (out / "speedups.json").write_text(json.dumps(report, indent=1))


def lookup(out: Path, args) -> None:
    """DeepCache's step lookup: its own `list(timesteps).index(t)` (O(steps) host syncs per
    step on CUDA) against the dict tuner builds once per generation; alternated A B A B."""
    import tuner.accelerators.deepcache as deepcache
    from tuner.app import build
    from tuner.options import RunOptions
    from tuner.setting import Goal

    original = deepcache._find_steps_once
    session = build(RunOptions(pipe=args.sd, steps=args.steps, batch_size=4, num_samples=8,
                               goal=Goal(metric="ssim"), clip_model=args.clip, device=DEVICE,
                               progress=False))
    ev = session.evaluator
    ev.timing = ev.plain_runs.policy = type(ev.timing)(screening=0.02)
    ev.measure_baseline()
    rows = []
    for interval in (3, 5):
        config = {"deepcache": {"cache_interval": interval, "cache_branch_id": 0}}
        for round_ in range(2):
            for label, finder in (("deepcache's own", lambda pipe, helper: None),
                                  ("dict", original)):
                deepcache._find_steps_once = finder
                s = ev.evaluate(config).speed
                rows.append({"interval": interval, "lookup": label, "round": round_,
                             "speed": s.as_dict()})
                log(f"N={interval} {label:16s} {s.value:.3f}x [{s.speedup.low:.3f}, "
                    f"{s.speedup.high:.3f}] pairs {s.pairs}")
    deepcache._find_steps_once = original
    (out / "lookup.json").write_text(json.dumps({**header(), "rows": rows}, indent=1))


def trace(out: Path, args) -> None:
    """Raw timings for designing the measurement offline (benchmarks/timing_replay.py): for
    each configuration, plain and accelerated runs of one batch alternated for `--seconds`,
    every run recorded (start, seconds, and the apply/undo time around an accelerated one)."""
    from tuner.app import build
    from tuner.options import RunOptions
    from tuner.setting import Goal

    session = build(RunOptions(pipe=args.sd, steps=args.steps, batch_size=4, num_samples=8,
                               goal=Goal(metric="ssim"), clip_model=args.clip, device=DEVICE,
                               progress=False))
    ev = session.evaluator
    base = ev.measure_baseline()
    log(f"plain {base.latency.median:.3f}s (spread {base.latency.spread:.1%})")
    segments = []
    for label in args.configs:
        config, runs = SD15_CONFIGS[label], []

        def record(kind: str) -> None:
            seconds: dict = {}
            run = ev._plain(1, seconds) if kind == "plain" else \
                ev._accelerated(config, [1], {}, seconds)
            runs.append({"kind": kind, "start": run.start, "seconds": run.seconds,
                         "apply_undo": seconds.get("apply_undo", 0.0)})

        ev._accelerated(config, [0], {}, {})  # warm-up
        began = time.perf_counter()
        while time.perf_counter() - began < args.seconds:
            record("plain")
            record("accelerated")
        record("plain")
        plain = statistics.median(r["seconds"] for r in runs if r["kind"] == "plain")
        fast = statistics.median(r["seconds"] for r in runs if r["kind"] == "accelerated")
        log(f"{label}: {len(runs)} runs, plain median {plain:.3f}s, "
            f"accelerated median {fast:.3f}s")
        segments.append({"config": label, "params": config, "runs": runs})
    (out / "trace.json").write_text(json.dumps({**header(), "steps": args.steps,
                                                "segments": segments}, indent=1))


def _tuner(argv: list[str], *, pythonpath: Path = ROOT, limit: float | None = None
           ) -> tuple[float, str]:
    """Run `tuner run`; stopped with SIGINT (it resumes later) after `limit` seconds."""
    import signal

    # PYTHONSAFEPATH: `-m tuner` must not find the tuner of the working directory first (it
    # did, in this benchmark's first version: its "tuner 0.1" rows were this tuner's).
    env = {**os.environ, "PYTHONSAFEPATH": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "run", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        text, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate()
    wall = time.monotonic() - started
    log(f"tuner run exited {proc.returncode} after {wall:.1f}s")
    return wall, text


def _common(args) -> list[str]:
    argv = ["--pipe", args.sd, "--device", DEVICE, "--steps", str(args.steps),
            "--batch-size", "4", "--num-samples", str(args.num_samples), "--metric", args.metric,
            "--req-score-loss", str(args.budget), "--no-progress", "--no-artifacts"]
    if args.prompts:
        argv += ["--prompts", args.prompts]
    if args.cost_clip:
        argv += ["--clip-model", args.cost_clip]
    return argv


def grid(out: Path, args) -> None:
    """The DeepCache grid, every point fully evaluated: pairs per trial, the answer's interval."""
    from tuner.record import StudyRecord, trial_records
    from tuner.search.studies import locate

    studies = out / "grid"
    wall, text = _tuner([*_common(args), "--combo", "deepcache", "--sampler", "grid",
                         "--trials", "16", "--full-front", "--studies", str(studies),
                         "--output", str(studies / "search_params.json")])
    log(text[-4000:])
    storage = locate(str(studies)).storage()
    import optuna

    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    rows = [{"trial": r.number, "config": r.config, "speed": r.speed.as_dict(),
             "seconds": r.seconds} for r in trial_records(study) if r.speed and r.original]
    confirmation = StudyRecord.of(study).confirmation
    report = {**header(), "wall_s": wall, "trials": rows,
              "confirmation": confirmation.as_dict() if confirmation else None}
    (out / "grid.json").write_text(json.dumps(report, indent=1))
    (out / "grid.log").write_text(text)


def cost(out: Path, args) -> None:
    """`tuner run --combo all` on `--sd` (the SD1.5 architecture by default), timed from start
    to answer, with this tuner (its defaults: repeats free, pruning, patience) or with tuner 0.1
    (`--old DIR`: 4 fixed pairs, no pruning, repeats counted, `--trials` per combo). Reruns
    resume, so a run longer than one command's limit is finished by running it again (wall
    times add up)."""
    old = args.old is not None
    label = args.label or ("old" if old else "new")
    studies = out / f"cost-{label}"
    argv = [*_common(args), "--combo", args.combo, "--studies", str(studies), "--output",
            str(studies / "search_params.json")]
    if args.trials:
        argv += ["--trials", str(args.trials)]
    argv += shlex.split(args.tuner_args)
    if args.threads:
        if old:
            raise SystemExit("tuner 0.1 has no --threads: it takes torch's default (all cores)")
        argv += ["--threads", str(args.threads)]
    wall, text = _tuner(argv, pythonpath=Path(args.old) if old else ROOT, limit=args.limit)
    log(f"== {label}: {wall:.1f}s\n{text[-3000:]}")
    with (out / f"cost-{label}.log").open("a") as f:
        f.write(f"\n# wall {wall:.1f}s\n{text}")
    from tuner.search.results import FORMAT
    from tuner.search.studies import locate
    import optuna

    storage = locate(str(studies)).storage()
    trials = []
    for name in optuna.get_all_study_names(storage):
        for t in optuna.load_study(study_name=name, storage=storage).trials:
            if t.datetime_complete and t.datetime_start:
                trials.append({"study": name, "number": t.number, "state": t.state.name,
                               "seconds": (t.datetime_complete - t.datetime_start)
                               .total_seconds(), "params": t.params})
    results = studies / "search_params.json"
    answer = json.loads(results.read_text()) if results.is_file() else None
    if answer is not None and answer["format"] != (1 if old else FORMAT):
        raise SystemExit(f"the {label} run wrote results format {answer['format']}: it ran "
                         f"the other tuner")
    (out / f"cost-{label}.json").write_text(json.dumps(
        {**header(), "argv": argv, "wall_s": wall, "trials": trials,
         "answer": answer}, indent=1))


def spent(out: Path, args) -> None:
    """Where a `cost` run's seconds went (any machine; reads `cost-LABEL/` in --out): per combo,
    the evaluations, their seconds by kind of run, and the share spent by evaluations that set
    runs aside as disturbed and measured more pairs instead (timing.py's trust rule)."""
    import optuna

    from tuner.record import StudyRecord, trial_records
    from tuner.search.studies import locate

    label = args.label or "new"
    log_text = stored.read_text(out / f"cost-{label}.log")
    walls = [float(line.split()[2].rstrip("s")) for line in log_text.splitlines()
             if line.startswith("# wall ")]
    storage = locate(str(stored.studies(out / f"cost-{label}"))).storage()
    rows = []
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        done = [r for r in trial_records(study) if r.evaluated and r.seconds]
        disturbed = [r for r in done if r.speed.rejected]
        seconds = {kind: sum(r.seconds.get(kind, 0.0) for r in done)
                   for kind in ("total", "plain", "accelerated", "apply_undo", "scoring")}
        row = {"combo": StudyRecord.of(study).combo, "evaluations": len(done),
               "pruned": sum(r.state == "PRUNED" for r in done), "seconds": seconds,
               "with_runs_set_aside": len(disturbed),
               "their_seconds": sum(r.seconds["total"] for r in disturbed),
               "trusted_pairs": sum(r.speed.pairs for r in done),
               "runs_set_aside": sum(r.speed.rejected for r in done)}
        rows.append(row)
        log(f"{row['combo']:22s} {row['evaluations']:4d} evaluations ({row['pruned']} pruned) "
            f"{seconds['total']:7.1f} s: plain {seconds['plain']:.0f}, accelerated "
            f"{seconds['accelerated']:.0f}; {len(disturbed)} set runs aside and took "
            f"{row['their_seconds']:.0f} s; runs set aside {row['runs_set_aside']}, trusted "
            f"pairs {row['trusted_pairs']}")
    log(f"wall {sum(walls):.0f} s in {len(walls)} runs; evaluations "
        f"{sum(r['seconds']['total'] for r in rows):.0f} s")
    (out / f"spent-{label}.json").write_text(json.dumps(
        {"wall_s": walls, "combos": rows}, indent=1) + "\n")


def _chosen(answer: dict) -> dict:
    """The chosen configuration of a search_params.json, either format (1: tuner 0.1's)."""
    (setting,) = answer["settings"].values()
    (goal,) = [setting["max_speedup"]] if answer["format"] == 1 else setting["answers"].values()
    return goal["chosen"]


def compare(out: Path, args) -> None:
    """The `cost` runs (`--labels`) side by side: seconds, trials, and their answers measured
    again in one race here (their own numbers are each a search's estimate, tuner 0.1's a
    maximum over single measurements); quality of each with the full quality set."""
    from tuner.app import build
    from tuner.options import RunOptions
    from tuner.setting import Goal
    from tuner.timing import TimingPolicy

    runs = {label: stored.read_json(out / f"cost-{label}.json") for label in args.labels}
    report = {**header(), "runs": {}}
    for label, run in runs.items():
        states = [t["state"] for t in run["trials"]]
        report["runs"][label] = {"wall_s": run["wall_s"], "trials": len(states),
                                 "complete": states.count("COMPLETE"),
                                 "pruned": states.count("PRUNED"),
                                 "chosen": _chosen(run["answer"])}
        log(f"{label}: {run['wall_s']:.0f} s, {len(states)} trials recorded "
            f"({states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned)")
    first = args.labels[0]
    for label in args.labels[1:]:
        ratio = runs[label]["wall_s"] / runs[first]["wall_s"]
        report[f"{label}_over_{first}"] = ratio
        log(f"seconds per answer, {label} / {first}: {ratio:.2f}")
    session = build(RunOptions(pipe=args.sd, steps=args.steps, batch_size=4,
                               num_samples=args.num_samples, goal=Goal(metric=args.metric),
                               clip_model=args.cost_clip or "auto", prompts=args.prompts,
                               device=DEVICE, threads=args.threads, progress=False))
    report["threads"] = session.threads
    log(f"answers measured again with {session.threads} CPU threads")
    ev = session.evaluator
    ev.timing = ev.plain_runs.policy = TimingPolicy(max_pairs=24)
    configs = [report["runs"][label]["chosen"]["params"] for label in args.labels]
    race = ev.race(configs, keep=lambda intervals: set(intervals))
    for label, config, speed in zip(args.labels, configs, race.speeds):
        quality = ev.evaluate(config).quality
        report["runs"][label]["measured_again"] = {"speed": speed.as_dict(),
                                                   "quality": quality.as_dict()}
        log(f"{label}'s answer {config}: {speed.value:.3f}x [{speed.speedup.low:.3f}, "
            f"{speed.speedup.high:.3f}], {quality.metric} loss {quality.loss.value:.2%} "
            f"[{quality.loss.low:.2%}, {quality.loss.high:.2%}]")
    (out / "cost-compare.json").write_text(json.dumps(report, indent=1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["speedups", "grid", "cost", "compare", "lookup",
                                         "trace", "spent"])
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--trials", type=int, help="for cost: --trials (default: tuner's)")
    parser.add_argument("--old", help="for cost: a checkout of tuner 0.1 to run instead")
    parser.add_argument("--limit", type=float, help="for cost: stop the run after this long")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sd", default="sd1.5-random")
    parser.add_argument("--sdxl", default="sdxl-random")
    parser.add_argument("--clip", default="clip-l-random")
    # For cost with a trained model (both tuners take a folder): its CLIP, captions, budget.
    parser.add_argument("--cost-clip", help="for cost: --clip-model (default: tuner's)")
    parser.add_argument("--prompts", help="for cost: --prompts")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--metric", default="ssim")
    parser.add_argument("--budget", type=float, default=0.05, help="--req-score-loss")
    parser.add_argument("--threads", type=int, help="for cost and compare: CPU threads")
    parser.add_argument("--label", help="for cost: the run's name (default old or new)")
    parser.add_argument("--combo", default="all", help="for cost: --combo")
    parser.add_argument("--tuner-args", default="",
                        help="for cost: more `tuner run` arguments, one string")
    parser.add_argument("--labels", nargs="+", default=["old", "new"],
                        help="for compare: the runs, the first the reference")
    parser.add_argument("--configs", nargs="+", default=["DeepCache N=3 b0", "ToMe 0.5 md1",
                                                          "DC N=3 + ToMe 0.5 md1"],
                        help="for trace: configurations (names of SD15_CONFIGS)")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="for trace: seconds of alternating runs per configuration")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    {"speedups": speedups, "grid": grid, "cost": cost, "compare": compare,
     "lookup": lookup, "trace": trace, "spent": spent}[args.part](out, args)


if __name__ == "__main__":
    main()
