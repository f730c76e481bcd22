# BENCHMARKS.md section 7, "On a GPU": one H100 80GB HBM3 (device tool), torch 2.11 cu130,
# diffusers 0.42.1, full-size random-weight FLUX.1-dev (11.9 B parameters, bf16, 1024², 28 steps,
# batch 1, guidance 3.5) and PixArt-Σ (1024², 20 steps) architectures: timings real, images
# meaningless, adaptive caches' timings (MagCache, FirstBlockCache) meaningless too (they decide
# from the weights). tuner/ and benchmarks/ at e7848fc, packages from .whl-lz/site.tar.xz.
mkdir -p /tmp/site && tar xJf .whl-lz/site.tar.xz -C /tmp/site
export PYTHONPATH=$PWD:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# Each cache at its default and at its range's fast end, interleaved against eager plain in one
# process; every plain run after a configuration compared bit for bit with the first plain run
# -> dit.log, dit_bench.json
python3 benchmarks/dit_bench.py dit --out $OUT/dit --rounds 2 3 --limit 300 > $OUT/dit.log 2>&1
