#!/usr/bin/env bash
# The checks that need a CUDA GPU: the GPU tests, the whole pipeline (smoke preset) on the GPU,
# and the throughput benchmark on the GPU. Run from the repository root with c2fnas installed
# (or src/ on PYTHONPATH). Logs and results go to $OUT (default gpu-check/).
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$out/gpu.txt"

echo "== GPU tests"
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/gpu \
    tests/training/test_precision.py 2>&1 | tee "$out/pytest.log"

echo "== throughput on the GPU"
timeout 200 python3 benchmarks/throughput.py --device cuda --patches 96 128 --repeats 10 \
    --output "$out/throughput_gpu.json" 2>&1 | tee "$out/throughput.log"

echo "== c2fnas run, smoke preset, on the GPU"
work=$(mktemp -d)
timeout 240 python3 -m c2fnas data synth "$work/data" --cases 8 --test-cases 2 >/dev/null &&
    timeout 240 python3 -m c2fnas run "$work/data" --run "$work/run" --preset smoke 2>&1 \
        | tail -n 40 | tee "$out/run.log"
cp "$work/run/report.md" "$out/report.md" 2>/dev/null || echo "no report written"
