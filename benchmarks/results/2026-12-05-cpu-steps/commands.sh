# Steps and solver as knobs on tiny-shapes (BENCHMARKS.md, "Steps and solver as knobs").
# Machine: the 2-core shared development CPU (x86_64), other processes running beside it
# (timings load-confounded); torch 2.13.0 CPU, diffusers 0.42.1, one torch thread.
# Two `tuner run`s (fixed: --combo all; knobs: --combo all --search-sched all --search-steps
# auto), each 50 DDIM steps, 2 % CLIP budget, --trials 6, --num-samples 8, --sampler-seed 0,
# then both answers raced side by side in one process and their losses on held-out seeds.
PYTHONPATH=. python benchmarks/steps_bench.py --out benchmarks/results/2026-12-05-cpu-steps \
    --steps 50 --trials 6 --num-samples 8 --threads 1
# Written: fixed.json / knobs.json (the runs' results files), fixed.log / knobs.log (their
# output), steps_bench.json (both answers raced, held-out losses, the ratio).
# The studies databases (fixed-studies/, knobs-studies/) are stored xz-compressed.
# The first invocation ran both `tuner run`s (bench-first.log: fixed 729 s, knobs 405 s) and
# then failed before the race, its own process importing another checkout's tuner. Its runs'
# answers were written to fixed-run.json / knobs-run.json (walls from that log), and the
# command above, run again, raced them.
