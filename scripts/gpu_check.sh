#!/usr/bin/env bash
# The checks that need a CUDA GPU, about 10 minutes: the GPU tests (compiled against eager steps
# included), the throughput benchmark (C2FNAS-Panc against DynUNet at 96^3, batches 2, 4 and 8,
# eager and compiled, with the fraction of the measured bf16 matmul peak), the whole
# pipeline (smoke preset) on the GPU, and the paper's coarse search costed in GPU-hours. Run from the repository root with c2fnas installed
# (or src/ on PYTHONPATH). Logs and results go to $OUT (default gpu-check/).
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$out/gpu.txt"

echo "== GPU tests"
# 210 s: two of the tests compile a training step (Inductor + CUDA graphs), untimed on a GPU yet
timeout 210 python3 -m pytest -q -m gpu -p no:cacheprovider tests/gpu \
    tests/training/test_precision.py 2>&1 | tee "$out/pytest.log"

echo "== throughput on the GPU: batches 2, 4, 8 at 96^3, eager and compiled (CUDA graphs)"
# Each row: TFLOP/s and the fraction of the bf16 matmul peak measured in the same run.
timeout 150 python3 benchmarks/throughput.py --device cuda --patches 96 --batches 2 4 8 \
    --precisions bf16 fp32 --networks c2fnas-panc dynunet --repeats 8 \
    --output "$out/throughput_gpu.json" 2>&1 | tee "$out/throughput.log"
timeout 200 python3 benchmarks/throughput.py --device cuda --patches 96 --batches 2 4 8 \
    --precisions bf16 --networks c2fnas-panc dynunet --repeats 8 --compile \
    --output "$out/throughput_gpu_compiled.json" 2>&1 | tee "$out/throughput_compiled.log"

echo "== c2fnas run, smoke preset, on the GPU"
work=$(mktemp -d)
timeout 60 python3 -m c2fnas data synth "$work/data" --cases 8 --test-cases 2 >/dev/null &&
    timeout 180 python3 -m c2fnas run "$work/data" --run "$work/run" --preset smoke 2>&1 \
        | tail -n 40 | tee "$out/run.log"
cp "$work/run/report.md" "$out/report.md" 2>/dev/null || echo "no report written"

echo "== the paper's coarse search on this GPU: compute and device-hours from a measured step"
# 50 networks x 20,000 iterations, batch 8 of 96^3, in bf16, eager (training compiles: faster).
# The validation windows come from the smoke run's small synthetic cases, not Pancreas CT.
timeout 120 python3 -m c2fnas search coarse "$work/run" --preset paper --estimate 2>&1 \
    | tee "$out/paper_estimate.txt"
