# BENCHMARKS.md section 3, "End to end against tuner 0.1, on the CPU": the same command as
# ../2026-12-01-cpu-cost/'s new-1objective-2threads run, after the variance prior and the 20 % cap
# (commit 72231da's tuner), on the 2-core dev machine with nothing else running.
python benchmarks/gpu_bench.py cost --device cpu --sd tuner/weights/tiny-shapes \
    --cost-clip tuner/weights/tiny-shapes-clip \
    --prompts benchmarks/results/2026-12-01-cpu-cost/tiny-shapes-captions.txt --steps 25 \
    --num-samples 16 --metric clip --budget 0.02 --threads 2 --label new-prior-2threads \
    --limit 1500 --out benchmarks/results/2026-12-02-cpu-cost-prior    # finished in 1,461 s
# Stored with the files over 50 KB xz-compressed in place (NAME.xz; the scripts read either):
python benchmarks/stored.py pack benchmarks/results/2026-12-02-cpu-cost-prior
