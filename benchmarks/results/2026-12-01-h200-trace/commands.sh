# BENCHMARKS.md section 3, "Where an evaluation's GPU-seconds go": one H200 (device tool),
# full-size SD1.5 architecture with random weights, 50 DDIM steps, batch 4, fp16.
python benchmarks/gpu_bench.py trace --out $OUT --seconds 120                 # trace.json
# Offline, on any machine:
python benchmarks/timing_replay.py trace.json                                 # replay-schemes.md
python benchmarks/timing_replay.py trace.json --per-plain 1 --precision 0.05 0.08 \
    --tolerance 0.03 0.2 --neighbours 3 1                                     # replay-trust.md
python benchmarks/timing_replay.py trace.json --per-plain 1 --precision 0.05 0.02 \
    --max-tolerance 0.1 0.15 0.2 0.3                                          # replay-cap.md
# The three tables above were made at commit 17a1c59, whose whole-segment reference counted each
# plain run twice (so its trust rule ran at the 3 % floor): 2.25, 0.934 and 2.12 there, 2.26,
# 0.938 and 2.13 with the fix and that commit's rule. The tables of the variance prior
# (replay-prior.md, replay-prune-rule.md, replay-prune.md) come from the commands of
# ../2026-12-02-h200-trace20/commands.sh, run on this trace.
