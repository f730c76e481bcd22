# BENCHMARKS.md section 5, "The tuner's grid with compiled graphs, answered": the tuner's own
# deepcache grid (graphs.enabled 0/1/2: eager, graphs, compiled graphs; 48 points) on full-size
# random-weight SD1.5 (timings real, images and CLIP losses meaningless), in two calls of the
# device tool, both on one H100 80GB HBM3 (torch 2.11 cu130, diffusers 0.42.1, the packages of
# .whl-lz/site.tar.xz), the second resuming the first's study.
#
# Part 1 (2026-12-05 19:20, tuner at e7848fc): stopped by `timeout -s INT 345` after 5 trials,
# before its first race ended -> grid-part1.log
# Part 2 (2026-12-06 00:07, tuner at 2d3c6e4, with --timeout): the study of part 1 copied to
# gpu-carry/studies/tuner.db and resumed; the search stopped by its --timeout after 13 more
# trials (18 of 48), then raced and answered -> grid-part2.log, search_params.json,
# tuner.db.sql.xz (the study after part 2, packed by benchmarks/stored.py), show.log (tuner show,
# run here afterwards)
mkdir -p /tmp/site && (test -d /tmp/site/diffusers || tar xJf .whl-lz/site.tar.xz -C /tmp/site)
export PYTHONPATH=$PWD:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
mkdir -p /tmp/studies; test -f /tmp/studies/tuner.db || cp gpu-carry/studies/tuner.db /tmp/studies/
timeout -s INT 560 python3 -m tuner run --pipe sd1.5-random --clip-model clip-l-random --device cuda \
  --combo deepcache --sampler grid --sampler-seed 0 --trials 48 --steps 50 --num-samples 8 --batch-size 4 \
  --no-progress --no-artifacts --timeout 300 --studies /tmp/studies --output /tmp/studies/search_params.json
# (part 1: the same without --timeout, under `timeout -s INT 345`, on a fresh /tmp/studies)
