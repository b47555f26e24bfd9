"""Element-wise pieces of a training step on the CPU: PyTorch's eager kernels against the code
TorchInductor (``torch.compile``) generates for them.

A compiled training step saves, for each ReLU's backward, a boolean mask (``x <= 0``) instead
of the ReLU's output. This times that mask and its neighbours on one activation of C2FNAS-Panc's
size at a 48^3 patch, batch 2 (2 x 64 x 24^3 values), in turns, to show where a compiled CPU
step loses time against an eager one (``c2fnas.accel.compile.wanted``).

    .venv/bin/python benchmarks/compiled_pointwise.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "compiled_pointwise.json"
SHAPE = (2, 64, 24, 24, 24)
PIECES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "relu + 1": lambda x: torch.relu(x) + 1,
    "mask x <= 0 (bool)": lambda x: x <= 0,
    "mask x <= 0 as uint8": lambda x: (x <= 0).to(torch.uint8),
}


def _milliseconds(run: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats * 1e3


def measure(name: str, dtype: torch.dtype, repeats: int) -> dict:
    piece = PIECES[name]
    x = torch.randn(SHAPE).to(dtype=dtype, memory_format=torch.channels_last_3d)
    runs = {"eager": piece, "compiled": torch.compile(piece, dynamic=False)}
    for run in runs.values():  # warm-up, and the compiling
        run(x)
        run(x)
    times: dict[str, list[float]] = {kind: [] for kind in runs}
    for _ in range(3):  # in turns, so a slow spell of the machine hits both
        for kind, run in runs.items():
            times[kind].append(_milliseconds(lambda run=run: run(x), repeats))
    eager, compiled = (statistics.median(times[kind]) for kind in ("eager", "compiled"))
    return {
        "piece": name,
        "dtype": str(dtype).removeprefix("torch."),
        "eager_ms": eager,
        "compiled_ms": compiled,
        "compiled_over_eager": compiled / eager,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = [
        measure(name, dtype, args.repeats)
        for dtype in (torch.bfloat16, torch.float32)
        for name in PIECES
    ]
    print("element-wise, channels_last_3d, shape", "x".join(map(str, SHAPE)))
    print(f"{'dtype':9s} {'piece':22s} {'eager ms':>9s} {'compiled ms':>12s}  compiled/eager")
    for row in rows:
        print(
            f"{row['dtype']:9s} {row['piece']:22s} {row['eager_ms']:9.2f} "
            f"{row['compiled_ms']:12.2f}  {row['compiled_over_eager']:.2f}x"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "machine": machine.describe(),
        "settings": vars(args) | {"output": str(args.output), "shape": list(SHAPE)},
        "rows": rows,
    }
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print("wrote", args.output)


if __name__ == "__main__":
    main()
