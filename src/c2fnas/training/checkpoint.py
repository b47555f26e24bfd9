"""Resumable training checkpoints: a model folder (``c2fnas.files.model_folder``) plus the
optimizer, RNG and loop state; loading never unpickles anything.

A *checkpoint* (``checkpoints/iter_NNNNNNN/``) is what resuming needs: the model folder's files
plus ``optimizer.safetensors`` (e.g. SGD momentum buffers), ``rng.safetensors`` (torch and numpy
generator states) and ``state.json`` (iteration, param groups, grad-scaler and Python RNG states,
history, and the SHA-256 of the two files). ``checkpoints/latest.json`` names the newest complete
one; it is replaced atomically.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from c2fnas.files.atomic import write_json_atomic
from c2fnas.files.model_folder import (
    CHECKSUMS,
    CheckpointError,
    load_weights,
    read_json,
    read_model,
    read_tensors,
    recorded_checksum,
    write_model,
    write_tensors,
)
from c2fnas.space import Architecture

HEADS = "heads.safetensors"


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """Split an optimizer's state into tensors (``state.<param>.<key>``) and JSON param groups."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            tensors[f"state.{index}.{key}"] = value
    return tensors, state_dict["param_groups"]


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[Any]
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global torch/numpy/Python generator states as tensors and JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{index}"] = state
    kind, keys, position, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    info = {"numpy": [kind, int(position), int(has_gauss), float(cached)]}
    info["python"] = _python_state(random.getstate())
    return tensors, info


def set_rng_state(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[key] for key in sorted(tensors) if key.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, position, has_gauss, cached = info["numpy"]
    keys = tensors["numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, position, has_gauss, cached))
    random.setstate(python_state_from_json(info["python"]))


def _python_state(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def python_state_from_json(data: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


def python_state_to_json(state: tuple[Any, ...]) -> list[Any]:
    return _python_state(state)


def write_checkpoint(
    checkpoints: Path,
    iteration: int,
    network: nn.Module,
    architecture: Architecture | None,
    info: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    heads: nn.Module | None = None,
) -> Path:
    """Write ``iter_NNNNNNN/`` complete, then point ``latest.json`` at it and drop older ones.

    ``heads``: modules trained beside the network but not part of the model (deep
    supervision's), written to ``heads.safetensors``.
    """
    checkpoints.mkdir(parents=True, exist_ok=True)
    folder = checkpoints / f"iter_{iteration:07d}"
    write_model(folder, network, architecture, info)
    tensors, groups = optimizer_state(optimizer)
    rng_tensors, rng_info = rng_state()
    checksums = {
        "optimizer.safetensors": write_tensors(folder / "optimizer.safetensors", tensors),
        "rng.safetensors": write_tensors(folder / "rng.safetensors", rng_tensors),
    }
    if heads is not None:
        checksums[HEADS] = write_tensors(folder / HEADS, heads.state_dict())
    write_json_atomic(
        folder / "state.json",
        {**state, "iteration": iteration, "param_groups": groups, "rng": rng_info,
         CHECKSUMS: checksums},
    )  # fmt: skip
    write_json_atomic(
        checkpoints / "latest.json", {"checkpoint": folder.name, "iteration": iteration}
    )
    for old in checkpoints.glob("iter_*"):
        if old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(checkpoints: Path) -> Path | None:
    pointer = checkpoints / "latest.json"
    if not pointer.is_file():
        return None
    folder = checkpoints / read_json(pointer)["checkpoint"]
    if not (folder / "state.json").is_file():
        raise CheckpointError(f"{pointer}: names {folder.name}, which is incomplete")
    return folder


def read_checkpoint(
    folder: Path,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    heads: nn.Module | None = None,
) -> dict[str, Any]:
    """Load weights, optimizer and global RNG states (and ``heads``' weights) in place; return
    ``state.json``."""
    architecture, weights, _ = read_model(folder)
    load_weights(network, weights, folder, found=architecture)
    state: dict[str, Any] = read_json(folder / "state.json")
    optimizer_tensors, rng_tensors = (
        read_tensors(folder / name, recorded_checksum(state, name))
        for name in ("optimizer.safetensors", "rng.safetensors")
    )
    if heads is not None:
        if HEADS not in state.get(CHECKSUMS, {}):
            raise CheckpointError(
                f"{folder}: has no {HEADS}; it was trained without deep supervision"
            )
        heads.load_state_dict(read_tensors(folder / HEADS, recorded_checksum(state, HEADS)))
    load_optimizer_state(optimizer, optimizer_tensors, state["param_groups"])
    set_rng_state(rng_tensors, state["rng"])
    return state
