# BENCHMARKS.md section 3, "On a GPU, --combo all end to end": one H200 (device tool), full-size
# SD1.5 architecture with random weights (timings real, CLIP losses meaningless), this tuner's
# defaults but 20 DDIM steps and 16 samples. Wheels as in ../shared/NOTES.md (carried as wheels/).
# Each device command may run 10 minutes, so the run is stopped with SIGINT after --limit seconds
# and resumed by the next command, from the studies of the one before (carried back and forth):
A="--steps 20 --num-samples 16 --metric clip --budget 0.02 --combo all"
python benchmarks/gpu_bench.py cost $A --limit 500 --out $OUT    # run 1 (503 s)
cp -r THIS_FOLDER/cost-new THIS_FOLDER/cost-new.log $OUT/ && python benchmarks/stored.py unpack $OUT/cost-new
python benchmarks/gpu_bench.py cost $A --limit 510 --out $OUT    # run 2 (513 s)
cp -r THIS_FOLDER/cost-new THIS_FOLDER/cost-new.log $OUT/ && python benchmarks/stored.py unpack $OUT/cost-new
python benchmarks/gpu_bench.py cost $A --limit 540 --out $OUT    # run 3 (543 s) -> this folder
# Unfinished: the next runs resume the same way. Where the seconds went (any machine):
python benchmarks/gpu_bench.py spent --out THIS_FOLDER            # spent-new.json
# tuner 0.1 at the same setting (checkout of commit 419cd41 in old/, carried to the device), in
# runs that resume the same way (cost-old/, cost-old.log, cost-old.json; unfinished):
python benchmarks/gpu_bench.py cost $A --old old --limit 520 --out $OUT      # run 1 (522 s)
cp -r THIS_FOLDER/cost-old THIS_FOLDER/cost-old.log $OUT/ && python benchmarks/stored.py unpack $OUT/cost-old
python benchmarks/gpu_bench.py cost $A --old old --limit 555 --out $OUT      # run 2 (557 s)
python benchmarks/gpu_bench.py cost $A --old old --limit 200 --out $OUT      # run 3 (202 s)
# This tuner again, with the variance prior, the 20 % cap and two pairs at the minimum (the
# warm-up run did not judge yet), in runs that resume the same way (cost-pairs2*):
P="--label pairs2 --tuner-args=--timing-pairs=2"
python benchmarks/gpu_bench.py cost $A $P --limit 530 --out $OUT       # run 1 (532 s)
cp -r THIS_FOLDER/cost-pairs2 THIS_FOLDER/cost-pairs2.log $OUT/ && python benchmarks/stored.py unpack $OUT/cost-pairs2
python benchmarks/gpu_bench.py cost $A $P --limit 540 --out $OUT       # run 2 (542 s)
cp -r THIS_FOLDER/cost-pairs2 THIS_FOLDER/cost-pairs2.log $OUT/ && python benchmarks/stored.py unpack $OUT/cost-pairs2
python benchmarks/gpu_bench.py cost $A $P --limit 240 --out $OUT       # run 3 (242 s)
python benchmarks/gpu_bench.py spent --label pairs2 --out $OUT         # spent-pairs2.json
# The studies database of run 3 did not come back from the GPU machine: cost-pairs2/tuner.db is
# run 2's (the first three combos finished and confirmed); cost-pairs2.json (every trial's
# state and seconds), spent-pairs2.json and cost-pairs2/search_params.json are run 3's.
# This tuner from scratch with its defaults after the floor (pruning under another combo's
# confirmed answer) and the warm-up run judging, two runs that resume the same way (cost-floor*;
# run 2 was stopped by its limit after the overall race had written the answer):
F="--label floor"
python benchmarks/gpu_bench.py cost $A $F --limit 540 --out $OUT       # run 1 (542 s)
cp -r THIS_FOLDER/cost-floor THIS_FOLDER/cost-floor.log $OUT/ && python benchmarks/stored.py unpack $OUT/cost-floor
python benchmarks/gpu_bench.py cost $A $F --limit 540 --out $OUT       # run 2 (542 s)
python benchmarks/gpu_bench.py spent --label floor --out THIS_FOLDER   # spent-floor.json, .txt
# tuner 0.1 resumed in a later session, three runs the same way (cost-old*; commands-old-resume.txt
# has their times; on the device, tuner/ and gpu_bench.py were this commit's, from a copy):
cp -r THIS_FOLDER/cost-old THIS_FOLDER/cost-old.log $OUT/ && python benchmarks/stored.py unpack $OUT/cost-old
python benchmarks/gpu_bench.py cost $A --old old --limit 540 --out $OUT      # run 4 (542 s)
python benchmarks/gpu_bench.py cost $A --old old --limit 540 --out $OUT      # run 5 (542 s)
python benchmarks/gpu_bench.py cost $A --old old --limit 518 --out $OUT      # run 6 (520 s)
# Unfinished: deepcache+tome+tgate at 155 of 200 trials. The next run resumes it the same way.
# What "progress counts once confirmed" would have done in the cost-floor run, from its records:
# at commit 9ca941e (its rules; see the docstring):
python THIS_FOLDER/confirmed-progress.py > THIS_FOLDER/confirmed-progress.txt
# A later session, on one H200 (tuner/ and gpu_bench.py of commit ae64f4a, from a copy):
# tuner 0.1 finished, run 7 (282 s), then this tuner from scratch with confirmed progress, three
# runs that resume the same way (cost-confirmed*; the first began in the same device call):
cp -r THIS_FOLDER/cost-old THIS_FOLDER/cost-old.log $OUT/ && python benchmarks/stored.py unpack $OUT/cost-old
python benchmarks/gpu_bench.py cost $A --old old --limit 420 --out $OUT      # run 7 (282 s): done
python benchmarks/gpu_bench.py cost $A --label confirmed --limit 275 --out $OUT     # run 1 (274 s)
cp -r THIS_FOLDER/cost-confirmed THIS_FOLDER/cost-confirmed.log $OUT/ && python benchmarks/stored.py unpack $OUT/cost-confirmed
python benchmarks/gpu_bench.py cost $A --label confirmed --limit 555 --out $OUT     # run 2 (558 s)
cp -r THIS_FOLDER/cost-confirmed THIS_FOLDER/cost-confirmed.log $OUT/ && python benchmarks/stored.py unpack $OUT/cost-confirmed
python benchmarks/gpu_bench.py cost $A --label confirmed --limit 475 --out $OUT     # run 3 (71 s): done
python benchmarks/gpu_bench.py spent --label confirmed --out THIS_FOLDER     # spent-confirmed.json
# cost-old/tuner.db did not come back from run 7 (too many files in $OUT): it is run 6's. Run
# 7's trials (every trial's state and seconds) and its answer are in cost-old.json and cost-old.log.
# Stored with the files over 50 KB xz-compressed in place (NAME.xz; the scripts read either):
python benchmarks/stored.py pack benchmarks/results/2026-12-02-h200-combo-all
