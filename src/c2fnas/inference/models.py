"""Networks ready to predict, from model folders; what every engine hands the sliding window.

Each model folder (``best/`` or ``last/`` of a training run, or the training folder itself,
meaning its ``best/``) carries its architecture, weights and preprocessing plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from c2fnas.accel.swap import accelerate
from c2fnas.data.preprocess import Plan
from c2fnas.files.model_folder import CheckpointError, load_weights, model_folder, read_model
from c2fnas.nn import C2FNet
from c2fnas.space import Architecture

Engine = Literal["torch", "onnx"]


@dataclass
class LoadedModel:
    """A network ready to predict (eval mode, on its device) and what it expects."""

    network: Callable[[torch.Tensor], torch.Tensor]
    plan: Plan
    patch: tuple[int, int, int]
    folder: Path | None = None
    engine: Engine = "torch"
    """``onnx``: an ONNX Runtime session, which runs fp32 only."""


@dataclass(frozen=True)
class NetworkRecord:
    """What a model folder holds, checked: the paper-form network with its weights."""

    network: C2FNet
    plan: Plan
    patch: tuple[int, int, int]
    info: dict[str, Any]


def read_network(path: str | Path) -> tuple[Path, NetworkRecord]:
    """The model folder at ``path`` and its network in the paper form (not accelerated).

    Raises:
        CheckpointError: naming the folder, when it holds no network, no plan, or weights that
            do not fit the architecture. Never unpickles.
    """
    folder = model_folder(path)
    architecture, weights, info = read_model(folder)
    return folder, network_record(folder, architecture, weights, info)


def network_record(
    folder: Path, architecture: Architecture, weights: dict[str, torch.Tensor], info: dict[str, Any]
) -> NetworkRecord:
    if info.get("kind") != "network":
        raise CheckpointError(
            f"{folder}: holds a {info.get('kind')}, not a network to predict with"
        )
    if "plan" not in info:
        raise CheckpointError(f"{folder}/model.json: no preprocessing plan recorded")
    plan = Plan.model_validate(info["plan"])
    network = C2FNet(architecture, plan.in_channels, plan.num_classes)
    load_weights(network, weights, folder)
    patch = tuple(int(side) for side in info["patch"])
    return NetworkRecord(network.eval(), plan, patch, dict(info))  # type: ignore[arg-type]


def load_model(path: str | Path, device: torch.device, accelerated: bool = False) -> LoadedModel:
    """Build the network of a model folder with its weights; never unpickles.

    ``accelerated``: swap the fast layers in (``accelerate``), as the entry point decides.
    """
    folder, record = read_network(path)
    network = accelerate(record.network) if accelerated else record.network
    network = network.to(device).eval()
    return LoadedModel(network, record.plan, record.patch, folder)
