# BENCHMARKS.md section 4, "TPE settings tried": 100 seeds each, on the 2-core dev machine.
V=benchmarks/results/2026-12-02-sampler-variants/variants.py
for v in default n_ei_64 prior_0.5 n_ei_128 gamma_15; do python $V $v 100; done   # seeds 0-99, 2 %
for v in default gamma_15; do
  python $V $v 100 100 0.02; python $V $v 100 0 0.01; python $V $v 100 0 0.05
done                                                                  # -> variants.txt
# The first five lines were printed before the script took FIRST and BUDGET: seeds 0-99, 2 %.
