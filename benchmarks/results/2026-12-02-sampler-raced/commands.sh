# The deepcache+tome table's contenders raced (dev machine, 2 cores, nothing else running), then
# replayed against the raced table (BENCHMARKS.md section 4, "The table's optimum, raced").
T=benchmarks/tables/tiny-shapes-deepcache+tome
python benchmarks/sampler_bench.py remeasure $T.json --out $T-raced.json   # remeasure.txt (418 s)
for s in tpe random grid; do
  python benchmarks/sampler_bench.py replay $T-raced.json --budget 0.02 --seeds 100 \
      --samplers $s --out THIS_FOLDER/replay-$s-0.02-100seeds.json
done
for b in 0.01 0.05; do
  python benchmarks/sampler_bench.py replay $T-raced.json --budget $b --seeds 100 --samplers tpe \
      --out THIS_FOLDER/replay-tpe-$b-100seeds.json
done
python benchmarks/sampler_bench.py markdown THIS_FOLDER/replay-*-0.02-100seeds.json.xz
# Stored with the files over 50 KB xz-compressed in place (NAME.xz; the scripts read either):
python benchmarks/stored.py pack benchmarks/results/2026-12-02-sampler-raced
