# BENCHMARKS.md section 6, "On the CPU": the 2-core dev machine (shared), tuner at a3118d2 (runs judged
# by step where a step timer is given: neighbour_bias.py gives one). 8 blocks of 6 pairs per
# condition, quiet and beside bursty.py (2 busy loops, paused with SIGSTOP between), ABBA.
python benchmarks/neighbour_bias.py --out OUT --device cpu --preset tiny-sd --clip-model tiny-clip \
    --steps 4 --blocks 8 --pairs 6 --config '{"deepcache": {"cache_interval": 4, "cache_branch_id": 0}}'
# first-run/: the same command minutes before, while other work ran on the machine (disturbed)
