"""Step times on a GPU (timing.StepTimer): does every timed run carry one time per denoiser
call, eager and under CUDA graphs, plain and with DeepCache, without slowing the run? And
plain and DeepCache runs in alternation, quiet and beside the bursty neighbour
(`bursty.py --matmul`), every run with its step times, so that the speedup can be computed
from the same runs judged whole and step by step (`--replay`, on any machine).

    python benchmarks/step_times.py --out OUT            # on the GPU
    python benchmarks/step_times.py --replay OUT/runs.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuner.timing import Brackets, PlainRuns, Run, TimingPolicy, step_envelope  # noqa: E402

DEEPCACHE = {"deepcache": {"cache_interval": 4, "cache_branch_id": 0}}
CONFIGS = {"deepcache N=4 b0": DEEPCACHE, "graphs": {"graphs": {"enabled": 1}},
           "graphs + deepcache N=4 b0": {**DEEPCACHE, "graphs": {"enabled": 1}}}


def log(*parts) -> None:
    print(*parts, flush=True)


def as_dict(run: Run) -> dict:
    return {"start": run.start, "seconds": run.seconds, "steps": list(run.steps)}


def of_dict(d: dict) -> Run:
    return Run(d["start"], d["seconds"], tuple(d["steps"]))


def overhead(ev, repeats: int) -> dict:
    """Each configuration (and plain) timed with and without step times, alternately."""
    found = {}
    timer = ev.step_timer
    for name, config in {"plain": None, **CONFIGS}.items():
        batch = ev._timed[0]

        def once():
            return ev._plain(batch, {}) if config is None else \
                ev._accelerated(config, [batch], {}, {})

        once()  # warm-up (captures graphs)
        runs = {"with": [], "without": []}
        for _ in range(repeats):
            for kind in ("with", "without"):
                ev.step_timer = timer if kind == "with" else None
                runs[kind].append(once())
        ev.step_timer = timer
        found[name] = {k: [as_dict(r) for r in v] for k, v in runs.items()}
        with_ = runs["with"]
        log(f"{name}: with step times {statistics.median(r.seconds for r in with_):.4f}s, "
            f"without {statistics.median(r.seconds for r in runs['without']):.4f}s; steps per "
            f"run {sorted({len(r.steps) for r in with_})}, steps' share of the run "
            f"{statistics.median(sum(r.steps) / r.seconds for r in with_):.3f}; first steps "
            f"{[round(s * 1000, 1) for s in with_[-1].steps[:6]]} ms")
    return found


def alternate(ev, pairs: int, config: dict = DEEPCACHE) -> dict:
    """Plain and accelerated runs in alternation (plain first and last), with step times."""
    batch = ev._timed[0]
    ev._accelerated(config, [batch], {}, {})
    plain, accelerated = [ev._plain(batch, {})], []
    for _ in range(pairs):
        accelerated.append(ev._accelerated(config, [batch], {}, {}))
        plain.append(ev._plain(batch, {}))
    return {"plain": [as_dict(r) for r in plain], "accelerated": [as_dict(r) for r in
                                                                   accelerated]}


def replay(path: Path) -> None:
    """The speedup of each phase's runs, judged whole and step by step, and how many steps
    the envelope took at their neighbours' value."""
    data = json.loads(path.read_text())
    for phase in ("quiet", "neighbour"):
        if phase not in data:
            continue
        plain = [of_dict(d) for d in data[phase]["plain"]]
        accelerated = [of_dict(d) for d in data[phase]["accelerated"]]
        for steps in (False, True):
            e = judged(plain, accelerated, steps=steps)
            log(f"{phase}, judged {'step by step' if steps else 'whole'}: {e.speedup} "
                f"({e.pairs} pairs trusted, {e.rejected} set aside); plain median "
                f"{statistics.median(r.seconds for r in plain):.3f}s")
        for name, runs in (("plain", plain), ("accelerated", accelerated)):
            found = step_envelope(runs, policy=TimingPolicy())
            changed = sum(a != b for r in runs for a, b in zip(r.parts, found[r].parts))
            total = sum(len(r.parts) for r in runs)
            log(f"  {name}: {changed} of {total} steps taken at their neighbours' value; "
                f"run seconds {min(r.seconds for r in runs):.3f}-"
                f"{max(r.seconds for r in runs):.3f}, enveloped "
                f"{min(found[r].seconds for r in runs):.3f}-"
                f"{max(found[r].seconds for r in runs):.3f}")


def judged(plain: list[Run], accelerated: list[Run], *, steps: bool):
    """The tuner's speedup estimate from runs measured in alternation (plain first and last),
    judged whole or step by step."""
    policy = TimingPolicy(steps=steps, repeat_every=0)
    series = PlainRuns(_Still(), policy)
    b = Brackets(series)
    for before, a, after in zip(plain, accelerated, plain[1:]):
        b.add(before, a, after)
    for r in plain:
        series.add(r)
    return b.estimate()


class _Still:
    def now(self) -> float:
        return 0.0

    def sync(self) -> None:
        pass


def pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `build_stepped` reads."""
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--preset", default="sd1.5-random")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--clip-model", default="clip-l-random")


def build_stepped(args):
    """The session of `args.preset` (batch 4, 8 samples), its evaluator with a step timer."""
    from tuner.app import build
    from tuner.options import RunOptions
    from tuner.setting import Goal
    from tuner.timing import StepTimer

    session = build(RunOptions(pipe=args.preset, steps=args.steps, batch_size=4,
                               num_samples=8, goal=Goal(metric="ssim"),
                               clip_model=args.clip_model, device=args.device, threads=1,
                               progress=False))
    ev = session.evaluator
    if ev.step_timer is None:  # judging by step turned off: the timer is what is measured
        ev.step_timer = StepTimer(session.pipe.device)
    return session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    parser.add_argument("--replay")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=16)
    pipeline_arguments(parser)
    args = parser.parse_args()
    if args.replay:
        replay(Path(args.replay))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    session = build_stepped(args)
    if args.device == "cpu":  # no CUDA graphs there
        for name in [n for n in CONFIGS if "graphs" in n]:
            del CONFIGS[name]
    ev = session.evaluator
    ev.measure_baseline()
    data = {"device": session.setting.device, "steps": args.steps,
            "policy": dataclasses.asdict(ev.timing)}
    data["overhead"] = overhead(ev, args.repeats)
    data["quiet"] = alternate(ev, args.pairs)
    (out / "runs.json").write_text(json.dumps(data))
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "bursty.py"),
                             *(["--matmul", "--device", args.device] if args.device != "cpu"
                               else [])])
    try:
        time.sleep(2)
        data["neighbour"] = alternate(ev, args.pairs)
    finally:
        proc.terminate()
        proc.wait()
    (out / "runs.json").write_text(json.dumps(data))
    replay(out / "runs.json")


if __name__ == "__main__":
    main()
