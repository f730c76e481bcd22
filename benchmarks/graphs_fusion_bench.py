"""What stands between graphed DeepCache and 4x: the per-step sync and unfused kernels.

Full-size random-weight SD1.5 (512², batch 4), fp16, DDIM, `--steps` steps, prompt embeddings
given, latents out, interleaved against eager plain in one process (as graphs_bench.py):

* `graphs` as first built (`host_timesteps=False`: DDIM's step syncs on every step);
* `graphs` handing DDIM the timestep as a host integer (no sync per step);
* the same, the captured paths compiled with `torch.compile` (`--compile` modes) first;
* eager DeepCache N=3 and N=5 for reference.

Outputs: every graphed variant against eager, bit for bit (max |diff| otherwise). GPU floor: the
replay time of each captured graph alone, back to back (what a step costs with no host at all).

    python benchmarks/graphs_fusion_bench.py --out OUT [--steps 50] [--rounds 3 3] [--limit 420]
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

from graphs_bench import Bench, arguments, compare, dc, interleave, log, start  # noqa: E402

G = {"graphs": {"enabled": 1}}
COMPILED = {"graphs": {"enabled": 2}}  # with the mode of graphs.Options


def variants(modes):
    from tuner.accelerators.graphs import Options

    found = {"eager DC3": (None, dc(3)), "eager DC5": (None, dc(5))}
    for tag, opts in (("sync", Options(host_timesteps=False)), ("nosync", Options()),
                      *((f"compile-{m}", Options(compile=m)) for m in modes)):
        for name, config in (("plain", {}), ("DC3", dc(3)), ("DC5", dc(5))):
            if tag != "sync" or name != "plain":  # graphs_bench.py measured that one
                level = COMPILED if tag.startswith("compile") else G
                found[f"graphs {tag} {name}"] = (opts, {**config, **level})
    return found


def once(bench: Bench, opts, config):
    from tuner.accelerators import graphs

    if opts is not None:
        graphs.options = opts
    try:
        return bench.once(config or None)
    finally:
        graphs.options = graphs.Options()


def gpu_floor(key_filter=None) -> dict:
    """Milliseconds per replay of each cached graph, 20 back to back."""
    import torch

    from tuner.accelerators import graphs

    found = {}
    for key, entry in graphs._cache.items():
        for kind, (graph, _) in entry["graphs"].items():
            graph.replay()
            torch.cuda.synchronize()
            began = time.perf_counter()
            for _ in range(20):
                graph.replay()
            torch.cuda.synchronize()
            found[f"{key[2][0]} {key[3]} {kind}"] = (time.perf_counter() - began) / 20 * 1000
    return found


def main() -> None:
    from tuner import accelerators
    from tuner.accelerators import graphs

    parser = arguments(rounds=(3, 3), limit=420,
                       rounds_help="rounds before and after the compiled variants")
    parser.add_argument("--compile", nargs="*", default=["default"])
    args = parser.parse_args()
    report, started, save = start(args, "graphs_fusion_bench", outputs={})

    bench = Bench("sd1.5-random", 512, 4, args.steps)
    found = variants(args.compile)
    refs = {name: bench.once(config or None)[1] for name, config in
            (("plain", {}), ("DC3", dc(3)), ("DC5", dc(5)))}
    raw = {n: [] for n in found}
    plain_runs = []
    checked = []
    # Phase 1 checks and times the variants that compile nothing; phase 2 adds the compiled ones
    # (their compile time is unknown in advance, so phase 1's numbers come back whatever it is).
    for phase, rounds in ((0, args.rounds[0]), (1, args.rounds[1])):
        for name, (opts, config) in list(found.items()):
            if opts is None:
                if phase == 0:
                    checked.append(name)
                continue
            if bool(opts.compile) != bool(phase):
                continue
            cap0, com0 = accelerators.capture_seconds(), graphs.compile_seconds()
            try:
                first_s, first = once(bench, opts, config)
                second_s, second = once(bench, opts, config)
            except Exception as err:  # noqa: BLE001 - what happened is the result
                report["outputs"][name] = {"error": f"{type(err).__name__}: {err}"[:800],
                                           "traceback": traceback.format_exc()[-3000:]}
                log(f"  {name}: {report['outputs'][name]['error']}")
                save()
                continue
            checked.append(name)
            ref = refs[name.split()[-1]]
            report["outputs"][name] = {"first": compare(first, ref),
                                       "second": compare(second, ref),
                                       "first_seconds": first_s, "second_seconds": second_s,
                                       "capture_seconds": accelerators.capture_seconds() - cap0,
                                       "compile_seconds": graphs.compile_seconds() - com0}
            row = report["outputs"][name]
            log(f"  {name}: identical {row['first']['identical']}/{row['second']['identical']} "
                f"max diff {row['second']['max_abs_diff']:.3e} (mean |x| "
                f"{row['second']['mean_abs']:.2f}), capture {row['capture_seconds']:.1f}s "
                f"(compile {row['compile_seconds']:.1f}s), second run {second_s * 1000:.0f} ms")
            save()
        report["gpu_floor_ms"] = gpu_floor()
        for k, v in report["gpu_floor_ms"].items():
            log(f"  replay {k}: {v:.2f} ms")
        save()
        names = list(checked)
        for r in range(rounds):
            if time.perf_counter() - started > args.limit:
                log(f"  phase {phase}: stopped after {r} rounds (time limit)")
                break
            interleave(bench, names[r % len(names):] + names[:r % len(names)],
                       lambda name: once(bench, *found[name])[0], raw, plain_runs, phase=phase)
            report["speed"] = {"plain_seconds": plain_runs, "configs": raw}
            save()
            log(f"  phase {phase} round {r + 1} done at {time.perf_counter() - started:.0f}s")
    table = {}
    for name, runs in raw.items():
        ratios = [x["ratio"] for x in runs]
        if ratios:
            table[name] = {"median": statistics.median(ratios), "min": min(ratios),
                           "max": max(ratios),
                           "seconds_median": statistics.median(x["seconds"] for x in runs)}
            log(f"  {name:28s} {table[name]['median']:.2f}x [{min(ratios):.2f}-"
                f"{max(ratios):.2f}]  {table[name]['seconds_median'] * 1000:.0f} ms")
    if plain_runs:
        log(f"  eager plain                  {statistics.median(plain_runs) * 1000:.0f} ms "
            f"[{min(plain_runs) * 1000:.0f}-{max(plain_runs) * 1000:.0f}]")
    report["table"] = table
    report["wall_s"] = time.perf_counter() - started
    save()


if __name__ == "__main__":
    main()
