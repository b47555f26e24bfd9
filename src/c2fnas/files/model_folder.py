"""Model folders: the architecture, weights and facts a trained network travels with, as
safetensors + JSON with checksums; reading never unpickles anything.

A *model folder* (``best/``, ``last/``, or a checkpoint) holds::

    architecture.json   the Architecture
    model.safetensors   the network's weights
    model.json          in/out channels, patch, stride, iteration, validation Dice, kind,
                        and ``sha256``: {"model.safetensors": its SHA-256}

Every safetensors file is verified against its recorded SHA-256 when read, so flipped bytes are
an error naming the file rather than silently different weights. Folders written before the
checksums were recorded still load, unverified, with a warning once per folder. Training writes
model folders and inference reads them, so this module sits below both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from c2fnas.files.atomic import write_bytes_atomic, write_json_atomic
from c2fnas.files.run_folder import TrainingFolder
from c2fnas.space import Architecture

log = logging.getLogger(__name__)

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
    """The tensors of a safetensors file, verified against ``sha256``; without one (a folder
    from before checksums were recorded) unverified, and the folder says so once."""
    try:
        payload = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read: {error}") from None
    if sha256 is None:
        _warn_unverified(path.parent.resolve())
    elif hashlib.sha256(payload).hexdigest() != sha256:
        raise CheckpointError(
            f"{path}: damaged; its SHA-256 differs from the one recorded when it was written"
        )
    try:
        return load(payload)
    except SafetensorError as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None


@functools.cache
def _warn_unverified(folder: Path) -> None:
    """Once per folder and process: a run loads the same folder many times (each fold, case)."""
    log.warning(
        "%s: no SHA-256 recorded for its weights ('%s' in model.json or state.json): they are "
        "loaded unverified, so damage would go unnoticed (written before c2fnas recorded "
        "checksums, or edited by hand?)",
        folder,
        CHECKSUMS,
    )


def recorded_checksum(record: dict[str, Any], name: str) -> str | None:
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
        folder / "model.safetensors", recorded_checksum(info, "model.safetensors")
    )
    return architecture, weights, info


def load_weights(
    network: nn.Module,
    weights: dict[str, torch.Tensor],
    source: Path,
    found: Architecture | None = None,
) -> None:
    """Load ``weights`` (from ``source``) into ``network``, or say in one line why they do not fit.

    PyTorch lists every tensor of another shape, 155 lines for a network of another width. With
    ``found``, the architecture the weights were saved with, a width other than the network's
    (``network.architecture``) is named as such: ``width 0.25 expected, 0.125 found``.

    Raises:
        CheckpointError: the weights do not fit, naming ``source``, the width or the first
            tensor that differs and how many do.
    """
    expected = getattr(network, "architecture", None)
    if isinstance(expected, Architecture) and found is not None and found.width != expected.width:
        raise CheckpointError(
            f"{source}: width {expected.width:g} expected, {found.width:g} found; build the "
            f"network at width {found.width:g} or use a model of width {expected.width:g}"
        )
    try:
        network.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(f"{source}: {_misfit(network.state_dict(), weights)}") from None


def _misfit(own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> str:
    """The weights' misfit in one line: the first tensor of another shape and the counts."""
    differ = [key for key in own if key in weights and own[key].shape != weights[key].shape]
    missing = len(own.keys() - weights.keys())
    unexpected = len(weights.keys() - own.keys())
    text = f"the weights do not fit the network ({len(differ)} tensor(s) of another shape"
    text += f", {missing} missing, {unexpected} unexpected)"
    if differ:
        key = differ[0]
        text += (
            f"; first {key}: {list(weights[key].shape)} in the file, {list(own[key].shape)} "
            "in the network (another width or architecture?)"
        )
    return text


def model_folder(path: str | Path) -> Path:
    """A model folder, or a training folder's ``best/``."""
    path = Path(path)
    for candidate in (path, TrainingFolder(path).best):
        if (candidate / "model.json").is_file():
            return candidate
    raise CheckpointError(f"{path}: no model here (expected model.json, or best/model.json)")
