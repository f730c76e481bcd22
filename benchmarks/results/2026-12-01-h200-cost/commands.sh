# BENCHMARKS.md section 3, "On a GPU": one H200 (device tool), full-size SD1.5 architecture with
# random weights (timings real, CLIP losses meaningless), each tuner's defaults but one combo.
# OLD is tuner 0.1: git archive 419cd41 | tar -x -C OLD. Wheels as in ../shared/NOTES.md.
# Run twice (the second resumes both studies); each run stops each tuner after --limit seconds
# (SIGINT: the running trial is marked failed and re-run on resume).
A="--num-samples 32 --metric clip --budget 0.02 --combo deepcache+tome --out $OUT"
python benchmarks/gpu_bench.py cost --old OLD $A --limit 235   # run 1 -> cost-old-run1.json
python benchmarks/gpu_bench.py cost $A --limit 235             # run 1 -> cost-new-run1.json
python benchmarks/gpu_bench.py cost --old OLD $A --limit 220   # run 2 -> cost-old.json (all trials)
python benchmarks/gpu_bench.py cost $A --limit 220             # run 2 -> cost-new.json (all trials)
# cost-*/tuner-run1.db: the studies after run 1 (the databases after run 2 did not come back
# from the machine; cost-*.json list every trial of both runs, read from them there).
# Stored with the files over 50 KB xz-compressed in place (NAME.xz; the scripts read either):
python benchmarks/stored.py pack benchmarks/results/2026-12-01-h200-cost
