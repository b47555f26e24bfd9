"""A training step alone and beside a competing CPU job, per thread count and OpenMP wait policy.

On a shared machine (a workstation, a batch node with other jobs) a training process does not
have every core to itself. PyTorch's OpenMP threads meet at a barrier after every parallel
operation; a thread that has to share its core with another job arrives late, and the others,
by default, spin at the barrier while they wait, burning the very cores the late thread needs.
This benchmark measures the C2FNAS-Panc training step of the Hippocampus plan (width 0.25,
48 x 64 x 48, batch 2) in the precision ``c2fnas train`` picks on this CPU (bf16 where it has
native bf16, fp32 elsewhere; ``--precision``), in a fresh process per setting (the wait policy
is read when the OpenMP runtime loads):

- ``threads``: all the cores the process may use, or one;
- ``mode``: OpenMP's default waiting (spin, then sleep), ``passive`` (sleep at once), or the
  default with c2fnas's ``ThreadGovernor``, which ``c2fnas train`` runs (see ``MODES``);

each alone and beside one competing process that keeps one core busy (``--competitors``).
The table gives the median step and its ratio to the same setting alone, and to the best
setting alone.

Usage::

    python benchmarks/shared_cpu.py                  # about 5 minutes on 2 cores
    python benchmarks/shared_cpu.py --competitors 2 --steps 6
    python benchmarks/shared_cpu.py --rounds 3       # on a machine whose speed drifts
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
MODES = ("default", "passive", "governed")
"""How the threads wait and adapt: the OpenMP runtime's default; ``passive``
(``OMP_WAIT_POLICY=PASSIVE``: sleep at once); ``spin:N`` (``GOMP_SPINCOUNT=N``: spin N rounds,
then sleep); ``governed``: the default, with c2fnas's ``ThreadGovernor`` fitting the threads to
the cores other jobs leave free, as ``c2fnas train`` runs."""
GOVERNOR_SECONDS = 5.0  # c2fnas checks every 10 s; shorter here to keep the benchmark short
BUSY_LOOP = "while True: pass"


def child(args: argparse.Namespace) -> None:
    """One setting, in this process: print the median step time and the threads at the end."""
    import torch

    from c2fnas.accel.process import ThreadGovernor, keep_freed_memory
    from c2fnas.costs.measure import training_step
    from c2fnas.space import Architecture

    keep_freed_memory()
    torch.set_num_threads(args.threads)
    architecture = Architecture.load(REPO / "architectures" / "c2fnas-panc.json")
    architecture = architecture.with_width(args.width)
    network, step = training_step(
        architecture, 1, 3, tuple(args.patch), args.batch, args.precision, torch.device("cpu")
    )
    network.train()
    governor = ThreadGovernor(every=GOVERNOR_SECONDS) if args.governed else None
    started = time.perf_counter()
    while True:  # warm-up; with the governor, until it has looked at the load twice
        step()
        if governor is not None:
            governor.tick()
        if time.perf_counter() - started > (2.5 * GOVERNOR_SECONDS if governor else 0):
            break
    times = []
    for _ in range(args.steps):
        if governor is not None:
            governor.tick()
        times.append(step())
    median = sorted(times)[len(times) // 2]
    print(json.dumps({"step": median, "threads": torch.get_num_threads()}))


def measure(args: argparse.Namespace, threads: int, mode: str, competitors: int) -> dict[str, Any]:
    """Run one setting in a fresh process, beside ``competitors`` busy processes."""
    unset = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    if mode == "passive":
        environment["OMP_WAIT_POLICY"] = "PASSIVE"
    elif mode.startswith("spin:"):
        environment["GOMP_SPINCOUNT"] = mode.removeprefix("spin:")
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(competitors)]
    try:
        command = [sys.executable, __file__, "--child", "--threads", str(threads),
                   "--steps", str(args.steps), "--width", str(args.width),
                   "--batch", str(args.batch), "--patch", *map(str, args.patch),
                   "--precision", args.precision,
                   *(["--governed"] if mode == "governed" else [])]  # fmt: skip
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
        "mode": mode,
        "competitors": competitors,
        "step_seconds": result["step"],  # the median of --steps
        "threads_at_end": result["threads"],
        "process_seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="measure every setting this many times, in turns; rows keep the median round",
    )  # fmt: skip
    parser.add_argument("--competitors", type=int, default=1, help="busy processes beside it")
    parser.add_argument("--modes", nargs="+", default=list(MODES), help="see MODES; spin:N too")
    parser.add_argument("--thread-counts", type=int, nargs="+", help="default: all cores, 1")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 64, 48])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "bf16"),
        help="auto: what `c2fnas train` takes here (bf16 on CPUs with native bf16, else fp32)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--governed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "shared_cpu.json"
    )
    args = parser.parse_args(argv)
    if args.precision == "auto":
        import torch

        from c2fnas.accel.precision import resolve_precision

        args.precision = resolve_precision("auto", torch.device("cpu"))
    if args.child:
        child(args)
        return

    from rich.console import Console
    from rich.table import Table

    import machine

    cores = len(os.sched_getaffinity(0))
    settings = [
        (threads, mode, competitors)
        for threads in args.thread_counts or sorted({cores, 1}, reverse=True)
        for mode in args.modes
        for competitors in (0, args.competitors)
    ]
    runs: dict[tuple[int, str, int], list[dict[str, Any]]] = {setting: [] for setting in settings}
    for _ in range(args.rounds):  # rounds of every setting, so a slow spell hits them all
        for setting in settings:
            run = measure(args, *setting)
            print(json.dumps(run), flush=True)
            runs[setting].append(run)
    rows = []
    for measured in runs.values():
        row = sorted(measured, key=lambda run: run["step_seconds"])[len(measured) // 2]
        rows.append({**row, "rounds_step_seconds": [run["step_seconds"] for run in measured]})
    alone = {(r["threads"], r["mode"]): r["step_seconds"] for r in rows if not r["competitors"]}
    best_alone = min(alone.values())
    for row in rows:
        row["vs_alone"] = row["step_seconds"] / alone[row["threads"], row["mode"]]
        row["vs_best_alone"] = row["step_seconds"] / best_alone
    report = {
        "network": f"c2fnas-panc x{args.width:g}",
        "patch": args.patch,
        "batch": args.batch,
        "precision": args.precision,
        "competitor": f"{args.competitors} process(es) running `{BUSY_LOOP}`",
        "machine": machine.describe(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    cpu = report["machine"]["cpu"]
    title = f"training step ({args.precision}), shared CPU ({cpu}, {cores} cores)"
    table = Table(title=title)
    for column in ("threads", "mode", "competing jobs", "threads at end", "step (s)",
                   "x alone", "x best alone"):  # fmt: skip
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["threads"]), row["mode"], str(row["competitors"]), str(row["threads_at_end"]),
            f"{row['step_seconds']:.3f}", f"{row['vs_alone']:.2f}", f"{row['vs_best_alone']:.2f}",
        )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
