# BENCHMARKS.md section 6, "Step times on the GPU": one H100 80GB HBM3 (device tool), torch 2.11
# cu130, full-size random-weight SD1.5, fp16, 512², batch 4, 25 DDIM steps, tuner at f0efef5.
# The wheels of diffusers 0.42.1, DeepCache 0.1.1, tomesd 0.1.3, tgate 1.0.0, transformers 5.24.0,
# optuna 5.0.0 and their pure-Python needs, installed with --target /tmp/site.
export PYTHONPATH=$PWD:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
timeout -s INT 160 python3 benchmarks/step_times.py --out $OUT --repeats 4 --pairs 12 > $OUT/steptimes.log 2>&1
python3 benchmarks/step_times.py --replay $OUT/runs.json >> $OUT/steptimes.log 2>&1
