"""CUDA graphs (the `graphs` accelerator) against eager, on full-size random-weight pipelines.

For SD1.5 (512², batch 4) and SDXL (1024², batch 1), fp16, DDIM, `--steps` steps, prompt
embeddings given, latents out (the UNet loop and the scheduler; no VAE, no CLIP):

1. outputs: every graphed configuration against the same configuration eager, bit for bit (max
   |diff| otherwise), in two applications (the first captures, the second replays the cache) and
   after N=3 captured the branch's graphs that N=5 then replays;
2. speed, interleaved in one process: each round runs plain, config, plain, config, ..., rotating
   the configurations' order; a configuration's ratio is the mean of the plain runs on either side
   over its own time. Medians and ranges over rounds;
3. whether graphs compose with ToMe and T-GATE: graphs applied by hand past the registry's
   conflict check, the output compared with the eager combination.

Random weights: timings are real, images meaningless.

    python benchmarks/graphs_bench.py --out OUT [--steps 50] [--rounds 7 5] [--limit 500]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

G = {"graphs": {"enabled": 1}}


def dc(n: int, b: int = 0) -> dict:
    return {"deepcache": {"cache_interval": n, "cache_branch_id": b}}


CONFIGS = {"graphs plain": G, "DC N=3": dc(3), "DC N=3 + graphs": {**dc(3), **G},
           "DC N=5": dc(5), "DC N=5 + graphs": {**dc(5), **G}}
PRESETS = (("sd1.5-random", 512, 4), ("sdxl-random", 1024, 1))


def log(*parts):
    print(*parts, flush=True)


class Bench:
    def __init__(self, preset: str, size: int, batch: int, steps: int):
        import torch

        from tuner import presets

        began = time.perf_counter()
        self.pipe = presets.build_pipeline(preset, device="cuda", dtype=torch.float16)
        self.pipe.set_progress_bar_config(disable=True)
        self.preset, self.size, self.batch, self.steps = preset, size, batch, steps
        with torch.inference_mode():
            enc = self.pipe.encode_prompt(["a photo of a cat"] * batch, device="cuda",
                                         num_images_per_prompt=1,
                                         do_classifier_free_guidance=True)
        names = ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                 "negative_pooled_prompt_embeds"]
        self.embeds = {n: e for n, e in zip(names, enc) if e is not None}
        log(f"{preset}: built in {time.perf_counter() - began:.1f}s")

    def generate(self, run):
        import torch

        with torch.inference_mode():
            return run(**self.embeds, num_inference_steps=self.steps, height=self.size,
                       width=self.size, output_type="latent",
                       generator=[torch.Generator("cpu").manual_seed(i)
                                  for i in range(self.batch)]).images

    def once(self, config: dict | None):
        """(seconds, latents) of one generation under one application of `config`."""
        import torch

        from tuner import accelerators

        torch.cuda.synchronize()
        began = time.perf_counter()
        if config is None:
            out = self.generate(self.pipe)
        else:
            with accelerators.apply(self.pipe, config, steps=self.steps) as run:
                out = self.generate(run)
        torch.cuda.synchronize()
        return time.perf_counter() - began, out


def compare(a, b) -> dict:
    return {"identical": bool((a == b).all()), "max_abs_diff": float((a.float() - b.float())
                                                                     .abs().max()),
            "mean_abs": float(b.float().abs().mean())}


def outputs(bench: Bench) -> dict:
    import torch

    from tuner import accelerators

    found = {}
    for name in ("graphs plain", "DC N=3 + graphs", "DC N=5 + graphs"):
        config = CONFIGS[name]
        eager = {k: v for k, v in config.items() if k != "graphs"} or None
        ref = bench.once(eager)[1]
        mem0, res0, cap0 = (torch.cuda.memory_allocated(), torch.cuda.memory_reserved(),
                            accelerators.capture_seconds())
        first_s, first = bench.once(config)
        row = {"first_seconds": first_s, "capture_seconds": accelerators.capture_seconds() - cap0,
               "allocated_delta_bytes": torch.cuda.memory_allocated() - mem0,
               "reserved_delta_bytes": torch.cuda.memory_reserved() - res0,
               "first_application": compare(first, ref)}
        second_s, second = bench.once(config)
        row["second_application"] = {**compare(second, ref), "seconds": second_s}
        with accelerators.apply(bench.pipe, config, steps=bench.steps) as run:
            bench.generate(run)
            row["second_generation_same_application"] = compare(bench.generate(run), ref)
        found[name] = row
        log(f"  {name}: first {first_s:.2f}s (capture {row['capture_seconds']:.2f}s, "
            f"+{row['reserved_delta_bytes'] / 2**30:.2f} GiB reserved), "
            f"identical {row['first_application']['identical']}/"
            f"{row['second_application']['identical']}/"
            f"{row['second_generation_same_application']['identical']}, max diff "
            f"{row['first_application']['max_abs_diff']:.2e}")
    return found


def interleave(bench: Bench, order: list[str], run, raw: dict, plain_runs: list,
               **extra) -> None:
    """One round: a plain run, then each of `order` (`run(name)` gives its seconds) followed
    by a plain run; each bracket's ratio (and `extra`) appended to `raw[name]`."""
    before = bench.once(None)[0]
    plain_runs.append(before)
    for name in order:
        seconds = run(name)
        after = bench.once(None)[0]
        plain_runs.append(after)
        raw[name].append({"before": before, "seconds": seconds, "after": after,
                          "ratio": (before + after) / 2 / seconds, **extra})
        before = after


def speeds(bench: Bench, rounds: int, deadline: float) -> dict:
    names = list(CONFIGS)
    for name in names:  # warm: capture, allocator
        bench.once(CONFIGS[name])
    raw = {n: [] for n in names}
    plain_runs = []
    for r in range(rounds):
        if time.perf_counter() > deadline:
            log(f"  stopped after {r} rounds (time limit)")
            break
        interleave(bench, names[r % len(names):] + names[:r % len(names)],
                   lambda name: bench.once(CONFIGS[name])[0], raw, plain_runs)
    table = {}
    for name, runs in raw.items():
        ratios = [x["ratio"] for x in runs]
        if ratios:
            table[name] = {"median": statistics.median(ratios), "min": min(ratios),
                           "max": max(ratios), "seconds_median":
                           statistics.median(x["seconds"] for x in runs), "runs": runs}
            log(f"  {name:18s} {table[name]['median']:.2f}x [{min(ratios):.2f}-"
                f"{max(ratios):.2f}]  {table[name]['seconds_median'] * 1000:.0f} ms")
    if plain_runs:
        log(f"  eager plain        {statistics.median(plain_runs) * 1000:.0f} ms "
            f"[{min(plain_runs) * 1000:.0f}-{max(plain_runs) * 1000:.0f}]")
    return {"plain_seconds": plain_runs, "configs": table}


def forced(bench: Bench) -> dict:
    """Graphs over ToMe and over T-GATE, applied by hand past the registry's conflict check."""
    from tuner import accelerators
    from tuner.accelerators.graphs import Graphs

    tome = {"tome": {"ratio": 0.5, "max_downsample": 1}}
    tgate = {"tgate": {"gate_step": 10, "sp_interval": 5, "fi_interval": 1, "warmup": 2}}
    found = {}
    for name, config in (("DC N=3 + ToMe", {**dc(3), **tome}), ("ToMe", tome),
                         ("DC N=3 + T-GATE", {**dc(3), **tgate}), ("T-GATE", tgate)):
        began = accelerators.capture_seconds()
        try:
            ref = bench.once(config)[1]
            outs = []
            for _ in range(2):
                with accelerators.apply(bench.pipe, config, steps=bench.steps) as run:
                    with Graphs().patch(bench.pipe, G["graphs"], run, absorbed={}) as fast:
                        outs.append(bench.generate(fast))
            # Zero seconds or no entries: graphs were bypassed (T-GATE's resets of DeepCache
            # re-wrap the UNet's forward), so identical output would prove nothing.
            found[name] = {"first": compare(outs[0], ref), "second": compare(outs[1], ref),
                           "capture_seconds": accelerators.capture_seconds() - began,
                           "cache_entries": len(accelerators.graphs._cache)}
        except Exception as err:  # noqa: BLE001 - what happened is the result
            found[name] = {"error": f"{type(err).__name__}: {err}"[:500],
                           "traceback": traceback.format_exc()[-2000:]}
        log(f"  {name}: {json.dumps({k: v for k, v in found[name].items() if k != 'traceback'})}")
        accelerators.graphs.clear()
    return found


def arguments(*, rounds: tuple[int, int], limit: float, rounds_help: str | None = None):
    """The options both graphs benchmarks take; add the rest, then `start`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, nargs=2, default=rounds, help=rounds_help)
    parser.add_argument("--limit", type=float, default=limit, help="seconds for everything")
    return parser


def start(args, name: str, **report):
    """The report (device, torch, steps and `report`), the clock's start, and `save()`, which
    writes the report to `--out`/`name`.json as it grows."""
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "steps": args.steps, **report}

    def save():
        (out / f"{name}.json").write_text(json.dumps(report, indent=1))

    return report, time.perf_counter(), save


def main() -> None:
    import torch

    from tuner import accelerators

    parser = arguments(rounds=(7, 5), limit=500)
    parser.add_argument("--presets", nargs="+", default=[p for p, _, _ in PRESETS])
    args = parser.parse_args()
    report, started, save = start(args, "graphs_bench", presets={})

    first = None
    for (preset, size, batch), rounds in zip(PRESETS, args.rounds):
        if preset not in args.presets:
            continue
        bench = Bench(preset, size, batch, args.steps)
        entry = report["presets"][preset] = {"size": size, "batch": batch}
        log(f"{preset} {size}² batch {batch}, {args.steps} steps: outputs")
        entry["outputs"] = outputs(bench)
        save()
        log(f"{preset}: speed, {rounds} rounds")
        share = 0.55 if first is None else 0.85
        entry["speed"] = speeds(bench, rounds, started + args.limit * share)
        save()
        accelerators.graphs.clear()
        if first is None:
            first = bench
        else:
            del bench
        torch.cuda.empty_cache()
    log(f"{first.preset}: graphs with ToMe and T-GATE")
    report["forced"] = forced(first)
    report["wall_s"] = time.perf_counter() - started
    save()


if __name__ == "__main__":
    main()
