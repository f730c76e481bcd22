# BENCHMARKS.md section 3, "End to end against tuner 0.1, on the CPU": the command of
# ../2026-12-02-cpu-cost-prior/ again, after two pairs at the minimum with the warm-up run among
# the trust rule's judges (commit 4f92ffe's tuner), on the 2-core dev machine; two runs (the
# second resumes the first's studies).
A="--device cpu --sd tuner/weights/tiny-shapes --cost-clip tuner/weights/tiny-shapes-clip \
   --prompts benchmarks/results/2026-12-01-cpu-cost/tiny-shapes-captions.txt --steps 25 \
   --num-samples 16 --metric clip --budget 0.02 --threads 2 --label new-pairs2-2threads"
python benchmarks/gpu_bench.py cost $A --limit 1500 --out benchmarks/results/2026-12-02-cpu-cost-pairs2  # 1,502 s
python benchmarks/gpu_bench.py cost $A --limit 560 --out benchmarks/results/2026-12-02-cpu-cost-pairs2   # 473 s, finished
python benchmarks/gpu_bench.py spent --label new-pairs2-2threads --out benchmarks/results/2026-12-02-cpu-cost-pairs2
# Stored with the files over 50 KB xz-compressed in place (NAME.xz; the scripts read either):
python benchmarks/stored.py pack benchmarks/results/2026-12-02-cpu-cost-pairs2
