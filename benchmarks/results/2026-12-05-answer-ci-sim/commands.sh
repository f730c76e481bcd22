# BENCHMARKS.md, section 6, "The answer's interval at 4-6 % drift": the step-time simulation of
# 2026-12-05-steptime-sim again after the drift between moments is learned from each
# measurement's own ratio variance (tuner/timing.py, Brackets.remember). Dev machine (2 shared
# CPU cores); the simulation's numbers do not depend on the machine.
python benchmarks/coverage.py sim --out benchmarks/results/2026-12-05-answer-ci-sim/steps --seeds 20 --steps 25 --judge steps
python benchmarks/coverage.py sim --out benchmarks/results/2026-12-05-answer-ci-sim/runs --seeds 20 --steps 25 --judge runs
# a second seed set for the rows at 4-6 % drift (the code before the change gave, on the same
# seeds, answers holding 85.0 / 87.5 / 77.5 / 80.0 %: quiet 4, 6 %, bursts 4, 6 %)
python benchmarks/coverage.py sim --out benchmarks/results/2026-12-05-answer-ci-sim/steps-seeds20 --seeds 20 --first-seed 20 --steps 25 --judge steps --drift 0.04 0.06
# half-widths before and after
python benchmarks/coverage.py widths benchmarks/results/2026-12-05-steptime-sim/steps/raw.json.xz benchmarks/results/2026-12-05-answer-ci-sim/steps/raw.json.xz
python benchmarks/coverage.py widths benchmarks/results/2026-12-05-steptime-sim/runs/raw.json.xz benchmarks/results/2026-12-05-answer-ci-sim/runs/raw.json.xz
# (steps/ was run from the working tree before cc30813 was committed, the same code path:
# seeds 0-1 of the 6 % bursts row re-run at cc30813 gave the same raw data but wall times;
# raw.json packed with xz -9e afterwards)
