# BENCHMARKS.md section 3, "The floor on the CPU": the command of ../2026-12-02-cpu-cost-pairs2/
# once more, after the floor (pruning under another combo's confirmed answer), on the 2-core dev
# machine, one run. The host was busy (plain batch 1.15 s against 0.49 s before), and two
# sampler replays ran beside it in its first minutes: its seconds are not comparable.
A="--device cpu --sd tuner/weights/tiny-shapes --cost-clip tuner/weights/tiny-shapes-clip \
   --prompts benchmarks/results/2026-12-01-cpu-cost/tiny-shapes-captions.txt --steps 25 \
   --num-samples 16 --metric clip --budget 0.02 --threads 2 --label new-floor-2threads"
python benchmarks/gpu_bench.py cost $A --limit 2400 --out benchmarks/results/2026-12-02-cpu-cost-floor  # 2,376 s, finished
python benchmarks/gpu_bench.py spent --label new-floor-2threads --out benchmarks/results/2026-12-02-cpu-cost-floor
# Stored with the files over 50 KB xz-compressed in place (NAME.xz; the scripts read either):
python benchmarks/stored.py pack benchmarks/results/2026-12-02-cpu-cost-floor
