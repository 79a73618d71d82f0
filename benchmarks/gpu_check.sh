#!/usr/bin/env bash
# One prepared GPU session, run through the device tool after `bash benchmarks/fetch_gpu_wheels.sh` here:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=560)
# Sampler dtype/batch/compile sweep, the serving benchmark in fp16, and training throughput on demo and base.
# Every output lands in $OUT (tee), so a run cut at its limit still returns what it measured.
set -uo pipefail
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, diffusers, fastapi; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" | tee -a "$OUT/gpu.txt"
# Priority order: what the 2026-11-26 run could not measure comes first.
timeout 150 python3 benchmarks/serve_load.py --device cuda --dtype fp16 --batch 64 --quick 2>&1 | tee "$OUT/serve_fp16.txt"
timeout 120 python3 benchmarks/train.py --presets base 2>&1 | tee "$OUT/train_base.txt"
timeout 200 python3 benchmarks/sample_speed.py --device cuda --dtypes fp32,fp16 --batches 1,64 --repeats 3 --compile --compile-mode reduce-overhead 2>&1 | grep -v "kept in float32" | tee "$OUT/sample_speed_compile.txt"
timeout 60 python3 benchmarks/sample_speed.py --device cuda --preset base --pipeline none --dtypes fp32,fp16,bf16 --batches 1,16 --repeats 3 --warmup 1 2>&1 | grep -v "kept in float32" | tee "$OUT/sample_speed_base.txt"
