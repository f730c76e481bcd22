"""A bursty neighbour, until killed. Run it beside `tuner run` to see how timings hold up on a
shared machine.

* CPU (default): one process per core, each busy for 0.2-0.6 s and idle as long.
* `--matmul`: one process keeping a GPU busy with `--size`² fp16 matrix products in bursts of
  0.3-2 s, with pauses of 0.5-3 s (another job sharing the GPU).

    python benchmarks/bursty.py &  tuner run ...;  kill %1
    python benchmarks/bursty.py --matmul &  tuner run --device cuda ...;  kill %1
"""

import argparse
import contextlib
import ctypes
import multiprocessing
import os
import random
import signal
import time


def die_with_parent() -> None:
    """SIGKILL to this process when the one that started it ends (Linux; elsewhere nothing):
    a paused or orphaned neighbour never outlives its run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def bursts(seed: int) -> None:
    die_with_parent()
    rng = random.Random(seed)
    while True:
        end = time.perf_counter() + rng.uniform(0.2, 0.6)
        while time.perf_counter() < end:
            pass
        time.sleep(rng.uniform(0.2, 0.6))


def matmul_bursts(size: int, device: str, seed: int = 0) -> None:
    import torch

    rng = random.Random(seed)
    dtype = torch.float16 if device != "cpu" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    print(f"bursty: {size}x{size} matmuls on {device}", flush=True)
    while True:
        end = time.perf_counter() + rng.uniform(0.3, 2.0)
        while time.perf_counter() < end:
            a @ b
            if device != "cpu":
                torch.cuda.synchronize()
        time.sleep(rng.uniform(0.5, 3.0))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matmul", action="store_true", help="GPU bursts (see above)")
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.matmul:
        matmul_bursts(args.size, args.device)
    procs = [multiprocessing.Process(target=bursts, args=(i,), daemon=True)
             for i in range(os.cpu_count() or 1)]
    for p in procs:
        p.start()
    print(f"bursty: {len(procs)} busy loops on cpu", flush=True)
    for p in procs:
        p.join()
