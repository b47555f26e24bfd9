"""ONNX export of a model, and ONNX Runtime as a prediction engine.

The exported graph is the paper-form network (``c2fnas.nn``, not the accelerated one: ONNX has
no place for our C++ kernels) with dynamic batch and spatial axes, input ``image``
(B, C, X, Y, Z) float32 and output ``logits`` (B, K, X, Y, Z); every spatial side must be a
multiple of 16, as for the PyTorch network. The file's metadata (key ``c2fnas``) carries the
preprocessing plan, patch, labels and post-processing, so ``c2fnas predict --engine onnx``
runs it through the same preprocessing, sliding window and restoration as PyTorch models.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from pydantic import ValidationError

from c2fnas import __version__
from c2fnas.data.preprocess import Plan
from c2fnas.files.atomic import replacing
from c2fnas.inference.export import ModelFileError
from c2fnas.inference.models import LoadedModel, read_network
from c2fnas.inference.postprocess import Postprocessing

log = logging.getLogger(__name__)

METADATA_KEY = "c2fnas"
INPUT, OUTPUT = "image", "logits"


def export_onnx(
    model_path: str | Path, out_path: str | Path, postprocessing: Postprocessing | None
) -> Path:
    """Write the network of a model folder as an ONNX file with dynamic batch and spatial axes.

    Takes about a minute on two CPU cores (torch.export traces the network).
    """
    folder, record = read_network(model_path)
    example = torch.zeros(1, record.plan.in_channels, *record.patch)
    dynamic = torch.export.Dim.DYNAMIC
    program = torch.onnx.export(
        record.network, (example,), dynamo=True, verbose=False,
        input_names=[INPUT], output_names=[OUTPUT],
        dynamic_shapes={"x": {0: dynamic, 2: dynamic, 3: dynamic, 4: dynamic}},
    )  # fmt: skip
    assert program is not None
    program.model.metadata_props[METADATA_KEY] = json.dumps({
        "c2fnas": __version__,
        "source": str(folder),
        "plan": record.plan.model_dump(mode="json"),
        "patch": list(record.patch),
        "postprocessing": postprocessing.model_dump(mode="json") if postprocessing else None,
    })  # fmt: skip
    out_path = Path(out_path)
    with replacing(out_path) as temporary:
        program.save(temporary, external_data=False)
    return out_path


class OnnxNetwork:
    """An ONNX Runtime session called like a network: (B, C, *patch) -> (B, K, *patch) logits.

    Runs on the CPU with as many threads as PyTorch uses (``torch.get_num_threads``), so both
    engines share one thread budget; logits return on the input's device.
    """

    def __init__(self, path: Path) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        array = windows.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run([OUTPUT], {INPUT: array})
        return torch.from_numpy(logits).to(windows.device)


def load_onnx_model(path: str | Path) -> tuple[LoadedModel, Postprocessing | None]:
    """An exported ONNX file as a model for ``predict`` (ONNX Runtime, CPU, fp32).

    Raises:
        ModelFileError: not a readable ONNX file, or one that ``c2fnas export`` did not write.
    """
    path = Path(path)
    try:
        network = OnnxNetwork(path)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception kinds
        raise ModelFileError(f"{path}: not a readable ONNX file ({error})") from None
    metadata = network.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if metadata is None:
        raise ModelFileError(
            f"{path}: an ONNX file without c2fnas metadata; write one with `c2fnas export --onnx`"
        )
    try:
        facts: dict[str, Any] = json.loads(metadata)
        plan = Plan.model_validate(facts["plan"])
        patch = tuple(int(side) for side in facts["patch"])
        chosen = facts.get("postprocessing")
        postprocessing = Postprocessing.model_validate(chosen) if chosen else None
    except (ValueError, KeyError, TypeError, ValidationError) as error:
        raise ModelFileError(f"{path}: damaged c2fnas metadata ({error!r})") from None
    model = LoadedModel(network, plan, patch, path, engine="onnx")  # type: ignore[arg-type]
    return model, postprocessing
