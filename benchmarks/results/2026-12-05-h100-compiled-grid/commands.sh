# BENCHMARKS.md section 5, "Compiled graphs as a knob": one H100 80GB HBM3 (device tool), torch
# 2.11 cu130, diffusers 0.42.1 (the packages of 2026-12-04-h200-graphs, site.tar.xz), full-size
# random-weight SD1.5 (timings real, images and CLIP losses meaningless), from the project's root
# at the commit that made `graphs.enabled` 0/1/2 -> grid.log, show.log, tuner.db.sql.xz (the study,
# WAL checkpointed, packed by benchmarks/stored.py as its SQL, xz -9e; read it with benchmarks/stored.py)
mkdir -p /tmp/site && tar xJf .whl-lz/site.tar.xz -C /tmp/site
export PYTHONPATH=$PWD:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$OUT/inductor
timeout -s INT 470 python3 -m tuner run --pipe sd1.5-random --clip-model clip-l-random --device cuda \
  --combo deepcache --sampler grid --sampler-seed 0 --trials 48 --steps 50 --num-samples 8 \
  --batch-size 4 --no-progress --no-artifacts --studies $OUT/grid/studies \
  --output $OUT/grid/search_params.json 2>&1 | tee $OUT/grid/grid.log
python3 -m tuner show --output $OUT/grid/search_params.json   # "no results": see BENCHMARKS.md
