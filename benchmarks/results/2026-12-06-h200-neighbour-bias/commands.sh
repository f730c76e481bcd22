# BENCHMARKS.md section 6, "The neighbour's effect, measured alternately": one NVIDIA H200 (device
# tool), tuner at 4d02e41, the environment of ../2026-12-06-h100-coverage-steps (diffusers 0.42.1,
# DeepCache 0.1.1, torch of the machine). 8 blocks of 6 pairs per condition (DeepCache N=5 b0,
# random-weight SD1.5, fp16, 512², batch 4, 25 DDIM steps), quiet and beside bursty.py --matmul
# (paused with SIGSTOP between its blocks), ABBA; then the same runs judged whole and by step.
export PYTHONPATH=$PWD:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt
timeout -s INT 260 python3 benchmarks/neighbour_bias.py --out $OUT --blocks 8 --pairs 6 > $OUT/bias.log 2>&1
python3 benchmarks/neighbour_bias.py --replay $OUT/runs.json > $OUT/replay.log 2>&1
# runs.json is stored as runs.json.xz; the replay reads either:
#   python benchmarks/neighbour_bias.py --replay benchmarks/results/2026-12-06-h200-neighbour-bias/runs.json.xz
