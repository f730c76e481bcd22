"""Does a bursty neighbour move the answer's speedup? One configuration (the grid's answer,
DeepCache N=5 b0) measured in blocks of alternating plain and accelerated runs, quiet and beside
the neighbour (`bursty.py`, paused with SIGSTOP between its blocks, resumed with SIGCONT), the
two conditions in ABBA order: a speedup moves between moments by more than 5 % on a GPU, so one
run per condition cannot tell a neighbour's bias of 5 % from 8 %, while adjacent blocks share
their moment and the order cancels a linear drift (a crossover design). Every run keeps its
step times; `--replay` judges each block whole and step by step, and gives the neighbour's
effect as the geometric mean of the blocks' neighbour / quiet ratios with a t-interval.

    python benchmarks/neighbour_bias.py --out OUT              # on the GPU
    python benchmarks/neighbour_bias.py --replay OUT/runs.json     # or a stored runs.json.xz
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bursty import die_with_parent
from stored import read_json
from step_times import (ROOT, alternate, build_stepped, judged, log, of_dict,
                        pipeline_arguments)

from tuner.stats import ratio_interval

ANSWER = {"deepcache": {"cache_interval": 5, "cache_branch_id": 0}}


class Neighbour:
    """bursty.py in a process group of its own, paused and resumed as a whole (CPU bursts run in
    child processes), started paused once it says it is ready; it dies with this process (a
    parent-death signal: SIGKILL, which a paused process receives too)."""

    def __init__(self, device: str):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "bursty.py"),
             *(["--matmul", "--device", device] if device != "cpu" else [])],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
            preexec_fn=die_with_parent)
        try:
            ready = self.proc.stdout.readline()  # its matrices allocated, its loops started
            if not ready.startswith("bursty:"):
                raise RuntimeError(f"the neighbour did not start ({ready.strip() or 'no line'})")
            log(ready.strip())
            self.pause()
        except BaseException:
            self.stop()
            raise

    def _signal(self, sig) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the neighbour ended (exit {self.proc.returncode})")
        os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def measure(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    session = build_stepped(args)
    ev = session.evaluator
    ev.measure_baseline()
    config = json.loads(args.config)
    data = {"device": session.setting.device, "steps": args.steps, "config": config,
            "pairs": args.pairs, "blocks": []}
    # SIGTERM (a time limit) ends the run through its `finally`: the neighbour stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    neighbour = Neighbour(args.device)
    try:
        for b in range(args.blocks):
            order = ("quiet", "neighbour") if b % 2 == 0 else ("neighbour", "quiet")
            block = {}
            for condition in order:
                if condition == "neighbour":
                    neighbour.resume()
                try:
                    block[condition] = alternate(ev, args.pairs, config)
                finally:
                    if condition == "neighbour":
                        neighbour.pause()
            data["blocks"].append(block)
            (out / "runs.json").write_text(json.dumps(data))
            log(f"block {b + 1} of {args.blocks} ({' then '.join(order)})")
    finally:
        neighbour.stop()
    replay(out / "runs.json")


def replay(path: Path) -> None:
    data = read_json(path)  # runs.json, or runs.json.xz as stored
    log(f"{data['device']}: {data['config']}, {len(data['blocks'])} blocks of {data['pairs']} "
        f"pairs per condition")
    for steps in (False, True):
        how = "step by step" if steps else "whole"
        effects = []
        for i, block in enumerate(data["blocks"]):
            found = {}
            for condition in ("quiet", "neighbour"):
                runs = block[condition]
                found[condition] = judged([of_dict(d) for d in runs["plain"]],
                                          [of_dict(d) for d in runs["accelerated"]], steps=steps)
            q, n = found["quiet"].speedup, found["neighbour"].speedup
            effects.append(n.value / q.value)
            log(f"  block {i + 1}, judged {how}: quiet {q}, beside the neighbour {n} "
                f"({found['neighbour'].rejected} set aside); ratio {n.value / q.value:.3f}")
        effect = ratio_interval(effects)
        log(f"judged {how}: the neighbour's effect on the speedup {effect.value:.3f} "
            f"[{effect.low:.3f}, {effect.high:.3f}] (geometric mean of {len(effects)} blocks' "
            f"ratios, 95 % t-interval); blocks' ratios "
            f"{statistics.median(effects):.3f} median, {min(effects):.3f}-{max(effects):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    parser.add_argument("--replay")
    parser.add_argument("--config", default=json.dumps(ANSWER))
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=6, help="per condition and block")
    pipeline_arguments(parser)
    args = parser.parse_args()
    if args.replay:
        replay(Path(args.replay))
    elif args.out:
        measure(args)
    else:
        parser.error("need --out or --replay")


if __name__ == "__main__":
    main()
