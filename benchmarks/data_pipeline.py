"""Data pipeline speed on real data, next to the training speed it has to feed.

Measures, on MSD Task04 Hippocampus (200 cases):

1. ``preprocess_dataset`` of all cases into a fresh run folder with ``--workers`` processes
   (target: under 60 s on a 2-core machine), then a rerun (everything skipped);
2. patch batches per second from ``train_batches`` in this process and with worker processes;
3. training steps per second of C2FNAS-Panc (width ``--width``) at the same patch and batch size,
   bf16 autocast + channels_last_3d on a CPU (faster than fp32 there), cross-entropy loss;
4. milliseconds per batch from ``train_batches`` in this process for each augmentation
   (``paper``, ``nnunet``) at ``--augment-patch`` (48 x 64 x 48, the Hippocampus patch) and
   ``--batch``; the difference is what the nnU-Net-like transforms add. One thread when run with
   ``OMP_NUM_THREADS=1``.

The loader must outpace training: compare rows 2 and 3. Prints a table and writes JSON.

Usage::

    PYTHONPATH=src python benchmarks/data_pipeline.py [--dataset DIR] [--patch 64 64 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "Task04_Hippocampus"


def time_preprocess(dataset: Path, run_dir: Path, workers: int) -> dict[str, float]:
    from c2fnas.data.pipeline import preprocess_dataset

    start = time.perf_counter()
    summary = preprocess_dataset(dataset, run_dir, workers=workers)
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = preprocess_dataset(dataset, run_dir, workers=workers)
    rerun = time.perf_counter() - start
    return {
        "cases": len(summary.written),
        "workers": workers,
        "seconds": first,
        "rerun_seconds": rerun,
        "rerun_skipped": len(again.skipped),
    }


def time_loader(run_dir: Path, patch: list[int], batch: int, workers: int, n: int) -> float:
    """Batches per second after the first batch (which pays for worker start-up)."""
    from c2fnas.data.loader import train_batches
    from c2fnas.data.pipeline import cached_case_ids

    stream = train_batches(run_dir, cached_case_ids(run_dir), patch, batch, 0, workers=workers)
    next(stream)
    start = time.perf_counter()
    for _ in range(n):
        next(stream)
    rate = n / (time.perf_counter() - start)
    del stream
    return rate


def time_augmentation(run_dir: Path, patch: list[int], batch: int, n: int) -> dict[str, float]:
    """Milliseconds per batch in this process, by augmentation (first batch not counted)."""
    from c2fnas.data.loader import AUGMENTATIONS, train_batches
    from c2fnas.data.pipeline import cached_case_ids

    milliseconds = {}
    for name in AUGMENTATIONS:
        stream = train_batches(
            run_dir, cached_case_ids(run_dir), patch, batch, 0, augmentation=name
        )
        next(stream)
        start = time.perf_counter()
        for _ in range(n):
            next(stream)
        milliseconds[name] = (time.perf_counter() - start) / n * 1e3
    return milliseconds


def time_training(run_dir: Path, patch: list[int], batch: int, width: float, steps: int) -> float:
    """Training steps per second of C2FNAS-Panc on real batches (first step not counted)."""
    import torch

    from c2fnas.accel.swap import accelerate
    from c2fnas.data.loader import train_batches
    from c2fnas.data.pipeline import cached_case_ids
    from c2fnas.nn.network import build_network
    from c2fnas.space import Architecture

    architecture = Architecture.load(REPO / "architectures" / "c2fnas-panc.json").with_width(width)
    model = accelerate(build_network(architecture, 1, 3)).to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    batches = [
        next(train_batches(run_dir, cached_case_ids(run_dir), patch, batch, seed))
        for seed in range(2)
    ]

    def step(data: dict[str, torch.Tensor]) -> None:
        image = data["image"].to(memory_format=torch.channels_last_3d)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(image)
        loss = torch.nn.functional.cross_entropy(logits.float(), data["label"][:, 0])
        loss.backward()
        optimizer.step()

    step(batches[0])
    start = time.perf_counter()
    for index in range(steps):
        step(batches[index % 2])
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--loader-batches", type=int, default=100)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--augment-patch", type=int, nargs=3, default=[48, 64, 48])
    parser.add_argument("--augment-batches", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/data_pipeline.json")
    args = parser.parse_args()
    if not (args.dataset / "dataset.json").is_file():
        raise SystemExit(f"{args.dataset}: no dataset.json (pass --dataset)")

    load_before = os.getloadavg()[0]  # other work on the machine skews every number below
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        preprocess = time_preprocess(args.dataset, run_dir, args.workers)
        loader = {
            f"workers_{w}": time_loader(run_dir, args.patch, args.batch, w, args.loader_batches)
            for w in (0, args.workers)
        }
        train = time_training(run_dir, args.patch, args.batch, args.width, args.train_steps)
        augmentation = time_augmentation(
            run_dir, args.augment_patch, args.batch, args.augment_batches
        )
    result = {
        "dataset": str(args.dataset),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "patch": args.patch,
        "batch": args.batch,
        "preprocess": preprocess,
        "loader_batches_per_second": loader,
        "training": {"model": "c2fnas-panc", "width": args.width, "precision": "bf16 autocast"},
        "training_steps_per_second": train,
        "augmentation_ms_per_batch": {"patch": args.augment_patch, **augmentation},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _print_table(result)


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    preprocess = result["preprocess"]
    patch = "x".join(map(str, result["patch"]))
    load = result["load_average_1min"]
    load_text = f"load {load['before']:.1f} -> {load['after']:.1f}"
    table = Table(title=f"data pipeline ({result['machine']}, {load_text})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        f"preprocess {preprocess['cases']} cases, {preprocess['workers']} workers",
        f"{preprocess['seconds']:.1f} s",
    )
    table.add_row("rerun (all unchanged, skipped)", f"{preprocess['rerun_seconds']:.2f} s")
    for name, rate in result["loader_batches_per_second"].items():
        table.add_row(f"loader, {name}, batch {result['batch']} of {patch}", f"{rate:.1f} /s")
    table.add_row(
        f"training C2FNAS-Panc w{result['training']['width']}, same batch, bf16",
        f"{result['training_steps_per_second']:.3f} /s",
    )
    augmentation = dict(result["augmentation_ms_per_batch"])
    augment_patch = "x".join(map(str, augmentation.pop("patch")))
    for name, milliseconds in augmentation.items():
        table.add_row(
            f"loader, {name} augmentation, batch {result['batch']} of {augment_patch}",
            f"{milliseconds:.1f} ms",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
