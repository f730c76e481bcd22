# BENCHMARKS.md section 6, "The neighbour's effect, measured alternately, and a fourth grid": the
# same NVIDIA H200 right after ../2026-12-06-h200-neighbour-bias, tuner at 4d02e41, environment as
# there. seed2-steps/log.txt is the run's output; coverage.md its table.
export PYTHONPATH=$PWD:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 benchmarks/coverage.py gpu --judge steps --out $OUT/seed2-steps --budget 500 --seed 2
