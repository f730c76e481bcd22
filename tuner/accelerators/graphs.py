"""CUDA graphs: replay the UNet's kernels instead of launching them one by one from Python.

A graph records the path that ran at capture, so DeepCache's two step kinds are two graphs: the
full step (which refreshes DeepCache's cached features) and the shallow step (which reads them);
without DeepCache the whole UNet is one graph. The step index is counted on the host, per
generation, so nothing in the UNet call waits for the GPU. Capture happens in the first
generation of a configuration (the evaluator's untimed warm-up), kept across applications in a
small LRU cache. Output is bit-identical to eager. Idea: DeepCache's issue #26 (compile the full
and the shallow model apart); recipe: PyTorch's CUDA Graphs notes (side-stream warm-up, static
inputs copied into before each replay).

Between UNet calls the pipeline runs classifier-free guidance and the scheduler step eagerly.
DDIM (and DDPM) look their coefficients up by the timestep's value, and the pipeline hands them
the timestep as a 0-dim GPU tensor, so every step waits for the GPU (`prev_timestep >= 0`): the
GPU then idles while the host launches the next step. Under graphs the scheduler is handed the
same timestep as a host integer, read from a host copy of the schedule (one sync per
generation), and the host runs ahead of the GPU; the arithmetic is the same, bit for bit.

The knob `enabled` has three levels: 0 eager (the other side of the knob, measured like any
point), 1 graphs of the eager kernels (bit-identical), 2 graphs of the paths compiled by
`torch.compile` (mode `options.compile`) first, so the graphs replay Inductor's fused kernels: not
bit-identical (BENCHMARKS.md, section 5, gives the measured difference and speed), and compiling
costs about 50 s per captured path on an H100, paid once per entry in the warm-up and counted in
`compile_seconds`, apart from the timing. Idea: torch.compile's mode="reduce-overhead", which also
captures Inductor's output in CUDA graphs, here under our own capture of DeepCache's two step
kinds.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
from collections.abc import Mapping, Sequence

from .base import Accelerator, Footprint, Generate, IntKnob, Params, Unsupported
from .cache import CACHES

# An entry: one UNet's graphs for one step-kind family (plain, or DeepCache's full and shallow
# pair of one cache_branch_id: intervals only choose which replays, so N=2..5 share it) and one
# input signature (shapes, dtypes, other arguments). It holds static inputs and one memory pool:
# on an H200, +0.07 GiB for plain SD1.5 at 512², batch 4, +0.49 GiB for a DeepCache pair (its
# cached features). The UNet's weights must stay where they were captured.
CACHE_SIZE = 5  # entries kept, least recently used dropped; `clear()` frees them all
_cache: collections.OrderedDict = collections.OrderedDict()
_spent = {"capture": 0.0, "compile": 0.0}  # seconds, in this process

# Schedulers that index their coefficients by the timestep's value and accept a host integer
# (Euler-type schedulers reject integers; UniPC and DPM-Solver++ count steps and do not sync).
HOST_TIMESTEP_SCHEDULERS = ("DDIMScheduler", "DDPMScheduler")


@dataclasses.dataclass(frozen=True)
class Options:
    """How graphs are made. `compile`: the `torch.compile` mode of level 2 (`COMPILED`).
    `host_timesteps`: hand DDIM/DDPM's step the timestep as a host integer (no sync per step;
    bit-identical)."""

    compile: str = "default"
    host_timesteps: bool = True


options = Options()
EAGER, GRAPHS, COMPILED = 0, 1, 2  # the levels of the knob `enabled`


def capture_seconds() -> float:
    """Seconds spent capturing graphs in this process, compiling included."""
    return _spent["capture"]


def compile_seconds() -> float:
    """The part of `capture_seconds` spent in `torch.compile`'s first calls."""
    return _spent["compile"]


def clear() -> None:
    _cache.clear()


def step_kind(step: int, interval: int | None) -> str:
    """Which graph replays at `step` (counted from the generation's first UNet call)."""
    return "plain" if interval is None else "full" if step % interval == 0 else "shallow"


def _signature(leaves, spec) -> tuple:
    import torch

    return (str(spec), torch.is_inference_mode_enabled(), tuple(
        (tuple(x.shape), x.dtype, str(x.device)) if torch.is_tensor(x) else repr(x)
        for x in leaves))


def host_timestep(timestep, schedule, values: Sequence | None):
    """The host number for `timestep` when it is an element of `schedule` (a view into it, as the
    pipeline's loop makes them), read from `values`, the schedule's host copy; else `timestep`
    itself. Reads no device memory."""
    import torch

    if (values is None or not torch.is_tensor(timestep) or not torch.is_tensor(schedule)
            or timestep.dim() != 0 or schedule.dim() != 1 or schedule.stride() != (1,)
            or timestep.device != schedule.device or timestep.dtype != schedule.dtype
            or timestep.untyped_storage().data_ptr() != schedule.untyped_storage().data_ptr()):
        return timestep
    index = timestep.storage_offset() - schedule.storage_offset()
    return values[index] if 0 <= index < len(values) else timestep


def _compiled(call, mode: str):
    import torch

    return torch.compile(call, mode=mode, dynamic=False)


def _capture(call, static, pool=None, *, compiling: bool = False):
    import torch

    args, kwargs = static
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: lazy initialisation happens outside the capture
        began = time.perf_counter()
        call(*args, **kwargs)  # compiles, when `call` is compiled
        if compiling:
            torch.cuda.synchronize()
            _spent["compile"] += time.perf_counter() - began
        call(*args, **kwargs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = call(*args, **kwargs)
    return graph, out


class Graphs(Accelerator):
    name = "graphs"
    space = {"enabled": IntKnob(EAGER, COMPILED)}
    optional_on = ("cuda",)  # a study on a GPU measures each configuration with and without
    # Tried on an H200 (BENCHMARKS.md, section 5): under ToMe the capture fails (its merges draw
    # from a CUDA generator seeded per generation); under T-GATE the output differs (its caches
    # and guidance change by step), and with DeepCache its resets bypass the graphs.
    # diffusers' caches patch a transformer, not the UNet call the graphs replay.
    conflicts = {"tome": "a replay does not follow ToMe's per-generation random merges",
                 "tgate": "a replay does not follow T-GATE's step schedule",
                 **{name: "graphs replay a UNet's call" for name in CACHES}}
    # The UNet's call replays the graphs; DDIM/DDPM's step takes the timestep from the host.
    footprint = Footprint(components={"scheduler": ("step",)}, modules={"unet": ("forward",)})
    preparation_seconds = staticmethod(capture_seconds)

    def check(self, pipe, params, *, steps, absorbed):
        # enabled=0 is the eager side of the knob: a study measures it like any other point.
        if params["enabled"] and str(pipe.device).split(":")[0] != "cuda":
            raise Unsupported(f"graphs need a CUDA device; the pipeline is on {pipe.device}")

    @contextlib.contextmanager
    def attach(self, pipe, params: Params, generate: Generate, *,
               absorbed: Mapping[str, Params]):
        import torch
        from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

        if not params["enabled"]:
            yield generate
            return
        unet, helper = pipe.unet, pipe.__dict__.get("deepcache")  # DeepCache's helper, if on
        call = helper.function_dict["unet_forward"] if helper else unet.forward  # no step lookup
        interval = helper.params["cache_interval"] if helper else None
        family = ("deepcache", helper.params["cache_block_id"],
                  helper.params["cache_layer_id"]) if helper else ("plain",)
        made = options  # as applied: the cache keys on it
        mode = made.compile if params["enabled"] == COMPILED else None
        steps, seen, values = [0], [None], [None]
        scheduler = pipe.scheduler
        inner_step = scheduler.step if made.host_timesteps and type(
            scheduler).__name__ in HOST_TIMESTEP_SCHEDULERS else None

        def scheduler_step(model_output, timestep, *args, **kwargs):
            return inner_step(model_output, host_timestep(timestep, seen[0], values[0]), *args,
                              **kwargs)

        def forward(sample, timestep, *args, **kwargs):
            schedule = getattr(pipe.scheduler, "timesteps", None)
            if schedule is not seen[0]:  # set_timesteps ran: a new generation, from pipe(...) too
                seen[0], steps[0] = schedule, 0
                values[0] = schedule.tolist() if inner_step and torch.is_tensor(schedule) else None
            step, steps[0] = steps[0], steps[0] + 1
            kind = step_kind(step, interval)
            if not torch.is_tensor(timestep):
                timestep = torch.tensor(timestep, device=sample.device)
            leaves, spec = tree_flatten(((sample, timestep, *args), kwargs))
            key = (id(unet), next(unet.parameters()).data_ptr(), family, mode,
                   _signature(leaves, spec))
            entry = _cache.get(key)
            if entry is None:
                static = [x.clone() if torch.is_tensor(x) else x for x in leaves]
                entry = _cache[key] = {"static": static, "inputs": tree_unflatten(static, spec),
                                       "graphs": {}}
                while len(_cache) > CACHE_SIZE:
                    _cache.popitem(last=False)
            _cache.move_to_end(key)
            static = entry["static"]
            for mine, given in zip(static, leaves):
                if torch.is_tensor(given):
                    mine.copy_(given)
            graphs = entry["graphs"]
            if kind not in graphs:
                began = time.perf_counter()
                if helper:  # the step the captured path belongs to; shallow reads full's cache
                    helper.start_timestep, helper.cur_timestep = 0, int(kind == "shallow")
                    if kind == "shallow":
                        helper.cached_output = dict(entry["cached"])
                pool = next((g.pool() for g, _ in graphs.values()), None)  # one per entry
                if mode and "compiled" not in entry:
                    entry["compiled"] = _compiled(call, mode)
                graphs[kind] = _capture(entry.get("compiled", call), entry["inputs"], pool,
                                        compiling=bool(mode))
                if kind == "full":
                    entry["cached"] = dict(helper.cached_output)
                torch.cuda.synchronize()
                _spent["capture"] += time.perf_counter() - began
            graph, out = graphs[kind]
            graph.replay()
            return tree_map(lambda x: x.clone() if torch.is_tensor(x) else x, out)

        def run(*args, **kwargs):
            steps[0] = 0  # a new generation starts at step 0
            return generate(*args, **kwargs)

        unet.forward = forward
        if inner_step is not None:
            scheduler.step = scheduler_step
        yield run
