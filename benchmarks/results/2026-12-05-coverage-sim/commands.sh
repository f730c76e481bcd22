# BENCHMARKS.md, section 6 (Coverage): simulation, 20 seeds per scenario (dev machine, CPU)
python benchmarks/coverage.py sim --out benchmarks/results/2026-12-05-coverage-sim/default --seeds 20
python benchmarks/coverage.py sim --out benchmarks/results/2026-12-05-coverage-sim/parts-off --seeds 20 \
    --floor 0 --unknown-drift 0 --correlation 0 --jitter-floor 0 --repeat-every 0
# GPU (one command, within --budget seconds, loading included; H100 or H200):
# python benchmarks/coverage.py gpu --out benchmarks/results/<date>-coverage-gpu --budget 480
