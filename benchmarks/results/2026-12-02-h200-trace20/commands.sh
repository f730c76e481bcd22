# BENCHMARKS.md section 3, "The timing rule, on 20-step runs": one H200 (device tool), full-size
# SD1.5 architecture with random weights, 20 DDIM steps, batch 4, fp16; wheels as in NOTES.md.
python benchmarks/gpu_bench.py trace --steps 20 --seconds 100 --out $OUT \
    --configs "DeepCache N=3 b0" "DC N=3 + ToMe 0.5 md1" "DeepCache N=5 b0"      # trace.json
# Offline, on any machine (the same three commands on ../2026-12-01-h200-trace/trace.json):
python benchmarks/timing_replay.py trace.json --per-plain 1 --precision 0.05 0.02 \
    --max-tolerance 0.1 0.2 --prior-df 0 4                                      # replay-prior.md
python benchmarks/timing_replay.py trace.json --per-plain 1 --precision 0.05 \
    --max-tolerance 0.1 0.2 --prior-df 0 4 --incumbent 1.1 1.25           # replay-prune-rule.md
python benchmarks/timing_replay.py trace.json --per-plain 1 --precision 0.05 \
    --max-tolerance 0.1 0.2 --prior-df 4 --min-pairs 3 2 --incumbent 1.1 1.25   # replay-prune.md
# Stored with the files over 50 KB xz-compressed in place (NAME.xz; the scripts read either):
python benchmarks/stored.py pack benchmarks/results/2026-12-02-h200-trace20
