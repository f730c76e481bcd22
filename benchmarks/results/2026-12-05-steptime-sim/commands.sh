# BENCHMARKS.md, section 6 (Coverage), runs judged whole and step by step: the same simulated
# machine at step granularity (25 steps a run, 5 % jitter per step), 20 seeds per scenario (dev machine, CPU)
python benchmarks/coverage.py sim --out benchmarks/results/2026-12-05-steptime-sim/runs --seeds 20 --steps 25 --judge runs
python benchmarks/coverage.py sim --out benchmarks/results/2026-12-05-steptime-sim/steps --seeds 20 --steps 25 --judge steps
# (raw.json packed with xz -9e afterwards)
