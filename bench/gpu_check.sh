#!/usr/bin/env bash
# One prepared GPU check for the JBU kernels and SegEarth-OV throughput
# (docs/methods/jbu_kernels.md#5-benches-and-the-gpu-check), < 8 min on an H200.
# Run from the repository root on the device machine:   bash bench/gpu_check.sh
# Everything is teed to $OUT/gpu_check.log (OUT defaults to ./gpu_check_out). Each step has its own
# timeout, so one hung step cannot eat the device budget; a failing step does not stop the others.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
step() {  # step SECONDS TITLE COMMAND...
    local limit=$1 title=$2; shift 2
    echo; echo "=== $title ($(date -u +%H:%M:%S), limit ${limit}s) ==="
    timeout "$limit" "$@"; echo "=== exit $? ==="
}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
    step 240 "GPU tests (pytest -m gpu)" $PY -m pytest -q -m gpu -p no:cacheprovider tests
    step 60 "JBU kernel application, 9x512x224^2, 121 taps, fp16" $PY bench/jbu_adaptive_conv.py --device cuda
    step 60 "JBU-One train step, batch 4" $PY bench/jbu_train_step.py --device cuda --batch 4 --steps 5
    step 150 "SegEarth-OV 448^2: official protocol vs frugalvl" $PY bench/segearth_ov.py --device cuda --sizes 448 --repeats 5
    step 120 "SegEarth-OV3 (random SAM 3 dimensions)" $PY bench/segearth_ov3.py --device cuda --sweep
} 2>&1 | tee "$OUT/gpu_check.log"
