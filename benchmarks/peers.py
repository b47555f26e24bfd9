"""The peer networks our benchmarks compare against, built the same way everywhere."""

from __future__ import annotations

from pathlib import Path

from monai.networks.nets import BasicUNet, DynUNet
from torch import nn

from c2fnas.accel.swap import accelerate
from c2fnas.nn import C2FNet
from c2fnas.space import Architecture
from c2fnas.training.config import RunConfig, load_config

PANC = Path(__file__).resolve().parents[1] / "architectures" / "c2fnas-panc.json"


def c2fnas_panc(
    in_channels: int, num_classes: int, width: float = 1.0, *, accelerated: bool = True
) -> nn.Module:
    """C2FNAS-Panc as c2fnas trains it (``accelerate``d), or in its plain paper form."""
    network = C2FNet(Architecture.load(PANC).with_width(width), in_channels, num_classes)
    return accelerate(network) if accelerated else network


def dynunet(in_channels: int, num_classes: int, depth: int = 5, base: int = 32) -> nn.Module:
    """MONAI's DynUNet configured as nnU-Net does for an isotropic patch: 3x3x3 kernels, stride 2
    below the first stage, filters ``base`` (nnU-Net: 32), twice as many per stage, capped at
    320. A smaller ``base`` gives a peer of matched compute."""
    strides = [1] + [2] * (depth - 1)
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=num_classes,
        kernel_size=[3] * depth,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=[min(base * 2**level, 320) for level in range(depth)],
        res_block=False,
    )


def basicunet(in_channels: int, num_classes: int) -> nn.Module:
    return BasicUNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes)


PEERS = {"c2fnas-panc": c2fnas_panc, "dynunet": dynunet, "basicunet": basicunet}


def short_search_config(iterations: int, width: float, **search: object) -> RunConfig:
    """The ``cpu`` preset with a search schedule of ``iterations`` (one decay at 70%), candidates
    of ``width``, validated and checkpointed once at the end, plus any other search fields."""
    data = load_config("cpu").model_dump(mode="json")
    data["search"].update(
        iterations=iterations, milestones=[round(0.7 * iterations)], width=width, **search
    )
    data["training"].update(validate_every=iterations, checkpoint_every=iterations)
    return RunConfig.model_validate(data)
