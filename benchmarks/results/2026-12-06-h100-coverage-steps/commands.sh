# BENCHMARKS.md section 6, "Judged by step on the GPU": one H100 80GB HBM3 (device tool), three
# calls one after the other on the same machine (seed0-steps right after the step-times run of
# ../2026-12-06-h100-steptimes-timer), tuner at f0efef5, environment as there.
export PYTHONPATH=$PWD:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 benchmarks/coverage.py gpu --judge steps --out $OUT/seed0-steps --budget 390
python3 benchmarks/coverage.py gpu --judge runs --out $OUT/seed0-runs --budget 470
python3 benchmarks/coverage.py gpu --judge steps --out $OUT/seed1-steps --budget 470 --seed 1
