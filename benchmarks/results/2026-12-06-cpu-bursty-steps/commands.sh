# BENCHMARKS.md section 6, "On the CPU": the 2-core dev machine (shared), one run after the
# other, each from an empty folder: the code judging runs by step on every device
# (a3118d2: "after") and the code before it (f0efef5, judged whole: "before", PYTHONPATH to a
# worktree of it). The command of ../2026-12-05-cpu-bursty/commands.sh:
#   tuner run --pipe tiny-sd --device cpu --steps 4 --num-samples 2 --batch-size 1 \
#       --combo deepcache --sampler grid --trials 50 --no-progress
# quiet-after-first (its answer file; log not kept), quiet-before-0, quiet-after-0, then
# quiet-after, quiet-before; then beside python benchmarks/bursty.py: busy-after, busy-before,
# busy-after2, busy-before2.
