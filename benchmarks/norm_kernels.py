"""Instance norm + ReLU, forward and backward, by c2fnas's C++ CPU kernels against PyTorch's ops.

Times ``InstanceNorm(channels, relu=True)`` on channels_last_3d batches of the sizes
C2FNAS-Panc's levels have at a 48^3 patch (batch 2), once through the fused kernels
(``forward``) and once through PyTorch's ops (``forward_unfused``: batch norm's channels-last
kernels one sample at a time, then an in-place ReLU), in float32 and bfloat16, taking turns.

    .venv/bin/python benchmarks/norm_kernels.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from c2fnas.accel.kernels import cpu_kernels
from c2fnas.accel.layers import FastInstanceNorm
from c2fnas.accel.process import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "norm_kernels.json"
# (channels, side) of C2FNAS-Panc's norms at a 48^3 patch: stem/head, levels 0-3
SIZES = ((32, 48), (64, 24), (128, 12), (256, 6), (512, 3))


def _milliseconds(step, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(channels: int, side: int, dtype: torch.dtype, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    norm = FastInstanceNorm(channels, relu=True)
    shape = (batch, channels, side, side, side)
    x = torch.randn(shape, dtype=dtype).to(memory_format=torch.channels_last_3d)
    x.requires_grad_()
    upstream = torch.randn(shape, dtype=dtype).to(memory_format=torch.channels_last_3d)

    def step(forward):
        def run() -> None:  # gradients returned, not accumulated into .grad
            torch.autograd.grad(forward(x), (x, norm.weight, norm.bias), upstream)

        return run

    steps = {"fused": step(norm.forward), "pytorch": step(norm.forward_unfused)}
    for run in steps.values():  # warm-up
        run()
        run()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(3):  # in turns, so a slow spell of the machine hits both
        for label, run in steps.items():
            times[label].append(_milliseconds(run, repeats))
    fused, pytorch = (statistics.median(times[label]) for label in ("fused", "pytorch"))
    return {
        "channels": channels,
        "side": side,
        "dtype": str(dtype).removeprefix("torch."),
        "batch": batch,
        "fused_ms": fused,
        "pytorch_ms": pytorch,
        "speedup": pytorch / fused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if cpu_kernels() is None:
        sys.exit("the C++ CPU kernels could not be built here (see the warning above)")
    keep_freed_memory()
    rows = [
        measure(channels, side, dtype, args.batch, args.repeats)
        for dtype in (torch.float32, torch.bfloat16)
        for channels, side in SIZES
    ]
    print("instance norm + ReLU, forward + backward, channels_last_3d, batch", args.batch)
    print(
        f"{'dtype':9s} {'channels':>8s} {'side':>5s} {'fused ms':>9s} {'PyTorch ms':>11s}  speed-up"
    )
    for row in rows:
        print(
            f"{row['dtype']:9s} {row['channels']:8d} {row['side']:5d} {row['fused_ms']:9.3f} "
            f"{row['pytorch_ms']:11.3f}  {row['speedup']:.2f}x"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    machine = {"processor": platform.machine(), "threads": torch.get_num_threads()}
    summary = {
        "machine": machine,
        "torch": torch.__version__,
        "settings": vars(args) | {"output": str(args.output)},
        "rows": rows,
    }
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print("wrote", args.output)


if __name__ == "__main__":
    main()
