# BENCHMARKS.md section 7, on the 2-core shared dev machine (CPU, torch 2.13.0, diffusers 0.42.1),
# other engineers' test runs busy on the same cores at times: timings load-confounded.
# tiny-shapes-dit (trained toy, FLUX.1 architecture, true CFG at scale 4), 64 px, 20 steps,
# batch 4, 32 prompts (its own captions), scored with tiny-shapes-clip, budget 2 %, 1 thread.
OUT=benchmarks/results/2026-12-06-cpu-dit-defaults
A="--out $OUT --steps 20 --num-samples 32"
python benchmarks/dit_defaults_bench.py tune $A --trials 10   # tuned/, tune.log (first run)
python benchmarks/dit_defaults_bench.py tune $A --trials 30   # resumed to 30 per combo
python benchmarks/dit_defaults_bench.py compare $A            # compare.json, table.md, compare.log
# stored: tuned/tuner.db as its SQL text, xz-compressed (benchmarks/stored.py pack)
