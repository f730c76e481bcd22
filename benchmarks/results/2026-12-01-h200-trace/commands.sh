# BENCHMARKS.md section 3, "Where an evaluation's GPU-seconds go": one H200 (device tool),
# full-size SD1.5 architecture with random weights, 50 DDIM steps, batch 4, fp16.
python benchmarks/gpu_bench.py trace --out $OUT --seconds 120                 # trace.json
# Offline, on any machine:
python benchmarks/timing_replay.py trace.json                                 # replay-schemes.md
python benchmarks/timing_replay.py trace.json --per-plain 1 --precision 0.05 0.08 \
    --tolerance 0.03 0.2 --neighbours 3 1                                     # replay-trust.md
python benchmarks/timing_replay.py trace.json --per-plain 1 --precision 0.05 0.02 \
    --max-tolerance 0.1 0.15 0.2 0.3                                          # replay-cap.md
