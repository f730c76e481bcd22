# BENCHMARKS.md section 8, "On a GPU": one H100 80GB HBM3 (device tool, the same machine as
# 2026-12-05-h100-dit, minutes later), torch 2.11 cu130, diffusers 0.42.1, full-size
# random-weight SD1.5 (fp16, 512², batch 4, latents out): timings real, images meaningless.
# tuner/ and benchmarks/ at e7848fc, packages from .whl-lz/site.tar.xz.
mkdir -p /tmp/site && (test -d /tmp/site/diffusers || tar xJf .whl-lz/site.tar.xz -C /tmp/site)
export PYTHONPATH=$PWD:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# DDIM, DPM-Solver++ and UniPC at 50, 25, 15 and 10 steps, each plain and with DeepCache N=3 b0,
# interleaved against the 50-step DDIM plain pipeline in one process; undo checked on every
# plain run -> sched.log, sched_bench.json
python3 benchmarks/dit_bench.py sched --out $OUT/sched --rounds 2 2 --limit 140 > $OUT/sched.log 2>&1
