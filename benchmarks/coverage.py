"""Do the speedup intervals hold? Configurations are screened as a search does, the best ones
raced for an answer, and then every configuration is measured again: later in the same run, and
in a second process. The benchmark reports how often a screening interval, and the answer's
interval, holds the value measured again (and, in simulation, the true speedup).

Two modes:

* `sim`: a simulated machine whose truth is known. Each run takes its true time times log-normal
  jitter; the speedup itself drifts between moments (every `--moment` seconds it takes a new
  value, log-normal about the truth with `--drift` 0-6 %: what bracketing cannot cancel); and,
  beside a neighbour, bursts (0.3-2 s, pauses 0.5-3 s) slow every run they overlap by
  `--burst-slowdown` for the overlapped part: noise that only slows. One row per scenario, many
  seeds each; raw measurements go to `--out`.
* `gpu`: the same on a GPU with full-size SD1.5 (random weights, fp16, 512², batch 4, 25 DDIM
  steps), quiet and then beside a bursty neighbour (`bursty.py --matmul`: 8192² fp16 matmuls in
  another process), with the second process's re-measurement run after both. One command within
  `--budget` seconds; everything it measures goes to `--out` as it comes.

    python benchmarks/coverage.py sim --out benchmarks/results/2026-12-05-coverage-sim
    python benchmarks/coverage.py gpu --out OUT --budget 480
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuner.answer import still_in_race  # noqa: E402
from tuner.evaluator import Evaluator, config_key  # noqa: E402
from tuner.timing import PlainRuns, Run, TimingPolicy, measure_speedup  # noqa: E402

INTERVALS, BRANCHES = (2, 3, 4, 5), (0, 1, 2, 3)
GRID = [{"deepcache": {"cache_interval": n, "cache_branch_id": b}}
        for b in BRANCHES for n in INTERVALS]
# The deepcache grid's speedups on an H200 (SD1.5 architecture, BENCHMARKS.md and the field
# notes), branch 2 and 3 filled in between: the simulation's truths.
TRUTHS = dict(zip([config_key(c) for c in GRID],
                  [1.65, 2.19, 2.58, 2.96, 1.45, 1.81, 1.97, 2.18,
                   1.30, 1.42, 1.50, 1.58, 1.27, 1.35, 1.45, 1.54]))
RACE_AT_MOST = 4
RACE_ROUNDS = 8  # on the GPU: a race within its share of the budget
# A re-measurement is a fixed number of trusted pairs (no precision rule, no curtailment):
# 12 in simulation; 6 on the GPU, for 16 of them within their share of the budget.
SIM_PAIRS, GPU_PAIRS = 12, 6


def log(*parts) -> None:
    print(*parts, flush=True)


def holds(interval: dict, value: float) -> bool:
    return interval["low"] <= value <= interval["high"]


def interval_of(speed) -> dict:
    i = speed.speedup
    return {"value": i.value, "low": i.low, "high": i.high, "pairs": speed.pairs,
            "rejected": speed.rejected}


# -- the search, as the tuner does it -----------------------------------------------------------


def screen(measure, order: list[dict]) -> list[dict]:
    """Each configuration once, at the screening precision, pruned once confidently slower than
    the fastest so far (as tuner.search.objective does); its interval and its cost."""
    rows, best = [], None
    for config in order:
        began = time.perf_counter()
        speed, seconds = measure(config, best)
        rows.append({"config": config, "key": config_key(config), **interval_of(speed),
                     "seconds": seconds, "wall": time.perf_counter() - began,
                     "pruned": best is not None and speed.speedup.high < best})
        if not rows[-1]["pruned"]:
            best = max(best or 0.0, speed.value)
        log(f"  screen {rows[-1]['key']}: {speed.speedup} pairs {speed.pairs} set aside "
            f"{speed.rejected}, {seconds:.1f}s{' pruned' if rows[-1]['pruned'] else ''}")
    return rows


def race(evaluator, rows: list[dict], max_rounds: int | None = None) -> dict:
    """The answer: the screened configurations whose interval overlaps the best one's (the
    fastest RACE_AT_MOST), raced as tuner.search.confirm does; the winner's raced interval."""
    kept = [r for r in rows if not r["pruned"]]
    top = max(kept, key=lambda r: r["value"])
    entries = sorted([r for r in kept if r["high"] >= top["low"]],
                     key=lambda r: -r["value"])[:RACE_AT_MOST]
    raced = Evaluator.race(evaluator, [r["config"] for r in entries],
                           lambda intervals: still_in_race(intervals, {i: 0.0 for i in intervals},
                                                           None),
                           max_rounds=max_rounds)
    best = max(range(len(entries)), key=lambda i: raced.speeds[i].value)
    log(f"  race of {len(entries)}: {entries[best]['key']} {raced.speeds[best].speedup} "
        f"after {raced.rounds} rounds")
    return {"key": entries[best]["key"], "config": entries[best]["config"],
            **interval_of(raced.speeds[best]), "rounds": raced.rounds,
            "raced": [{"key": e["key"], **interval_of(s)} for e, s in zip(entries, raced.speeds)]}


def coverage(rows: list[dict], answer: dict | None, references: dict[str, list[float]]) -> dict:
    """Shares of screening intervals, and of the answer's, that hold each reference value."""
    screened = [holds(r, v) for r in rows for v in references.get(r["key"], [])]
    answered = [] if answer is None else \
        [holds(answer, v) for v in references.get(answer["key"], [])]
    return {"screening": sum(screened) / len(screened) if screened else None,
            "screening_n": len(screened),
            "answer": sum(answered) / len(answered) if answered else None,
            "answer_n": len(answered)}


# -- simulation ---------------------------------------------------------------------------------


class _Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def now(self) -> float:
        return self.t

    def sync(self) -> None:
        pass


CONFIGS = {config_key(c): c for c in GRID}
REMAINDER = 0.04  # of a plain run: its part outside the denoising steps (decoding, setup)


class Machine:
    """One simulated GPU: the moments' drift of each configuration's speedup and the
    neighbour's bursts are properties of the machine, shared by the processes on it.

    With `steps`, a run is that many denoising steps and a remainder (REMAINDER of a plain
    run, at its end), each step with its own jitter (`step_jitter`, log-normal) on top of the
    run's, and a burst slows the steps it overlaps: a plain step is 0.96/steps of a plain run;
    a DeepCache configuration of interval N runs a full step (a plain one's work) at every
    N-th position from the first and shallow steps between, whose work makes up its speedup.
    Runs then carry their step times (Run.steps)."""

    def __init__(self, seed: int, *, jitter: float, drift: float, moment: float,
                 bursts: bool, slowdown: float, steps: int = 0, step_jitter: float = 0.0):
        self.rng = random.Random(seed)
        self.jitter, self.drift, self.moment = jitter, drift, moment
        self.slowdown = slowdown
        self.steps, self.step_jitter = steps, step_jitter
        self._moments: dict[tuple[str, int], float] = {}
        self._bursts: list[tuple[float, float]] = []
        if bursts:
            t = self.rng.uniform(0, 3)
            while t < 20000:
                length = self.rng.uniform(0.3, 2.0)
                self._bursts.append((t, t + length))
                t += length + self.rng.uniform(0.5, 3.0)

    def speedup(self, key: str, t: float) -> float:
        """The configuration's speedup in the moment at time t (half of the drift is the
        machine's, common to all configurations, half the configuration's own)."""
        k = int(t // self.moment)
        for name in ("", key):
            if (name, k) not in self._moments:
                self._moments[(name, k)] = self.rng.gauss(0.0, self.drift / math.sqrt(2))
        return TRUTHS[key] * math.exp(self._moments[("", k)] + self._moments[(key, k)])

    def duration(self, start: float, work: float) -> float:
        """Seconds to do `work` seconds of quiet work from `start`, bursts slowing it."""
        t, left = start, work
        for a, b in self._bursts:
            if b <= t:
                continue
            if a >= t + left:
                break
            if a > t:
                left -= a - t
                t = a
            fits = (b - t) / self.slowdown  # work done within the rest of the burst
            if left <= fits:
                return t + left * self.slowdown - start
            left -= fits
            t = b
        return t + left - start

    def run(self, clock: _Clock, plain_seconds: float, key: str | None) -> Run:
        level = plain_seconds * (1 + 0.1 * math.sin(clock.t / 25.0))  # plain drift, bracketed
        work = level if key is None else level / self.speedup(key, clock.t)
        work *= math.exp(self.rng.gauss(0.0, self.jitter))
        if self.steps:
            return self._stepped(clock, level, work, key)
        seconds = self.duration(clock.t, work)
        started, clock.t = clock.t, clock.t + seconds + 0.05  # apply/undo, scoring
        return Run(started, seconds)

    def _stepped(self, clock: _Clock, level: float, work: float, key: str | None) -> Run:
        """One run step by step: `work` (jittered) split into steps and the remainder."""
        scale = work / (level if key is None else level / self.speedup(key, clock.t))
        remainder = REMAINDER * level * scale
        full = (1 - REMAINDER) * level / self.steps * scale
        if key is None:
            works = [full] * self.steps
        else:
            n = CONFIGS[key]["deepcache"]["cache_interval"]
            kinds = [i % n == 0 for i in range(self.steps)]
            shallow = (work - remainder - full * sum(kinds)) / (self.steps - sum(kinds))
            works = [full if k else max(shallow, 0.02 * full) for k in kinds]
        started = t = clock.t
        steps = []
        for w in works:
            steps.append(self.duration(t, w * math.exp(self.rng.gauss(0.0, self.step_jitter))))
            t += steps[-1]
        t += self.duration(t, remainder)
        clock.t = t + 0.05  # apply/undo, scoring
        return Run(started, t - started, tuple(steps))


class SimProcess:
    """A process on the machine: its clock, its plain series; it stands in for the evaluator in
    `Evaluator.race`."""

    def __init__(self, machine: Machine, policy: TimingPolicy, start: float):
        self.machine, self.timing, self.clock = machine, policy, _Clock(start)
        self.plain_runs = PlainRuns(self.clock, policy)
        self.baseline, self._timed = True, [1]
        self._sentinel, self._since_repeat = None, 0  # as the evaluator's (drift)
        for _ in range(4):
            self.plain_runs.add(self._plain(1, {}))

    def _plain(self, k: int, seconds: dict) -> Run:
        return self.machine.run(self.clock, 1.0, None)

    def _accelerated(self, config, batches, images, seconds) -> Run:
        return self.machine.run(self.clock, 1.0, config_key(config))

    def measure(self, config: dict, slower_than: float | None, precision: float):
        """One evaluation's speed part, as Evaluator.evaluate measures it, with the evaluator's
        repeats of its first configuration; (estimate, seconds)."""
        began = self.clock.t
        Evaluator._repeat_sentinel(self, {})
        self._sentinel = self._sentinel or config
        speed, _ = self._measure(config, slower_than, precision)
        return speed, self.clock.t - began

    def reference(self, config: dict) -> float:
        """The configuration measured again: SIM_PAIRS trusted pairs."""
        saved = self.plain_runs.policy
        self.plain_runs.policy = dataclasses.replace(saved, min_pairs=SIM_PAIRS,
                                                     max_pairs=SIM_PAIRS)
        try:
            return self._measure(config, None, 0.0)[0].value
        finally:
            self.plain_runs.policy = saved

    def _measure(self, config: dict, slower_than: float | None, precision: float):
        began = self.clock.t
        warmup = self._accelerated(config, [0], {}, {})
        speed = measure_speedup(lambda: self._plain(1, {}),
                                lambda: self._accelerated(config, [1], {}, {}),
                                self.plain_runs, precision=precision, warmup=warmup,
                                key=config_key(config),
                                decided=lambda i: slower_than is not None and i is not None
                                and i.high < slower_than)
        return speed, self.clock.t - began


def simulate(seed: int, *, policy: TimingPolicy, jitter: float, drift: float, moment: float,
             bursts: bool, slowdown: float, steps: int = 0, step_jitter: float = 0.0) -> dict:
    """One run of the benchmark on a simulated machine: screen the grid, race, re-measure
    every configuration later in the run and in a second process."""
    machine = Machine(seed, jitter=jitter, drift=drift, moment=moment, bursts=bursts,
                      slowdown=slowdown, steps=steps, step_jitter=step_jitter)
    first = SimProcess(machine, policy, start=0.0)
    order = list(GRID)
    random.Random(seed).shuffle(order)
    rows = screen(lambda c, best: first.measure(c, best, policy.screening), order)
    answer = race(first, rows)
    later = {config_key(c): first.reference(c) for c in GRID}
    second = SimProcess(machine, policy, start=first.clock.t + 120.0)
    again = {config_key(c): second.reference(c) for c in GRID}
    return {"seed": seed, "rows": rows, "answer": answer, "later": later, "second": again,
            "seconds": sum(r["seconds"] for r in rows)}


def sim(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy = TimingPolicy(drift=args.floor, unknown_drift=args.unknown_drift,
                          correlation=args.correlation, jitter_floor=args.jitter_floor,
                          repeat_every=args.repeat_every, steps=args.judge == "steps")
    header = ("| drift between moments | neighbour | screening holds: re-measured | truth | "
              "answer holds: re-measured | truth | answer / truth: median | max | "
              "screening s: mean | set aside |")
    lines = [f"{args.seeds} seeds per row (from {args.first_seed}), the 16-point grid each "
             f"(truths 1.27-2.96x), each configuration re-measured ({SIM_PAIRS} pairs) later "
             f"in the run and in a second process 120 s later; jitter "
             f"{args.jitter:.0%} per run; moments of {args.moment:g} s; bursts slow "
             f"{args.burst_slowdown:g}x; policy: drift floor {policy.drift:.0%} ({policy.unknown_drift:.0%} "
             f"until learned), correlation "
             f"{policy.correlation:.3g}, jitter floor {policy.jitter_floor:g}, repeat every "
             f"{policy.repeat_every}" + (
                 f"; runs of {args.steps} steps ({args.step_jitter:.0%} jitter each), judged "
                 f"{args.judge}" if args.steps else ""), "", header,
             "|---" * 10 + "|"]
    log("\n".join(lines))
    raw = []
    for bursts in [name == "bursts" for name in args.rows]:
        for drift in args.drift:
            runs = [simulate(seed, policy=policy, jitter=args.jitter, drift=drift,
                             moment=args.moment, bursts=bursts, slowdown=args.burst_slowdown,
                             steps=args.steps, step_jitter=args.step_jitter)
                    for seed in range(args.first_seed, args.first_seed + args.seeds)]
            measured, truth, answers = [], [], []
            for r in runs:
                refs = {k: [r["later"][k], r["second"][k]] for k in r["later"]}
                measured.append(coverage(r["rows"], r["answer"], refs))
                truth.append(coverage(r["rows"], r["answer"],
                                      {k: [v] for k, v in TRUTHS.items()}))
                answers.append(r["answer"]["value"] / TRUTHS[r["answer"]["key"]])

            def share(found, what):
                hits = sum(c[what] * c[what + "_n"] for c in found if c[what] is not None)
                return hits / sum(c[what + "_n"] for c in found)

            rejected = sum(row["rejected"] for r in runs for row in r["rows"]) / \
                sum(row["rejected"] + row["pairs"] for r in runs for row in r["rows"])
            lines.append(
                f"| {drift:.0%} | {'bursts' if bursts else 'quiet'} | "
                f"{share(measured, 'screening'):.1%} | {share(truth, 'screening'):.1%} | "
                f"{share(measured, 'answer'):.1%} | {share(truth, 'answer'):.1%} | "
                f"{statistics.median(answers):.3f} | "
                f"{max(answers, key=lambda a: abs(math.log(a))):.3f} | "
                f"{statistics.fmean(r['seconds'] for r in runs):.0f} | {rejected:.0%} |")
            log(lines[-1])
            raw.append({"drift": drift, "bursts": bursts, "runs": runs})
    (out / "coverage.md").write_text("\n".join(lines) + "\n")
    (out / "raw.json").write_text(json.dumps({
        "policy": policy.__dict__, "jitter": args.jitter, "moment": args.moment,
        "slowdown": args.burst_slowdown, "steps": args.steps, "step_jitter": args.step_jitter,
        "judge": args.judge, "truths": TRUTHS, "scenarios": raw}))


def widths(args) -> None:
    """Per row of `sim`'s raw data (raw.json or raw.json.xz): the median relative half-width
    of the answers' intervals and of the screening intervals, and the share of each that
    holds the re-measured values; one table for several files side by side."""
    import stored

    lines = ["| file | drift between moments | neighbour | answer half-width: median | "
             "screening half-width: median | answer holds | screening holds |",
             "|---" * 7 + "|"]

    def half(i: dict) -> float:
        return max(i["value"] - i["low"], i["high"] - i["value"]) / i["value"]

    for name in args.raw:
        data = stored.read_json(name)  # plain, or packed as stored
        for row in data["scenarios"]:
            runs = row["runs"]
            answers = [holds(r["answer"], r[w][r["answer"]["key"]])
                       for r in runs for w in ("later", "second")]
            screened = [holds(x, r[w][x["key"]]) for r in runs for x in r["rows"]
                        for w in ("later", "second")]
            lines.append(
                f"| {name} | {row['drift']:.0%} | {'bursts' if row['bursts'] else 'quiet'} | "
                f"{statistics.median(half(r['answer']) for r in runs):.1%} | "
                f"{statistics.median(half(x) for r in runs for x in r['rows']):.1%} | "
                f"{sum(answers) / len(answers):.1%} | {sum(screened) / len(screened):.1%} |")
    log("\n".join(lines))


# -- on a GPU -----------------------------------------------------------------------------------


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def build_session(args):
    from tuner.app import build
    from tuner.options import RunOptions
    from tuner.setting import Goal

    began = time.perf_counter()
    session = build(RunOptions(pipe=args.preset, steps=args.steps, batch_size=args.batch_size,
                               num_samples=args.num_samples, goal=Goal(metric="ssim"),
                               clip_model=args.clip_model, device=args.device, threads=1,
                               progress=False, judge_steps=args.judge == "steps"))
    if args.judge == "steps" and session.evaluator.step_timer is None:  # a CPU: asked here
        from tuner.timing import StepTimer

        session.evaluator.step_timer = StepTimer(session.pipe.device)
    base = session.evaluator.measure_baseline()
    log(f"{args.preset} on {args.device}, runs judged {args.judge}: built and baseline in "
        f"{time.perf_counter() - began:.1f}s, plain {base.latency.median:.3f}s")
    return session


def gpu_measure(ev, config: dict, slower_than: float | None, pairs: int | None = None):
    """One evaluation (speed first, pruned as a search prunes it), or with `pairs` a
    re-measurement of that many trusted pairs; (estimate, seconds)."""
    began = time.perf_counter()
    saved = ev.timing
    if pairs is not None:
        ev.timing = ev.plain_runs.policy = dataclasses.replace(
            saved, min_pairs=pairs, max_pairs=pairs, repeat_every=0)
    try:
        e = ev.evaluate(config, slower_than=slower_than)
    finally:
        ev.timing = ev.plain_runs.policy = saved
    return e.speed, time.perf_counter() - began


def remeasure(ev, order: list[dict], deadline: Deadline) -> dict[str, float]:
    found = {}
    for config in order:
        if deadline.left() < 20:
            log(f"  re-measure: out of time after {len(found)} configurations")
            break
        speed, seconds = gpu_measure(ev, config, None, GPU_PAIRS)
        found[config_key(config)] = speed.value
        log(f"  re-measure {config_key(config)}: {speed.speedup} pairs {speed.pairs}, "
            f"{seconds:.1f}s")
    return found


def screen_within(ev, order: list[dict], deadline: Deadline) -> list[dict]:
    done = []

    def measure(config, best):
        return gpu_measure(ev, config, best)

    for config in order:
        if deadline.left() < 15:
            log(f"  screening: out of time after {len(done)} configurations")
            break
        best = max((r["value"] for r in done if not r["pruned"]), default=None)
        done += screen(lambda c, _: measure(c, best), [config])
        done[-1]["pruned"] = best is not None and done[-1]["high"] < best
    return done


def neighbour(args):
    """The bursty neighbour in another process (bursty.py --matmul), started now."""
    return subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "bursty.py"), "--matmul",
                             "--size", str(args.matmul_size), "--device", args.device])


def gpu(args) -> None:
    """Quiet: screen, race; beside the neighbour: screen the same configurations in the same
    order, race; quiet again: re-measure later in the run; then a second process re-measures
    quietly. Of the budget loading left, screening quiet stops at 25 %, screening beside the
    neighbour at 55 % (each race after its screening), the re-measurement at 67 %; the second
    process has the rest, at least a third."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    total = Deadline(args.budget)
    session = build_session(args)
    ev = session.evaluator
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "device": session.setting.device, "args": vars(args),
              "policy": ev.timing.__dict__, "plain": ev.baseline.latency.as_dict()}

    def save():
        report["wall_s"] = time.monotonic() - began
        (out / "coverage.json").write_text(json.dumps(report, indent=1, default=str))

    loaded, rest = time.monotonic(), total.left()  # the phases share what loading left

    def until(share: float) -> Deadline:  # a share of the rest from loading on, at most what
        # leaves the second process a third of the rest
        return Deadline(min(rest * share - (time.monotonic() - loaded),
                            total.left() - rest / 3))

    order = list(GRID)
    random.Random(args.seed).shuffle(order)
    log("quiet: screening")
    report["quiet"] = {"rows": screen_within(ev, order, until(0.25))}
    if report["quiet"]["rows"]:
        report["quiet"]["answer"] = race(ev, report["quiet"]["rows"], RACE_ROUNDS)
    save()
    # The neighbour's search screens what the quiet one screened, in the same order, so that
    # the two answers are comparable; the quiet re-measurement comes after it.
    log("beside the neighbour: screening")
    proc = neighbour(args)
    try:
        time.sleep(2)
        screened = order[:len(report["quiet"]["rows"])]
        report["neighbour"] = {"rows": screen_within(ev, screened, until(0.55))}
        if report["neighbour"]["rows"]:
            report["neighbour"]["answer"] = race(ev, report["neighbour"]["rows"], RACE_ROUNDS)
        report["neighbour"]["noisy"] = ev.plain_runs.noisy()
    finally:
        proc.terminate()
        proc.wait()
    save()
    log("quiet: re-measuring later in the run")
    report["later"] = remeasure(ev, order, until(0.67))
    save()
    del session, ev
    import gc

    gc.collect()
    log("second process: re-measuring")
    second = out / "second.json"
    left = max(30, int(total.left()))
    cmd = [sys.executable, str(Path(__file__).resolve()), "remeasure", "--out", str(second),
           "--budget", str(left), "--seed", str(args.seed), *_pipeline_args(args)]
    try:
        subprocess.run(cmd, timeout=left + 30, check=False)
    except subprocess.TimeoutExpired:
        log("second process: timed out")
    if second.exists():
        report["second"] = json.loads(second.read_text())["found"]
    save()
    summarize(report, out)


def summarize(report: dict, out: Path) -> None:
    refs: dict[str, list[float]] = {}
    for name in ("later", "second"):
        for key, value in report.get(name, {}).items():
            refs.setdefault(key, []).append(value)
    lines = [f"{report['device']}, {report['args']['preset']}, {report['args']['steps']} steps, "
             f"batch {report['args']['batch_size']}, runs judged "
             f"{report['args'].get('judge', 'runs')}; reference: each configuration measured "
             f"again later in the run and in a second process ({GPU_PAIRS} pairs)", "",
             "| run | configurations | screening holds | answer | answer holds | "
             "screening s | set aside |", "|---|---|---|---|---|---|---|"]
    for name in ("quiet", "neighbour"):
        if name not in report or not report[name]["rows"]:
            continue
        rows, answer = report[name]["rows"], report[name].get("answer")
        c = coverage(rows, answer, refs)
        fmt = (lambda x, n: "-" if x is None else f"{x:.0%} of {n}")
        shown = "-" if answer is None else \
            f"{answer['key']} {answer['value']:.3f} [{answer['low']:.3f}, {answer['high']:.3f}]"
        lines.append(f"| {name} | {len(rows)} | {fmt(c['screening'], c['screening_n'])} | "
                     f"{shown} | {fmt(c['answer'], c['answer_n'])} | "
                     f"{sum(r['seconds'] for r in rows):.0f} | "
                     f"{sum(r['rejected'] for r in rows)} |")
    (out / "coverage.md").write_text("\n".join(lines) + "\n")
    log("\n".join(lines))


def _pipeline_args(args) -> list[str]:
    return ["--preset", args.preset, "--device", args.device, "--steps", str(args.steps),
            "--batch-size", str(args.batch_size), "--num-samples", str(args.num_samples),
            "--clip-model", args.clip_model, "--judge", args.judge]


def second_process(args) -> None:
    """The second process: build, then re-measure every configuration quietly."""
    deadline = Deadline(args.budget)
    ev = build_session(args).evaluator
    order = list(GRID)
    random.Random(args.seed + 1).shuffle(order)
    found = remeasure(ev, order, deadline)
    Path(args.out).write_text(json.dumps({"found": found}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("sim", help="on a simulated machine")
    s.add_argument("--out", required=True)
    s.add_argument("--seeds", type=int, default=20)
    s.add_argument("--first-seed", type=int, default=0,
                   help="seeds first-seed .. first-seed + seeds - 1 (another set: 20)")
    s.add_argument("--drift", type=float, nargs="+", default=[0.0, 0.02, 0.04, 0.06])
    s.add_argument("--jitter", type=float, default=0.03)
    s.add_argument("--moment", type=float, default=30.0)
    s.add_argument("--burst-slowdown", type=float, default=2.0)
    s.add_argument("--floor", type=float, default=TimingPolicy.drift,
                   help="the policy's drift floor (0: none)")
    s.add_argument("--unknown-drift", type=float, default=TimingPolicy.unknown_drift,
                   help="the drift taken before any configuration was measured twice")
    s.add_argument("--correlation", type=float, default=TimingPolicy.correlation,
                   help="of adjacent brackets (0: taken as independent)")
    s.add_argument("--repeat-every", type=int, default=TimingPolicy.repeat_every,
                   help="evaluations between repeats of the first configuration (0: none)")
    s.add_argument("--steps", type=int, default=0,
                   help="denoising steps per run, each timed (0: runs only, as whole)")
    s.add_argument("--step-jitter", type=float, default=0.05,
                   help="each step's own jitter, beside the run's (with --steps)")
    s.add_argument("--judge", choices=("steps", "runs"), default="steps",
                   help="judge disturbed runs step by step (where runs carry step times) or "
                        "as whole runs")
    s.add_argument("--rows", nargs="+", choices=("quiet", "bursts"),
                   default=["quiet", "bursts"], help="which neighbour conditions to run")
    s.add_argument("--jitter-floor", type=float, default=TimingPolicy.jitter_floor,
                   help="of one log ratio's variance, in plain runs' (0: none)")
    w = sub.add_parser("widths", help="the intervals' half-widths in sim's raw data")
    w.add_argument("raw", nargs="+", help="raw.json or raw.json.xz files of sim")
    for name, text in (("gpu", "on a GPU: quiet, beside a bursty neighbour, second process"),
                       ("remeasure", "the gpu mode's second process")):
        g = sub.add_parser(name, help=text)
        g.add_argument("--out", required=True)
        g.add_argument("--budget", type=float, default=480.0,
                       help="seconds for everything, loading included")
        g.add_argument("--preset", default="sd1.5-random")
        g.add_argument("--device", default="cuda")
        g.add_argument("--steps", type=int, default=25)
        g.add_argument("--batch-size", type=int, default=4)
        g.add_argument("--num-samples", type=int, default=8)
        g.add_argument("--clip-model", default="clip-l-random")
        g.add_argument("--seed", type=int, default=0)
        g.add_argument("--matmul-size", type=int, default=8192)
        g.add_argument("--judge", choices=("steps", "runs"), default="steps",
                       help="judge runs step by step (TimingPolicy.steps, the default) or whole")
    args = parser.parse_args()
    {"sim": sim, "widths": widths, "gpu": gpu, "remeasure": second_process}[args.mode](args)


if __name__ == "__main__":
    main()
