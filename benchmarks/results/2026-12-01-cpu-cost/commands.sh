# BENCHMARKS.md section 3, on the 2-core dev machine, one command at a time, nothing else running.
# OLD is a checkout of tuner 0.1: git worktree add OLD 419cd41
# The captions: tuner.presets.trained_prompts("tiny-shapes"), one per line.
OUT=benchmarks/results/2026-12-01-cpu-cost
A="--device cpu --sd tuner/weights/tiny-shapes --cost-clip tuner/weights/tiny-shapes-clip
   --prompts $OUT/tiny-shapes-captions.txt --steps 25 --num-samples 16 --metric clip
   --budget 0.02 --out $OUT"
python benchmarks/gpu_bench.py cost --old OLD $A                 # cost-old.*
python benchmarks/gpu_bench.py cost $A                           # cost-new.*
python benchmarks/gpu_bench.py compare $A                        # compare-first.* (then cost-compare.json)
python benchmarks/gpu_bench.py cost $A --threads 2 --label new-2threads
python benchmarks/gpu_bench.py compare $A --threads 2 --labels old new new-2threads  # cost-compare.json
python benchmarks/gpu_bench.py compare $A --threads 1 --labels old new new-2threads  # compare-1thread.* (written as cost-compare.json in a copy of the folder)
# After the study became one objective (speedup, the loss budget a constraint):
python benchmarks/gpu_bench.py cost $A --threads 2 --label new-1objective-2threads
# raced against the earlier answers in a copy of the folder (compare writes cost-compare.json):
python benchmarks/gpu_bench.py compare $A --threads 2 --labels old new-2threads new-1objective-2threads  # compare-1objective.*
# Stored with the files over 50 KB xz-compressed in place (NAME.xz; the scripts read either):
python benchmarks/stored.py pack benchmarks/results/2026-12-01-cpu-cost
