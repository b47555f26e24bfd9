"""A training step alone and beside a competing CPU job, per thread count and OpenMP wait policy.

On a shared machine (a workstation, a batch node with other jobs) a training process does not
have every core to itself. PyTorch's OpenMP threads meet at a barrier after every parallel
operation; a thread that has to share its core with another job arrives late, and the others,
by default, spin at the barrier while they wait, burning the very cores the late thread needs.
This benchmark measures the C2FNAS-Panc training step of the Hippocampus plan (width 0.25,
48 x 64 x 48, batch 2, fp32) in a fresh process per setting (the wait policy is read when the
OpenMP runtime loads):

- ``threads``: all the cores the process may use, or one;
- ``wait``: OpenMP's default (``OMP_WAIT_POLICY`` unset: spin, then sleep) or ``PASSIVE``
  (sleep at once; what ``c2fnas`` sets unless the environment chooses);

each alone and beside one competing process that keeps one core busy (``--competitors``).
The table gives the median step and its ratio to the same setting alone, and to the best
setting alone.

Usage::

    python benchmarks/shared_cpu.py                  # about 4 minutes on 2 cores
    python benchmarks/shared_cpu.py --competitors 2 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
WAITS = ("default", "passive")
BUSY_LOOP = "while True: pass"


def child(args: argparse.Namespace) -> None:
    """One setting, in this process: print the step times as JSON."""
    import torch

    from c2fnas.accel.process import keep_freed_memory
    from c2fnas.planning.measure import measure_step
    from c2fnas.space import Architecture

    keep_freed_memory()
    torch.set_num_threads(args.threads)
    architecture = Architecture.load(REPO / "architectures" / "c2fnas-panc.json")
    architecture = architecture.with_width(args.width)
    measured = measure_step(
        architecture, 1, 3, tuple(args.patch), args.batch, 1, "fp32", torch.device("cpu"),
        repeats=args.steps,
    )  # fmt: skip
    print(json.dumps({"step": measured.step_seconds, "threads": torch.get_num_threads()}))


def measure(args: argparse.Namespace, threads: int, wait: str, competitors: int) -> dict[str, Any]:
    """Run one setting in a fresh process, beside ``competitors`` busy processes."""
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY",)}
    environment.pop("OMP_NUM_THREADS", None)
    if wait == "passive":
        environment["OMP_WAIT_POLICY"] = "PASSIVE"
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(competitors)]
    try:
        command = [sys.executable, __file__, "--child", "--threads", str(threads),
                   "--steps", str(args.steps), "--width", str(args.width),
                   "--batch", str(args.batch), "--patch", *map(str, args.patch)]  # fmt: skip
        started = time.perf_counter()
        output = subprocess.run(command, env=environment, capture_output=True, text=True)
        if output.returncode:
            raise SystemExit(f"the measuring process failed:\n{output.stderr[-2000:]}")
        seconds = time.perf_counter() - started
    finally:
        for process in busy:
            process.kill()
            process.wait()
    result = json.loads(output.stdout.strip().splitlines()[-1])
    return {
        "threads": threads,
        "wait": wait,
        "competitors": competitors,
        "step_seconds": result["step"],  # the median of --steps
        "process_seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting")
    parser.add_argument("--competitors", type=int, default=1, help="busy processes beside it")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 64, 48])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "shared_cpu.json"
    )
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return

    from rich.console import Console
    from rich.table import Table

    import machine

    cores = len(os.sched_getaffinity(0))
    rows = []
    for threads in sorted({cores, 1}, reverse=True):
        for wait in WAITS:
            for competitors in (0, args.competitors):
                row = measure(args, threads, wait, competitors)
                print(json.dumps(row), flush=True)
                rows.append(row)
    alone = {(r["threads"], r["wait"]): r["step_seconds"] for r in rows if not r["competitors"]}
    best_alone = min(alone.values())
    for row in rows:
        row["vs_alone"] = row["step_seconds"] / alone[row["threads"], row["wait"]]
        row["vs_best_alone"] = row["step_seconds"] / best_alone
    report = {
        "network": f"c2fnas-panc x{args.width:g}",
        "patch": args.patch,
        "batch": args.batch,
        "precision": "fp32",
        "competitor": f"{args.competitors} process(es) running `{BUSY_LOOP}`",
        "machine": machine.describe(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"training step, shared CPU ({report['machine']['cpu']}, {cores} cores)")
    for column in ("threads", "OpenMP wait", "competing jobs", "step (s)", "x alone",
                   "x best alone"):  # fmt: skip
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["threads"]), row["wait"], str(row["competitors"]),
            f"{row['step_seconds']:.3f}", f"{row['vs_alone']:.2f}", f"{row['vs_best_alone']:.2f}",
        )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
