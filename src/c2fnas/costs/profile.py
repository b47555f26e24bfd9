"""Parameters, multiply-accumulates and activation memory of any network (its timing is
``costs.measure``'s, as training runs it).

MACs follow the paper's "FLOPs" convention (Table 2): the multiply-accumulates of convolutions
(and transposed convolutions) for one sample; norms, activations, pooling and interpolation are
not counted. Shapes are traced on PyTorch's ``meta`` device, so counting a 96^3 network costs no
compute and no memory.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from c2fnas.costs.measure import measured_speed
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


def cost_dict(cost: Cost) -> dict[str, int]:
    return asdict(cost)


def profile_architecture(
    architecture: object,
    patch: tuple[int, int, int],
    in_channels: int,
    num_classes: int,
    batch: int = 1,
    timing: bool = False,
) -> dict[str, object]:
    """What ``c2fnas profile`` counts (parameters, MACs, activation memory), as a JSON-ready
    dict; with ``timing``, also the measured step and window (``costs.measure.measured_speed``:
    the step ``c2fnas plan`` measures)."""
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
        report.update(measured_speed(architecture, patch, in_channels, num_classes, batch))
    return report
