"""Whole-volume prediction time, split into network compute and everything else.

Runs ``c2fnas.inference.predict.predict_case`` (the code behind ``c2fnas predict``) on a real
Hippocampus image and on a synthetic 128x128x96 volume, timing the network's forward passes
apart from reading and preprocessing, window aggregation (sliding-window bookkeeping, softmax,
blending), and restoring + writing the label. Target: everything else under 20% of the total.

Then the time per case of the whole ``predict_case`` with and without test-time mirroring
(8 passes per window), and with ONNX Runtime (fp32, CPU, the network exported by
``c2fnas export --onnx``) against PyTorch (fp32 and the resolved precision), on the same images.

    .venv/bin/python benchmarks/inference.py --width 1.0 --patch 96 --stride 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from c2fnas.accel.precision import resolve_precision
from c2fnas.accel.process import keep_freed_memory
from c2fnas.accel.swap import accelerate
from c2fnas.data.geometry import CaseGeometry
from c2fnas.data.loader import FLIP_AXES
from c2fnas.data.preprocess import ChannelNormalization, Plan
from c2fnas.files.model_folder import write_model
from c2fnas.inference import predict as predict_module
from c2fnas.inference.onnx_engine import OnnxNetwork, export_onnx
from c2fnas.inference.predict import LoadedModel, predict_case
from c2fnas.nn import C2FNet
from c2fnas.space import Architecture

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
RESULTS = REPO / "benchmarks" / "results" / "inference.json"
TIMED = ("load_images", "preprocess_arrays", "predict_probabilities", "write_like")
"""The functions ``predict_case`` calls, by their names in ``c2fnas.inference.predict``; the
inverse of preprocessing (``CaseGeometry.restore``) is timed on its class."""


@contextlib.contextmanager
def timed_steps(network_seconds: list[float]) -> Iterator[dict[str, float]]:
    """Wrap the steps ``predict_case`` calls so that each one's wall time is summed."""
    totals: dict[str, float] = defaultdict(float)
    originals = {name: getattr(predict_module, name) for name in TIMED}

    def wrap(name: str, function: Callable[..., object]) -> Callable[..., object]:
        def timed(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - start

        return timed

    for name, function in originals.items():
        setattr(predict_module, name, wrap(name, function))
    restore = CaseGeometry.restore
    CaseGeometry.restore = wrap("restore", restore)  # type: ignore[method-assign]
    try:
        yield totals
    finally:
        for name, function in originals.items():
            setattr(predict_module, name, function)
        CaseGeometry.restore = restore  # type: ignore[method-assign]


class TimedNetwork:
    """The network as ``predict_case`` sees it, summing the seconds spent in forward passes."""

    def __init__(self, network: torch.nn.Module, seconds: list[float]) -> None:
        self.network, self.seconds = network, seconds

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        output = self.network(x)
        self.seconds.append(time.perf_counter() - start)
        return output


def synthetic_volume(path: Path, shape: tuple[int, int, int]) -> Path:
    rng = np.random.default_rng(0)
    data = rng.normal(100, 20, shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), path)
    return path


def measure(image: Path, model: LoadedModel, stride: int, precision: str, out: Path) -> dict:
    seconds: list[float] = []
    timed_model = LoadedModel(TimedNetwork(model.network, seconds), model.plan, model.patch)
    predict_case(image, [model], out / "warmup.nii.gz", "vote", stride, precision)  # warm-up
    with timed_steps(seconds) as steps:
        start = time.perf_counter()
        predict_case(image, [timed_model], out / image.name, "vote", stride, precision)
        total = time.perf_counter() - start
    network = sum(seconds)
    aggregation = steps["predict_probabilities"] - network
    other = total - network
    return {
        "image": image.name,
        "shape": list(nib.load(image).shape),
        "windows_batches": len(seconds),
        "total_s": total,
        "network_s": network,
        "other_s": other,
        "other_fraction": other / total,
        "read_preprocess_s": steps["load_images"] + steps["preprocess_arrays"],
        "window_aggregation_s": aggregation,
        "restore_write_s": steps["restore"] + steps["write_like"],
    }


def case_seconds(image: Path, model: LoadedModel, stride: int, precision: str, out: Path,
                 mirror_axes: tuple[int, ...] = ()) -> float:  # fmt: skip
    """Wall time of one ``predict_case`` call, after a warm-up call."""
    for _ in range(2):
        start = time.perf_counter()
        predict_case(image, [model], out / image.name, "vote", stride, precision,
                     mirror_axes=mirror_axes)  # fmt: skip
    return time.perf_counter() - start


def engines(images: list[Path], model: LoadedModel, architecture: Architecture, stride: int,
            precision: str, folder: Path) -> list[dict]:  # fmt: skip
    """Seconds per case: PyTorch with and without mirroring, and ONNX Runtime."""
    info = {
        "kind": "network",
        "patch": list(model.patch),
        "plan": model.plan.model_dump(mode="json"),
    }
    network = model.network
    assert isinstance(network, torch.nn.Module)
    write_model(folder / "model", network, architecture, info)
    start = time.perf_counter()
    export_onnx(folder / "model", folder / "model.onnx", None)
    export_seconds = time.perf_counter() - start
    onnx_model = LoadedModel(OnnxNetwork(folder / "model.onnx"), model.plan, model.patch)
    rows = []
    for image in images:
        row = {"image": image.name, "onnx_export_s": export_seconds}
        row["torch_s"] = case_seconds(image, model, stride, precision, folder)
        row["torch_tta_s"] = case_seconds(image, model, stride, precision, folder,
                                          FLIP_AXES)  # fmt: skip
        row["torch_fp32_s"] = case_seconds(image, model, stride, "fp32", folder)
        row["onnx_fp32_s"] = case_seconds(image, onnx_model, stride, "fp32", folder)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-engines", action="store_true", help="skip TTA and ONNX timings")
    args = parser.parse_args()
    keep_freed_memory()  # as the c2fnas command line does

    torch.manual_seed(0)
    device = torch.device("cpu")
    architecture = Architecture.load(REPO / "architectures" / "c2fnas-panc.json")
    network = accelerate(C2FNet(architecture.with_width(args.width), 1, 3)).eval()
    plan = Plan(
        spacing=(1.0, 1.0, 1.0),
        normalization=[ChannelNormalization(scheme="mr")],
        modalities={0: "MRI"},
        labels={0: "background", 1: "anterior", 2: "posterior"},
    )
    model = LoadedModel(network, plan, (args.patch,) * 3)
    precision = resolve_precision(args.precision, device)
    rows, engine_rows = [], []
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        images = [synthetic_volume(out / "volume_128x128x96.nii.gz", (128, 128, 96))]
        if (HIPPOCAMPUS / "imagesTr").is_dir():
            images.insert(0, sorted((HIPPOCAMPUS / "imagesTr").glob("*.nii.gz"))[0])
        else:
            print(f"no Hippocampus data at {HIPPOCAMPUS}: measuring the synthetic volume only")
        (out / "predictions").mkdir()
        for image in images:
            rows.append(measure(image, model, args.stride, precision, out / "predictions"))
        if not args.no_engines:
            engine_rows = engines(images, model, architecture.with_width(args.width),
                                  args.stride, precision, out / "predictions")  # fmt: skip

    print(
        f"C2FNAS-Panc width {args.width}, patch {args.patch}^3, stride {args.stride}, {precision}"
    )
    print(
        f"{'image':28s} {'shape':>14s} {'total s':>8s} {'network s':>9s} {'other s':>8s} "
        f"{'other %':>7s} {'read+prep':>9s} {'windows':>8s} {'restore+write':>13s}"
    )
    for row in rows:
        print(
            f"{row['image']:28s} {'x'.join(map(str, row['shape'])):>14s} {row['total_s']:8.2f} "
            f"{row['network_s']:9.2f} {row['other_s']:8.2f} {100 * row['other_fraction']:6.1f}% "
            f"{row['read_preprocess_s']:9.2f} {row['window_aggregation_s']:8.2f} "
            f"{row['restore_write_s']:13.2f}"
        )
    if engine_rows:
        print(f"\nseconds per case ({precision} unless marked fp32); ONNX export "
              f"{engine_rows[0]['onnx_export_s']:.0f} s")  # fmt: skip
        print(f"{'image':28s} {'torch':>8s} {'torch+TTA':>10s} {'torch fp32':>10s} "
              f"{'ONNX fp32':>10s}")  # fmt: skip
        for row in engine_rows:
            print(f"{row['image']:28s} {row['torch_s']:8.2f} {row['torch_tta_s']:10.2f} "
                  f"{row['torch_fp32_s']:10.2f} {row['onnx_fp32_s']:10.2f}")  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(
        {"settings": vars(args) | {"output": str(args.output), "precision": precision},
         "threads": torch.get_num_threads(), "rows": rows, "engines": engine_rows},
        indent=2))  # fmt: skip
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
