"""A bursty neighbour: one process per core, each busy for 0.2-0.6 s and idle as long, until
killed. Run it beside `tuner run` to see how timings hold up on a shared machine.

    python benchmarks/bursty.py &  tuner run ...;  kill %1
"""

import multiprocessing
import os
import random
import time


def bursts(seed: int) -> None:
    rng = random.Random(seed)
    while True:
        end = time.perf_counter() + rng.uniform(0.2, 0.6)
        while time.perf_counter() < end:
            pass
        time.sleep(rng.uniform(0.2, 0.6))


if __name__ == "__main__":
    procs = [multiprocessing.Process(target=bursts, args=(i,), daemon=True)
             for i in range(os.cpu_count() or 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
