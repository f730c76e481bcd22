# BENCHMARKS.md section 5, "Measured since, on an H100": one H100 80GB HBM3 (device tool; the
# call asked for any single GPU and got an H100), torch 2.11 cu130, diffusers 0.42.1, full-size
# random-weight SD1.5 (timings real, images meaningless). The project's tuner/ and benchmarks at
# the commit that added graphs_fusion_bench.py (dcfef3e..e6010c5), copied to .gx/ and carried
# with the packages of 2026-12-04-h200-graphs (site.tar.xz):
mkdir -p /tmp/site && tar xJf .whl-lz/site.tar.xz -C /tmp/site
cd .gx && export PYTHONPATH=$PWD:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# 1. Graphs with and without the per-step sync, compiled graphs, eager DeepCache, against eager
#    plain in one process -> graphs_fusion_bench.json (292 s wall)
python3 benchmarks/graphs_fusion_bench.py --out $OUT --steps 50 --rounds 3 3 --limit 300
# 2. The tuner's deepcache grid on the same machine, a minute later (graphs knob both sides,
#    host timesteps on) -> grid/grid.log, grid/show.log, grid/search_params.json, grid/tuner.db.sql.xz
#    (the study packed by benchmarks/stored.py as its SQL, xz -9e; read it with benchmarks/stored.py)
timeout -s INT 540 python3 -m tuner run --pipe sd1.5-random --clip-model clip-l-random --device cuda \
  --combo deepcache --sampler grid --trials 32 --steps 50 --num-samples 8 --batch-size 4 \
  --no-progress --no-artifacts --studies $OUT/studies --output $OUT/search_params.json
python3 -m tuner show --output $OUT/search_params.json
