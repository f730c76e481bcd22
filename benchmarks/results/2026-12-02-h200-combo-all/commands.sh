# BENCHMARKS.md section 3, "On a GPU, --combo all end to end": one H200 (device tool), full-size
# SD1.5 architecture with random weights (timings real, CLIP losses meaningless), this tuner's
# defaults but 20 DDIM steps and 16 samples. Wheels as in ../shared/NOTES.md (carried as wheels/).
# Each device command may run 10 minutes, so the run is stopped with SIGINT after --limit seconds
# and resumed by the next command, from the studies of the one before (carried back and forth):
A="--steps 20 --num-samples 16 --metric clip --budget 0.02 --combo all"
python benchmarks/gpu_bench.py cost $A --limit 500 --out $OUT    # run 1 (503 s)
cp -r THIS_FOLDER/cost-new THIS_FOLDER/cost-new.log $OUT/
python benchmarks/gpu_bench.py cost $A --limit 510 --out $OUT    # run 2 (513 s)
cp -r THIS_FOLDER/cost-new THIS_FOLDER/cost-new.log $OUT/
python benchmarks/gpu_bench.py cost $A --limit 540 --out $OUT    # run 3 (543 s) -> this folder
# Unfinished: the next runs resume the same way. Where the seconds went (any machine):
python benchmarks/gpu_bench.py spent --out THIS_FOLDER            # spent-new.json
# tuner 0.1 at the same setting (checkout of commit 419cd41 in old/, carried to the device), in
# runs that resume the same way (cost-old/, cost-old.log, cost-old.json; unfinished):
python benchmarks/gpu_bench.py cost $A --old old --limit 520 --out $OUT      # run 1 (522 s)
cp -r THIS_FOLDER/cost-old THIS_FOLDER/cost-old.log $OUT/
python benchmarks/gpu_bench.py cost $A --old old --limit 555 --out $OUT      # run 2 (557 s)
