"""GPU benchmark of tuner: accelerator speedups, the stability of the tuner's speedup, the
tuner's overhead per trial, an end-to-end run, and 1 vs 2 workers.

Full-size SD1.5 and SDXL architectures are built from their configs with seeded random weights
(no downloads): timings are real, quality numbers are meaningless. Every speedup printed here is
measured by the tuner's own protocol: accelerated runs interleaved with plain ones, each compared
with the plain runs just before and after it, median of the ratios.

    python benchmarks/gpu_bench.py sd15 --out OUT         # SD1.5 speedups + stability
    python benchmarks/gpu_bench.py sdxl --out OUT         # SDXL speedups
    python benchmarks/gpu_bench.py e2e --out OUT          # table 3 (+ overhead)
    python benchmarks/gpu_bench.py workers --out OUT      # trials per hour, 1 vs 2 workers
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuner import metrics, pipelines, prompts  # noqa: E402
from tuner.evaluator import Evaluator, Setting, TimingPlan  # noqa: E402
from tuner.search.studies import device_name, versions  # noqa: E402

DC = {"deepcache": {"cache_interval": 3, "cache_branch_id": 0}}
TGATE = {"gate_step": 10, "sp_interval": 5, "fi_interval": 1, "warmup": 2}
SD15_CONFIGS = {
    "DeepCache N=2 b0": {"deepcache": {"cache_interval": 2, "cache_branch_id": 0}},
    "DeepCache N=5 b0": {"deepcache": {"cache_interval": 5, "cache_branch_id": 0}},
    "DeepCache N=3 b2": {"deepcache": {"cache_interval": 3, "cache_branch_id": 2}},
    "ToMe r=0.5 md=1": {"tome": {"ratio": 0.5, "max_downsample": 1}},
    "ToMe r=0.5 md=2": {"tome": {"ratio": 0.5, "max_downsample": 2}},
    "T-GATE 10/5/1/2": {"tgate": TGATE},
    "DC N=3 + ToMe 0.5 md1": {**DC, "tome": {"ratio": 0.5, "max_downsample": 1}},
    "DC N=3 + T-GATE": {**DC, "tgate": TGATE},
    "DC N=3 + ToMe + T-GATE": {**DC, "tome": {"ratio": 0.5, "max_downsample": 1},
                               "tgate": TGATE},
}
FIXED = ("DeepCache N=3 b0", DC)  # measured 5 times across the SD1.5 run: stability
SDXL_CONFIGS = {
    "DeepCache N=3 b0": DC,
    "DeepCache N=5 b0": {"deepcache": {"cache_interval": 5, "cache_branch_id": 0}},
    "ToMe r=0.5 md=2": {"tome": {"ratio": 0.5, "max_downsample": 2}},
    "T-GATE 10/5/1/2": {"tgate": TGATE},
    "DC N=3 + T-GATE": {**DC, "tgate": TGATE},
}


def log(*parts):
    print(*parts, flush=True)


def evaluator_for(preset: str, batch: int, samples: int, args) -> Evaluator:
    device = torch.device(args.device)
    pipe = pipelines.load_pipeline(preset, device=device)
    pipelines.set_scheduler(pipe, "DDIM")
    h, w = pipelines.native_size(pipe)
    setting = Setting(preset, "DDIM", args.steps, h, w, batch, samples, 42)
    scorer = metrics.load_clip_scorer(args.clip, device=device,
                                      dtype=pipelines.default_dtype(device))
    chosen = prompts.choose_prompts(prompts.BUILTIN_PROMPTS, samples, 42)
    return Evaluator(pipe, setting, chosen, scorer, timing=TimingPlan(pairs=args.pairs))


def span(values) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def row(name: str, ev) -> dict:
    t = ev.timing
    naive = t.baseline.samples[0] / t.accelerated.samples[0]  # one plain / one accelerated run
    return {"config": name, "speedup": ev.speedup, "ratio_spread": ev.speedup_spread,
            "naive_single_pair": naive, "latency": ev.latency,
            "baseline_latency": ev.baseline_latency, "ratios": list(t.ratios.samples),
            "baseline_runs": list(t.baseline.samples),
            "accelerated_runs": list(t.accelerated.samples), "seconds": ev.work}


def header(args) -> dict:
    return {"device": device_name(torch.device(args.device)), "versions": versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "steps": args.steps, "pairs": args.pairs}


def measured_baseline(preset: str, batch: int, samples: int, args, label: str):
    ev = evaluator_for(preset, batch, samples, args)
    base = ev.measure_baseline()
    log(f"{label} baseline {base.latency.median:.3f}s spread {base.latency.spread:.1%}")
    return ev, base


def speedups_sd15(out: Path, args) -> dict:
    report = header(args)
    # SD1.5 512x512 batch 4: the fixed config is measured 5 times, spread over the run.
    ev, base = measured_baseline(args.sd, 4, 8, args, "SD1.5")
    rows, fixed = [], []
    names = list(SD15_CONFIGS)
    slots = {0, 2, 4, 6, len(names)}  # measure the fixed config before these positions
    table_plan = ev.plan
    for i in range(len(names) + 1):
        if i in slots:
            ev.plan = TimingPlan(pairs=args.fixed_pairs)
            e = ev.evaluate(FIXED[1])
            ev.plan = table_plan
            fixed.append(row(FIXED[0], e))
            log(f"  [fixed] {FIXED[0]}: {e.speedup:.3f}x "
                f"(naive {fixed[-1]['naive_single_pair']:.3f}x)")
        if i < len(names):
            e = ev.evaluate(SD15_CONFIGS[names[i]])
            rows.append(row(names[i], e))
            log(f"  {names[i]}: {e.speedup:.3f}x spread {e.speedup_spread:.1%}")
    # The first k pairs of a measurement are exactly what a k-pair measurement gives.
    stability = {}
    for k in range(1, args.fixed_pairs + 1):
        values = [statistics.median(r["ratios"][:k]) for r in fixed]
        stability[k] = {"speedups": values, "span": span(values)}
    naive = [r["naive_single_pair"] for r in fixed]
    report["sd15"] = {"baseline": base.latency.as_dict(), "rows": rows, "fixed": fixed,
                      "stability_by_pairs": stability, "naive_single_pair": naive,
                      "naive_span": span(naive)}
    for k, entry in stability.items():
        log(f"stability with {k:2d} pairs: {' '.join('%.3f' % v for v in entry['speedups'])} "
            f"span {entry['span']:.2%}")
    log(f"naive single pair: {' '.join('%.3f' % v for v in naive)} span {span(naive):.2%}")
    (out / "speedups_sd15.json").write_text(json.dumps(report, indent=1))
    return report


def speedups_sdxl(out: Path, args) -> dict:
    report = header(args)
    # SDXL 1024x1024 batch 1.
    ev, base = measured_baseline(args.sdxl, 1, 2, args, "SDXL")
    rows = []
    for name, config in SDXL_CONFIGS.items():
        e = ev.evaluate(config)
        rows.append(row(name, e))
        log(f"  {name}: {e.speedup:.3f}x spread {e.speedup_spread:.1%}")
    report["sdxl"] = {"baseline": base.latency.as_dict(), "rows": rows}
    (out / "speedups_sdxl.json").write_text(json.dumps(report, indent=1))
    return report


def _tuner(args_list, env=None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tuner", "run", *args_list],
                          cwd=ROOT, env={**os.environ, **(env or {}),
                               "PYTHONPATH": os.pathsep.join(filter(None, [
                                   str(ROOT), os.environ.get("PYTHONPATH")]))},
                          capture_output=True, text=True)
    return time.monotonic() - start, proc


def _trials(storage: str):
    import optuna

    found = []
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        found += [(name, t) for t in study.trials]
    return found


def overhead_of(trials) -> dict:
    """Trial wall time against the pipeline work inside it (accelerated + plain runs)."""
    rows = []
    for _, t in trials:
        sec = t.user_attrs.get("seconds")
        if not sec or t.datetime_complete is None or "duplicate_of" in t.user_attrs:
            continue
        wall = (t.datetime_complete - t.datetime_start).total_seconds()
        work = sec["accelerated"] + sec["plain"]
        rows.append({"wall": wall, "pipeline": work, "plain_timing": sec["plain"],
                     "accelerated": sec["accelerated"], "apply_undo": sec["apply_undo"],
                     "scoring": sec["scoring"], "ratio": wall / work})
    ratios = [r["ratio"] for r in rows]
    return {"trials": rows, "median_ratio": statistics.median(ratios) if ratios else None,
            "max_ratio": max(ratios) if ratios else None}


def e2e(out: Path, args) -> dict:
    studies = out / "e2e"
    cmd = ["--pipe", args.sd, "--device", args.device, "--combo", "all",
           "--trials", str(args.trials),
           "--num-samples", "8", "--batch-size", "4", "--steps", str(args.steps),
           "--studies", str(studies), "--output", str(studies / "search_params.json"),
           "--no-progress"]
    started = datetime.now(timezone.utc)
    wall, proc = _tuner(cmd)
    (out / "e2e.log").write_text(proc.stdout + proc.stderr)
    log(proc.stdout[-3000:], proc.stderr[-2000:])
    trials = _trials(f"sqlite:///{studies / 'tuner.db'}")
    done = [t for _, t in trials if t.datetime_complete]
    first = min((t.datetime_complete for t in done), default=None)
    report = {"command": "tuner run " + " ".join(cmd), "returncode": proc.returncode,
              "wall_s": wall, "trials": len(done),
              "evaluated": sum(1 for t in done if "duplicate_of" not in t.user_attrs),
              "trials_per_hour": 3600 * len(done) / wall,
              "first_result_s": (first.replace(tzinfo=timezone.utc) - started).total_seconds()
              if first else None,
              "overhead": overhead_of(trials)}
    (out / "e2e.json").write_text(json.dumps(report, indent=1, default=str))
    log(json.dumps({k: v for k, v in report.items() if k != "overhead"}, default=str))
    log("overhead median", report["overhead"]["median_ratio"], "max",
        report["overhead"]["max_ratio"])
    return report


def workers(out: Path, args) -> dict:
    report = {"device_count": torch.cuda.device_count(),
              "device": device_name(torch.device(args.device))}
    for count in (1, 2):
        studies = out / f"workers{count}"
        cmd = ["--pipe", args.sd, "--device", args.device, "--combo", "deepcache+tome", "--trials",
               str(args.trials * count), "--num-samples", "8", "--batch-size", "4",
               "--steps", str(args.steps), "--studies", str(studies), "--output",
               str(studies / "search_params.json"), "--no-progress", "--workers", str(count)]
        wall, proc = _tuner(cmd)
        (out / f"workers{count}.log").write_text(proc.stdout + proc.stderr)
        trials = [t for _, t in _trials(f"sqlite:///{studies / 'tuner.db'}")]
        done = [t for t in trials if t.datetime_complete and t.state.name == "COMPLETE"]
        evaluated = [t for t in done if "duplicate_of" not in t.user_attrs]
        # Throughput over the search itself: first trial start to last trial end.
        span = (max(t.datetime_complete for t in done)
                - min(t.datetime_start for t in done)).total_seconds()
        params = [json.dumps(t.params, sort_keys=True) for t in evaluated]
        report[count] = {"returncode": proc.returncode, "wall_s": wall, "trials": len(done),
                         "evaluated": len(evaluated), "search_s": span,
                         "evaluated_per_hour": 3600 * len(evaluated) / span,
                         "duplicate_evaluations": len(params) - len(set(params))}
        log(count, "workers:", report[count])
    report["scaling"] = report[2]["evaluated_per_hour"] / report[1]["evaluated_per_hour"]
    log(f"scaling with 2 workers: {report['scaling']:.2f}x")
    (out / "workers.json").write_text(json.dumps(report, indent=1))
    return report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["sd15", "sdxl", "e2e", "workers"])
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--fixed-pairs", type=int, default=10,
                        help="pairs of the 5 measurements of the fixed configuration")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sd", default="sd1.5-random", help="SD1.5-topology preset")
    parser.add_argument("--sdxl", default="sdxl-random", help="SDXL-topology preset")
    parser.add_argument("--clip", default="clip-l-random")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    {"sd15": speedups_sd15, "sdxl": speedups_sdxl, "e2e": e2e,
     "workers": workers}[args.part](out, args)


if __name__ == "__main__":
    main()
