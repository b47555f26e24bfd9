"""Checkpoints and model folders as safetensors + JSON; loading never unpickles anything.

A *model folder* (``best/``, ``last/``) is what prediction needs::

    architecture.json   the Architecture
    model.safetensors   the network's weights
    model.json          in/out channels, patch, stride, iteration, validation Dice, kind

A *checkpoint* (``checkpoints/iter_NNNNNNN/``) is what resuming needs: the model folder's files
plus ``optimizer.safetensors`` (e.g. SGD momentum buffers), ``rng.safetensors`` (torch and numpy
generator states) and ``state.json`` (iteration, param groups, grad-scaler and Python RNG states,
history). ``checkpoints/latest.json`` names the newest complete one; it is replaced atomically.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from c2fnas.space import Architecture

MODEL_FILES = ("architecture.json", "model.safetensors", "model.json")


class CheckpointError(ValueError):
    """A model folder or checkpoint is missing or unreadable; the message names the path."""


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: cannot read: {error}") from None


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors needs contiguous CPU tensors without shared storage.
    return {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}


def write_model(
    folder: Path, network: nn.Module, architecture: Architecture | None, info: dict[str, Any]
) -> None:
    """Write a model folder; the previous one is replaced only once the new one is complete.

    ``architecture`` is None only for networks from outside the search space (benchmarks); such
    a folder has no ``architecture.json`` and cannot be used by ``c2fnas predict``.
    """
    temporary = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    if architecture is not None:
        architecture.save(temporary / "architecture.json")
    save_file(_tensors(network.state_dict()), str(temporary / "model.safetensors"))
    write_json(temporary / "model.json", info)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(temporary, folder)
    shutil.rmtree(old, ignore_errors=True)


def read_model(folder: Path) -> tuple[Architecture, dict[str, torch.Tensor], dict[str, Any]]:
    """Architecture, weights and info of a model folder."""
    for name in MODEL_FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: not a model folder (missing {name})")
    architecture = Architecture.load(folder / "architecture.json")
    weights = load_file(str(folder / "model.safetensors"))
    return architecture, weights, read_json(folder / "model.json")


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
) -> Path:
    """Write ``iter_NNNNNNN/`` complete, then point ``latest.json`` at it and drop older ones."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    folder = checkpoints / f"iter_{iteration:07d}"
    write_model(folder, network, architecture, info)
    tensors, groups = optimizer_state(optimizer)
    save_file(_tensors(tensors), str(folder / "optimizer.safetensors"))
    rng_tensors, rng_info = rng_state()
    save_file(_tensors(rng_tensors), str(folder / "rng.safetensors"))
    write_json(
        folder / "state.json",
        {**state, "iteration": iteration, "param_groups": groups, "rng": rng_info},
    )
    write_json(checkpoints / "latest.json", {"checkpoint": folder.name, "iteration": iteration})
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
    folder: Path, network: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load weights, optimizer and global RNG states in place; return ``state.json``."""
    _, weights, _ = read_model(folder)
    network.load_state_dict(weights)
    state: dict[str, Any] = read_json(folder / "state.json")
    load_optimizer_state(
        optimizer, load_file(str(folder / "optimizer.safetensors")), state["param_groups"]
    )
    set_rng_state(load_file(str(folder / "rng.safetensors")), state["rng"])
    return state
