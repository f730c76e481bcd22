# BENCHMARKS.md section 6, "Step times on the GPU, first try": one H100 80GB HBM3 (device tool,
# the machine of 2026-12-06-h100-compiled-grid, a minute after it), torch 2.11 cu130, full-size
# random-weight SD1.5, fp16, 512², batch 4, 25 DDIM steps, tuner at 2d3c6e4.
# This run's step timer was off (judging by step is off by default, and the script then used the
# evaluator's timer, None): every run carries 0 step times, so the step-by-step replay equals the
# whole-run one. What it does measure: 16 plain/DeepCache N=4 b0 pairs quiet and 16 beside
# bursty.py --matmul, judged whole. step_times.py now gives the evaluator a timer of its own.
mkdir -p /tmp/site && (test -d /tmp/site/diffusers || tar xJf .whl-lz/site.tar.xz -C /tmp/site)
export PYTHONPATH=$PWD:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
timeout -s INT 330 python3 benchmarks/step_times.py --out $OUT > $OUT/steptimes.log 2>&1
python3 benchmarks/step_times.py --replay $OUT/runs.json >> $OUT/steptimes.log 2>&1
