"""Checkpoints and model folders as safetensors + JSON; loading never unpickles anything.

A *model folder* (``best/``, ``last/``) is what prediction needs::

    architecture.json   the Architecture
    model.safetensors   the network's weights
    model.json          in/out channels, patch, stride, iteration, validation Dice, kind,
                        and ``sha256``: {"model.safetensors": its SHA-256}

A *checkpoint* (``checkpoints/iter_NNNNNNN/``) is what resuming needs: the model folder's files
plus ``optimizer.safetensors`` (e.g. SGD momentum buffers), ``rng.safetensors`` (torch and numpy
generator states) and ``state.json`` (iteration, param groups, grad-scaler and Python RNG states,
history, and the SHA-256 of the two files). ``checkpoints/latest.json`` names the newest complete
one; it is replaced atomically.

Every safetensors file is verified against its recorded SHA-256 when read, so flipped bytes are
an error naming the file rather than silently different weights. Folders written before the
checksums were recorded still load, unverified.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from c2fnas.data.atomic import write_bytes_atomic, write_json_atomic
from c2fnas.space import Architecture

MODEL_FILES = ("architecture.json", "model.safetensors", "model.json")
CHECKSUMS = "sha256"
"""The key, in ``model.json`` and ``state.json``, of ``{file name: SHA-256}``."""


class CheckpointError(ValueError):
    """A model folder or checkpoint is missing or unreadable; the message names the path."""


class JsonRecord(dict[str, Any]):
    """A JSON object read from ``path``: a missing key is a ``CheckpointError`` naming both."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.path = path

    def __missing__(self, key: str) -> Any:
        raise CheckpointError(f"{self.path}: no {key!r} entry; the file is damaged or incomplete")


def read_json(path: Path) -> JsonRecord:
    """The JSON object in ``path``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        raise CheckpointError(f"{path}: cannot read: {error}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return JsonRecord(path, data)


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write ``tensors`` as a safetensors file, atomically; returns its SHA-256 to record."""
    # safetensors needs contiguous CPU tensors without shared storage.
    payload = save(
        {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}
    )
    write_bytes_atomic(path, payload)
    return hashlib.sha256(payload).hexdigest()


def read_tensors(path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, verified against ``sha256`` unless it is None."""
    try:
        payload = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read: {error}") from None
    if sha256 is not None and hashlib.sha256(payload).hexdigest() != sha256:
        raise CheckpointError(
            f"{path}: damaged; its SHA-256 differs from the one recorded when it was written"
        )
    try:
        return load(payload)
    except SafetensorError as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None


def _recorded_checksum(record: dict[str, Any], name: str) -> str | None:
    checksums = record.get(CHECKSUMS)
    return checksums.get(name) if isinstance(checksums, dict) else None


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
    digest = write_tensors(temporary / "model.safetensors", network.state_dict())
    write_json_atomic(temporary / "model.json", {**info, CHECKSUMS: {"model.safetensors": digest}})
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
    info = read_json(folder / "model.json")
    weights = read_tensors(
        folder / "model.safetensors", _recorded_checksum(info, "model.safetensors")
    )
    return architecture, weights, info


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
    rng_tensors, rng_info = rng_state()
    checksums = {
        "optimizer.safetensors": write_tensors(folder / "optimizer.safetensors", tensors),
        "rng.safetensors": write_tensors(folder / "rng.safetensors", rng_tensors),
    }
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
    folder: Path, network: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load weights, optimizer and global RNG states in place; return ``state.json``."""
    _, weights, _ = read_model(folder)
    network.load_state_dict(weights)
    state: dict[str, Any] = read_json(folder / "state.json")
    optimizer_tensors, rng_tensors = (
        read_tensors(folder / name, _recorded_checksum(state, name))
        for name in ("optimizer.safetensors", "rng.safetensors")
    )
    load_optimizer_state(optimizer, optimizer_tensors, state["param_groups"])
    set_rng_state(rng_tensors, state["rng"])
    return state
