# BENCHMARKS.md section 5, "CUDA graphs with DeepCache": one H200 (device tool), torch 2.11 cu130,
# diffusers 0.42.1, full-size random-weight presets (timings real, images meaningless).
# Packages: the wheels of the earlier GPU runs, unpacked into one folder and packed as one
# site.tar.xz (the working tree plus the wheels exceeded the device tool's 64 MiB; xz over all the
# files made them 13 MiB), carried as .whl-lz/ and unpacked on the device:
mkdir -p /tmp/site && tar xJf .whl-lz/site.tar.xz -C /tmp/site
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

# 1. At commit e459d92: SD1.5 outputs and speeds
#    -> graphs_bench-sd15.json/.log (its SDXL part then crashed in encode_prompt: the device was
#    passed positionally as prompt_2; fixed by passing keywords)
python3 benchmarks/graphs_bench.py --out $OUT --steps 50 --rounds 7 5 --limit 380
# 2. With graphs_bench.py as committed in 0284458 (tuner code of ebf820d): SDXL outputs and speeds (3 of 5 rounds within the limit), and the ToMe/T-GATE tries on SDXL
#    (ToMe at max_downsample 1 merges nothing on SDXL, so only T-GATE's tries say anything there)
#    -> graphs_bench-sdxl.json/.log
python3 benchmarks/graphs_bench.py --out $OUT --steps 50 --rounds 7 5 --limit 200 --presets sdxl-random
# 3. The ToMe/T-GATE tries on SD1.5 -> forced-sd15.json/.log; then the tuner's deepcache grid with
#    the graphs knob, same code (the accelerator of ebf820d), where graphs.enabled=0 was still rejected as "changes
#    nothing" (fixed in 246cff1) -> grid.log, search_params.json, studies/tuner.db
python3 -c "
import json; from benchmarks.graphs_bench import Bench, forced
b = Bench('sd1.5-random', 512, 4, 50); json.dump(forced(b), open('$OUT/forced-sd15.json', 'w'), indent=1)"
timeout -s INT 470 python3 -m tuner run --pipe sd1.5-random --clip-model clip-l-random --device cuda \
  --combo deepcache --sampler grid --trials 32 --steps 50 --num-samples 8 --batch-size 4 \
  --no-progress --no-artifacts --studies $OUT/studies --output $OUT/search_params.json
# 4. After the fix (246cff1, tests 917b394): the same grid, both sides measured; stopped by
#    SIGINT after 220 s (the device time left) with 19 of 32 points, no confirmation
#    -> both-sides/grid.log, both-sides/search_params.json, both-sides/studies/tuner.db
timeout -s INT 220 python3 -m tuner run --pipe sd1.5-random --clip-model clip-l-random --device cuda \
  --combo deepcache --sampler grid --trials 32 --steps 50 --num-samples 8 --batch-size 4 \
  --no-progress --no-artifacts --studies $OUT/studies --output $OUT/search_params.json
# Stored with the files over 50 KB xz-compressed in place (NAME.xz; the scripts read either):
python benchmarks/stored.py pack benchmarks/results/2026-12-04-h200-graphs
