# tuner/weights/tiny-shapes-dit: trained on one H100 80GB HBM3 (device tool), torch 2.11 cu130,
# diffusers 0.42.1, with the packages of 2026-12-04-h200-graphs (site.tar.xz), from the project's
# root at the commit that shipped the weights -> log.json, samples.png/.txt, train.log
mkdir -p /tmp/site && tar xJf .whl-lz/site.tar.xz -C /tmp/site
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 tools/train_tiny_dit.py train --out $OUT/dit --device cuda --dit-seconds 270 \
    --eval-images 540 --export 2>&1 | tee $OUT/dit.log      # 4304 DiT steps of batch 512
# then on the CPU, with this project's packages (weights stored as float16: images of the
# exported pipeline differ from the checkpoint's by at most 0.0021, mean 0.00006, on a 0-1 scale):
python tools/train_tiny_dit.py export <fetched>/dit/checkpoint.safetensors
