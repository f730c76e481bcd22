# BENCHMARKS.md section 3, "On a GPU, --combo all end to end": the timing rule on simulated runs.
python benchmarks/timing_sim.py --out benchmarks/results/2026-12-02-timing-sim/sim.md
python benchmarks/results/2026-12-02-timing-sim/reference_variants.py \
    > benchmarks/results/2026-12-02-timing-sim/reference-variants.txt
