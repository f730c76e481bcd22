# BENCHMARKS.md section 4, "The replay, corrected": the default TPE, 100 seeds per budget, after
# the table's evaluator stopped giving speed-pruned configurations a loss and pruned trials
# report their speedup; and the local-search variants (neighbours.py, 20 seeds, neighbours.txt).
T=benchmarks/tables/tiny-shapes-deepcache+tome.json
D=benchmarks/results/2026-12-02-sampler-pruned
python benchmarks/sampler_bench.py replay $T --seeds 100 --samplers tpe --budget 0.02 --out $D/replay-tpe-0.02-100seeds.json
python benchmarks/sampler_bench.py replay $T --seeds 100 --samplers tpe --budget 0.05 --out $D/replay-tpe-0.05-100seeds.json
python $D/neighbours.py all 0 20 >> $D/neighbours.txt
python $D/neighbours.py every 3 20 >> $D/neighbours.txt
# --patience 40 run by the runner itself, 20 seeds at 2 %, before (a checkout of the commit
# before "confirmed progress", in /tmp/before) and with it: identical on every seed, since the
# table's races re-measure its own estimates and take nothing back.
python $D/patience40.py /tmp/before 0.02 0 20 > $D/patience40-before.txt
python $D/patience40.py . 0.02 0 20 > $D/patience40-confirmed-progress.txt
# Stored with the files over 50 KB xz-compressed in place (NAME.xz; the scripts read either):
python benchmarks/stored.py pack benchmarks/results/2026-12-02-sampler-pruned
