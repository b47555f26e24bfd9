"""Training-step and inference time per patch, peak memory and time per G MAC of C2FNAS-Panc
against MONAI's DynUNet (nnU-Net's network) and BasicUNet, in fp32 and bf16 (+ channels_last_3d
on the CPU, as c2fnas trains).

Each row also gives the step's achieved TFLOP/s (6 FLOPs per forward MAC: forward, input and
weight gradients) and its fraction of the device's peak, measured in the same run as a large
matmul in the same precision; the JSON's machine block names the CPU model and the instruction
sets it has (AVX-512, AMX), or the GPU. ``--compile`` runs every network through
``c2fnas.accel.compile`` (CUDA graphs on a GPU).

Each network runs in its own process, so that its peak memory is its own, and the networks of
one (patch, precision) take their timed steps in turns, round by round; ratios are against the
other networks of the same run.

    .venv/bin/python benchmarks/throughput.py --patches 48 64 --batches 2 --repeats 9
    .venv/bin/python benchmarks/throughput.py --device cuda --patches 96 --batches 2 4 8 \
        --precisions bf16 --compile --output benchmarks/results/throughput_gpu.json
    .venv/bin/python benchmarks/throughput.py --ablate --patches 48 --repeats 7
    .venv/bin/python benchmarks/throughput.py --profile c2fnas-panc --patches 48 --compile
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402
from c2fnas.accel.compile import compiled, step_begins  # noqa: E402
from c2fnas.accel.layers import FastInstanceNorm  # noqa: E402
from c2fnas.accel.precision import memory_format  # noqa: E402
from c2fnas.accel.process import keep_freed_memory  # noqa: E402
from c2fnas.costs.profile import estimate_cost  # noqa: E402
from peers import PEERS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "throughput.json"


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _autocast(precision: str, device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _train_step(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    precision: str,
    compiled_network: bool = False,
) -> Callable[[], None]:
    """One SGD step (momentum 0.9, cross-entropy, bf16 autocast for ``bf16``) on ``x``; a
    ``compiled_network`` marks each step's start for its CUDA graphs."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    autocast = _autocast(precision, x.device)

    def step() -> None:
        if compiled_network:
            step_begins()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x).float(), target)
        loss.backward()
        optimizer.step()

    return step


def _timed(step: Callable[[], None], device: torch.device) -> float:
    """Seconds one call of ``step`` takes, the GPU's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _worker(
    connection: Connection,
    name: str,
    patch: int,
    precision: str,
    batch: int,
    threads: int,
    device: str,
    compile_network: bool = False,
) -> None:
    """Build one network and time one step per request until told to stop (``None``)."""
    keep_freed_memory()  # as c2fnas sets up its processes, for every network alike
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = PEERS[name](1, 3)
    shape = (batch, 1, patch, patch, patch)
    macs = estimate_cost(model, shape).macs
    model = model.to(device)
    x = torch.randn(shape, device=device)
    target = torch.randint(0, 3, (batch, patch, patch, patch), device=device)
    if name == "c2fnas-panc":
        layout = memory_format(torch.device(device))  # as c2fnas trains
    else:  # each peer in its fastest layout: channels_last only for bf16 on the CPU
        cpu_bf16 = precision == "bf16" and not device.startswith("cuda")
        layout = torch.channels_last_3d if cpu_bf16 else torch.contiguous_format
    model = model.to(memory_format=layout)
    x = x.to(memory_format=layout)
    on_gpu = device.startswith("cuda")
    if compile_network:
        model = compiled(model, torch.device(device))

    def infer() -> None:
        model.eval()
        with torch.no_grad(), _autocast(precision, x.device):
            model(x)

    steps = {"train": _train_step(model, x, target, precision, compile_network), "infer": infer}
    # warm-up: allocator, oneDNN / cuDNN kernels, and with --compile the compiling, which the
    # first training step's time shows
    first_step = _timed(steps["train"], x.device)
    steps["infer"]()
    connection.send((macs, first_step))
    while (label := connection.recv()) is not None:
        connection.send(_timed(steps[label], x.device))
    if on_gpu:
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    connection.send((peak_mib, torch.cuda.get_device_name() if on_gpu else "cpu"))


def measure_together(
    names: list[str], patch: int, precision: str, batch: int, args: argparse.Namespace
) -> list[dict]:
    """Time ``names`` in rounds, one step of each network in turn, each in its own process.

    Interleaving makes the ratios between networks robust to the machine slowing down for a
    while (shared hosts do): a slow spell hits every network's step of that round alike.
    """
    context = multiprocessing.get_context("spawn")
    workers = {}
    for name in names:
        parent, child = context.Pipe()
        process = context.Process(
            target=_worker,
            args=(child, name, patch, precision, batch, args.threads, args.device, args.compile),
        )
        process.start()
        workers[name] = (parent, process, parent.recv())  # waits until it is warmed up
    times: dict[tuple[str, str], list[float]] = {}
    for label in ("train", "infer"):  # all training steps first, as in training
        for round_index in range(args.repeats):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                workers[name][0].send(label)
                times.setdefault((name, label), []).append(workers[name][0].recv())
    rows = []
    for name, (connection, process, (macs, first_step)) in workers.items():
        connection.send(None)
        peak_mib, device_name = connection.recv()
        process.join()
        train, infer = _median(times[name, "train"]), _median(times[name, "infer"])
        rows.append(
            {
                "network": name,
                "device": device_name,
                "patch": patch,
                "precision": precision,
                "batch": batch,
                "compiled": args.compile,
                "macs_per_sample": macs,
                "first_train_step_s": first_step,
                "train_step_s": train,
                "infer_s": infer,
                "train_s_per_patch": train / batch,
                "infer_s_per_patch": infer / batch,
                # a training step costs about 3x the forward MACs (forward, input and weight
                # gradients), 2 FLOPs per MAC
                "train_s_per_gmac": train / (3 * macs * batch / 1e9),
                "train_tflops": 6 * macs * batch / train / 1e12,
                "peak_mib": peak_mib,
            }
        )
    return rows


def profile_step(name: str, patch: int, batch: int, compile_network: bool = False) -> None:
    """Print where the time of one bf16 + channels_last_3d training step goes, by operator;
    compiled, by generated kernel too, and how many graphs the compiler made and where it broke
    the step."""
    from torch.profiler import profile

    keep_freed_memory()
    model = PEERS[name](1, 3).to(memory_format=torch.channels_last_3d)
    if compile_network:
        # each kernel Inductor generates shows in the profile by name, not only the whole graph
        torch._inductor.config.cpp.enable_kernel_profile = True
        model = compiled(model, torch.device("cpu"))
    x = torch.randn(batch, 1, patch, patch, patch).to(memory_format=torch.channels_last_3d)
    step = _train_step(model, x, torch.randint(0, 3, (batch, patch, patch, patch)), "bf16")
    for _ in range(3 if compile_network else 2):
        step()
    if compile_network:
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        breaks = dict(torch._dynamo.utils.counters["graph_break"])
        print(f"graphs: {graphs}, graph breaks: {sum(breaks.values())} {breaks}")
    with profile() as profiler:
        step()
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def _replace_layers(
    model: torch.nn.Module, replace: Callable[[torch.nn.Module], torch.nn.Module | None]
) -> torch.nn.Module:
    """``model`` with each layer for which ``replace`` returns a module swapped for that one."""
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if (replacement := replace(child)) is not None:
                setattr(parent, child_name, replacement)
    return model


def _without_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Every instance norm replaced by an identity (or a ReLU where the norm applied one)."""

    def replace(layer: torch.nn.Module) -> torch.nn.Module | None:
        if not isinstance(layer, FastInstanceNorm):
            return None
        return torch.nn.ReLU() if layer.relu else torch.nn.Identity()

    return _replace_layers(model, replace)


def _without_relus(model: torch.nn.Module) -> torch.nn.Module:
    for module in model.modules():
        if isinstance(module, FastInstanceNorm):
            module.relu = False
    return _replace_layers(
        model, lambda layer: torch.nn.Identity() if isinstance(layer, torch.nn.ReLU) else None
    )


def _unfused_norms(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its instance norms in PyTorch's ops instead of c2fnas's C++ kernels."""
    for module in model.modules():
        if isinstance(module, FastInstanceNorm):
            module.forward = module.forward_unfused  # type: ignore[method-assign]
    return model


def ablate(patch: int, precision: str, args: argparse.Namespace) -> None:
    """Training step of C2FNAS-Panc as built, in the other memory layout, with its instance norms
    in PyTorch ops instead of the C++ kernels, without them and without its ReLUs: one process,
    the variants taking steps in turns, so the differences are what those choices cost."""
    keep_freed_memory()
    device = torch.device(args.device)
    built = memory_format(device)
    other = torch.contiguous_format if built == torch.channels_last_3d else torch.channels_last_3d
    variants = {
        "as built": (PEERS["c2fnas-panc"](1, 3), built),
        f"layout {str(other).split('.')[-1]}": (PEERS["c2fnas-panc"](1, 3), other),
        "norms in PyTorch ops": (_unfused_norms(PEERS["c2fnas-panc"](1, 3)), built),
        "paper form, not accelerated": (PEERS["c2fnas-panc"](1, 3, accelerated=False), built),
        "no instance norm": (_without_norms(PEERS["c2fnas-panc"](1, 3)), built),
        "no ReLU": (_without_relus(PEERS["c2fnas-panc"](1, 3)), built),
    }
    batch = args.batches[0]
    x = torch.randn(batch, 1, patch, patch, patch, device=device)
    target = torch.randint(0, 3, (batch, patch, patch, patch), device=device)
    steps = {}
    for label, (model, layout) in variants.items():
        model = model.to(device, memory_format=layout)
        steps[label] = _train_step(model, x.to(memory_format=layout), target, precision)
        steps[label]()  # warm-up
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(args.repeats):
        for label, step in steps.items():
            times[label].append(_timed(step, device))
    print(f"C2FNAS-Panc training step, {precision}, {patch}^3, batch {batch}, {device}")
    for label, measured in times.items():
        print(f"  {label:24s} {_median(measured):7.3f} s")


def matmul_tflops(device: torch.device, precision: str, repeats: int = 5) -> float:
    """What this device computes at best in ``precision``: a large square matmul, TFLOP/s."""
    size = 8192 if device.type == "cuda" else 2048
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = [_timed(lambda: torch.mm(a, b), device) for _ in range(repeats + 1)][1:]
    return 2 * size**3 / _median(times) / 1e12


def summarize(rows: list[dict]) -> list[dict]:
    """Per network, patch and batch: bf16 speed-ups, and time per G MAC relative to DynUNet's
    in the same precision."""
    by_key = {(r["network"], r["patch"], r["batch"], r["precision"]): r for r in rows}
    summary = []
    for name, patch, batch in dict.fromkeys((r["network"], r["patch"], r["batch"]) for r in rows):
        fp32 = by_key.get((name, patch, batch, "fp32"))
        bf16 = by_key.get((name, patch, batch, "bf16"))
        entry: dict = {"network": name, "patch": patch, "batch": batch}
        if fp32 and bf16:
            entry["bf16_train_speedup"] = fp32["train_step_s"] / bf16["train_step_s"]
            entry["bf16_infer_speedup"] = fp32["infer_s"] / bf16["infer_s"]
        for precision, row in (("fp32", fp32), ("bf16", bf16)):
            dyn = by_key.get(("dynunet", patch, batch, precision))
            if row and dyn:
                ratio = row["train_s_per_gmac"] / dyn["train_s_per_gmac"]
                entry[f"s_per_gmac_vs_dynunet_{precision}"] = ratio
            if row:
                entry[f"peak_fraction_{precision}"] = row["peak_fraction"]
        summary.append(entry)
    return summary


def print_summary(summary: list[dict]) -> None:
    print()
    print(
        f"{'network':12s} {'patch':>5s} {'batch':>5s} {'bf16 train x':>13s} {'bf16 infer x':>13s} "
        f"{'s/GMAC vs DynUNet fp32':>23s} {'bf16':>6s}"
    )
    nan = float("nan")
    for entry in summary:
        print(
            f"{entry['network']:12s} {entry['patch']:5d} {entry['batch']:5d} "
            f"{entry.get('bf16_train_speedup', nan):13.2f} "
            f"{entry.get('bf16_infer_speedup', nan):13.2f} "
            f"{entry.get('s_per_gmac_vs_dynunet_fp32', nan):23.2f} "
            f"{entry.get('s_per_gmac_vs_dynunet_bf16', nan):6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--patches", type=int, nargs="+", default=[48, 64])
    parser.add_argument("--networks", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batches", type=int, nargs="+", default=[2], help="batch sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--device", default="cpu", help="cpu, or cuda for a GPU (peak memory is then the GPU's)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile every network (CUDA graphs on a GPU: c2fnas.accel.compile)",
    )
    parser.add_argument(
        "--profile",
        choices=list(PEERS),
        help="Only profile one bf16 training step of this network (compiled with --compile).",
    )
    parser.add_argument(
        "--ablate",
        action="store_true",
        help="Only time C2FNAS-Panc against itself in the other layout, with its norms in PyTorch"
        " ops instead of the C++ kernels, without norms, without ReLUs.",
    )

    args = parser.parse_args()
    if args.profile:
        profile_step(args.profile, args.patches[-1], args.batches[0], args.compile)
        return
    if args.ablate:
        for patch in args.patches:
            for precision in args.precisions:
                ablate(patch, precision, args)
        return

    peaks = {p: matmul_tflops(torch.device(args.device), p) for p in args.precisions}
    print("matmul peak: " + ", ".join(f"{p} {t:.1f} TFLOP/s" for p, t in peaks.items()))
    rows = []
    for patch in args.patches:
        for precision in args.precisions:
            for batch in args.batches:
                for row in measure_together(args.networks, patch, precision, batch, args):
                    row["peak_fraction"] = row["train_tflops"] / peaks[precision]
                    rows.append(row)
                    print(
                        f"{row['network']:12s} {patch:3d}^3 {precision:5s} batch {batch:2d} "
                        f"train {row['train_step_s']:7.3f} s  infer {row['infer_s']:7.3f} s  "
                        f"{row['train_s_per_gmac'] * 1e3:6.2f} ms/GMAC  "
                        f"{row['train_tflops']:6.2f} TFLOP/s ({row['peak_fraction']:.0%} of "
                        f"the matmul peak)  peak {row['peak_mib']:7.0f} MiB  first step "
                        f"{row['first_train_step_s']:.1f} s",
                        flush=True,
                    )
    summary = summarize(rows)
    print_summary(summary)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "machine": machine.describe() | {"threads": args.threads},
                "peak_tflops": peaks,
                "settings": vars(args) | {"output": str(args.output)},
                "rows": rows,
                "summary": summary,
            },
            indent=2,
        )
    )
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
