# BENCHMARKS.md section 3, "On a GPU, --combo all end to end": the timing rule on simulated runs.
python benchmarks/timing_sim.py --max-tolerance 0.1 0.2 --prior-df 0 4 \
    --out benchmarks/results/2026-12-02-timing-sim/sim.md
python benchmarks/timing_sim.py --sigma 0.03 --faults 0.3 --max-tolerance 0.1 0.2 --prior-df 0 4 \
    --out benchmarks/results/2026-12-02-timing-sim/sim-bursty.md
python benchmarks/results/2026-12-02-timing-sim/reference_variants.py \
    > benchmarks/results/2026-12-02-timing-sim/reference-variants.txt
