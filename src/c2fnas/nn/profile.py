"""Parameters, multiply-accumulates, activation memory and timing of any network.

MACs follow the paper's "FLOPs" convention (Table 2): the multiply-accumulates of convolutions
(and transposed convolutions) for one sample; norms, activations, pooling and interpolation are
not counted. Shapes are traced on PyTorch's ``meta`` device, so counting a 96^3 network costs no
compute and no memory.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from c2fnas.nn.network import C2FNet, check_input_size
from c2fnas.space import Architecture


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int
    activation_bytes: int
    """Sum of every leaf module's output for the batch: what autograd keeps for backward."""


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    if isinstance(module, nn.ConvTranspose3d):
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return inputs[0][0].numel() * per_input
    if isinstance(module, (nn.Conv3d, nn.Conv2d, nn.Conv1d)):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return output[0].numel() * per_output
    if isinstance(module, nn.Linear):
        return output[0].numel() * module.in_features
    return 0


def estimate_cost(
    model: nn.Module,
    input_shape: tuple[int, ...],
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    bytes_per_element: int = 4,
) -> Cost:
    """Trace ``model`` on a meta tensor of ``input_shape`` (batch first) and count its cost.

    Args:
        model: any module; it is copied to the meta device, the original is untouched.
        input_shape: ``(batch, channels, D, H, W)``; MACs are per sample, memory for the batch.
        forward: how to call the model (default ``model(x)``), e.g. to pass a supernet path.
        bytes_per_element: 4 for fp32 activations, 2 for bf16/fp16.
    """
    meta_model = copy.deepcopy(model).to("meta")
    totals = {"macs": 0, "activations": 0}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        totals["macs"] += _conv_macs(module, inputs, output)
        if isinstance(output, torch.Tensor):
            totals["activations"] += output.numel()

    handles = [
        module.register_forward_hook(hook)
        for module in meta_model.modules()
        if not list(module.children())
    ]
    try:
        x = torch.empty(input_shape, device="meta")
        with torch.no_grad():
            forward(meta_model, x) if forward else meta_model(x)
    finally:
        for handle in handles:
            handle.remove()
    return Cost(
        params=count_params(model),
        macs=totals["macs"],
        activation_bytes=totals["activations"] * bytes_per_element,
    )


@dataclass(frozen=True)
class Timing:
    forward_seconds: float
    train_step_seconds: float


def measure_time(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device, repeats: int = 3
) -> Timing:
    """Median wall time of an inference forward and of a training step (forward, backward, SGD)."""
    model = copy.deepcopy(model).to(device)
    x = torch.randn(input_shape, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(step: Callable[[], None]) -> float:
        step()  # warm-up
        times = []
        for _ in range(repeats):
            synchronize()
            start = time.perf_counter()
            step()
            synchronize()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    def forward_step() -> None:
        with torch.no_grad():
            model.eval()(x)

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        model(x).float().square().mean().backward()
        optimizer.step()

    return Timing(forward_seconds=timed(forward_step), train_step_seconds=timed(train_step))


def cost_dict(cost: Cost) -> dict[str, int]:
    return asdict(cost)


def profile_architecture(
    architecture: object,
    patch: tuple[int, int, int],
    in_channels: int,
    num_classes: int,
    batch: int = 1,
    device: torch.device | None = None,
    timing: bool = True,
) -> dict[str, object]:
    """Everything ``c2fnas profile`` reports, as a JSON-ready dict."""
    assert isinstance(architecture, Architecture)
    check_input_size((batch, in_channels, *patch))
    model = C2FNet(architecture, in_channels, num_classes)
    cost = estimate_cost(model, (batch, in_channels, *patch))
    report: dict[str, object] = {
        "architecture": architecture.to_dict(),
        "patch": list(patch),
        "in_channels": in_channels,
        "classes": num_classes,
        "batch": batch,
        "params": cost.params,
        "macs": cost.macs,
        "activation_bytes_fp32": cost.activation_bytes,
    }
    if timing:
        device = device or torch.device("cpu")
        measured = measure_time(model, (batch, in_channels, *patch), device)
        report.update(
            device=str(device),
            forward_seconds=measured.forward_seconds,
            train_step_seconds=measured.train_step_seconds,
        )
    return report
