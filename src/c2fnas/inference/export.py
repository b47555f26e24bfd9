"""Models that travel: one ``.zip`` file holding everything ``c2fnas predict`` needs.

Layout (JSON and safetensors only; reading never unpickles and never extracts by member name)::

    c2fnas-model.json             manifest: format, format version, c2fnas version, models
                                  (and each one's patch), preprocessing plan, labels,
                                  post-processing, and the SHA-256 of every other member
    models/<i>/architecture.json  the model folders' files, byte for byte (model.json keeps
    models/<i>/model.safetensors  its own SHA-256 of the weights)
    models/<i>/model.json

Several models (the folds) make an ensemble. The archive's bytes depend only on its contents
(fixed member dates), so exporting twice gives the same file.

Reading checks the manifest against the models it lists: the same plan, labels and patch as
each ``model.json``, post-processing only of classes the models have, and no model member it
does not list; a difference is refused naming the manifest's field and the model's file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from c2fnas import __version__
from c2fnas.files.atomic import replacing
from c2fnas.files.model_folder import CHECKSUMS, MODEL_FILES, CheckpointError, recorded_checksum
from c2fnas.inference.models import LoadedModel, load_model, read_network
from c2fnas.inference.postprocess import Postprocessing

log = logging.getLogger(__name__)

MANIFEST = "c2fnas-model.json"
FORMAT = "c2fnas-model"
FORMAT_VERSION = 1
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class ModelFileError(ValueError):
    """An exported model file that is damaged, foreign or too new; the message names it."""


def _member(archive: zipfile.ZipFile, name: str, payload: bytes) -> None:
    info = zipfile.ZipInfo(name, ZIP_DATE)
    # weights barely compress; JSON does
    info.compress_type = (
        zipfile.ZIP_STORED if name.endswith(".safetensors") else zipfile.ZIP_DEFLATED
    )
    archive.writestr(info, payload)


def export_models(
    model_paths: Sequence[str | Path], out_path: str | Path, postprocessing: Postprocessing | None
) -> Path:
    """Write the model folders (one, or the folds of an ensemble) into one ``.zip`` file.

    Every model is built once to prove it loads; all must share one preprocessing plan.

    Raises:
        CheckpointError: a model folder is missing or damaged; ValueError: plans differ.
    """
    if not model_paths:
        raise ValueError("export needs at least one model folder")
    folders, records = zip(*(read_network(path) for path in model_paths), strict=True)
    plans = {record.plan.digest() for record in records}
    if len(plans) > 1:
        raise ValueError(
            f"models {', '.join(map(str, folders))} use different preprocessing plans; "
            "export one run's folds"
        )
    members = {
        f"models/{index}/{name}": (folder / name).read_bytes()
        for index, folder in enumerate(folders)
        for name in MODEL_FILES
    }
    plan = records[0].plan
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "c2fnas": __version__,
        "models": [
            {"path": f"models/{index}", "source": str(folder), "patch": list(record.patch)}
            for index, (folder, record) in enumerate(zip(folders, records, strict=True))
        ],
        "plan": plan.model_dump(mode="json"),
        "labels": {str(value): name for value, name in plan.labels.items()},
        "postprocessing": postprocessing.model_dump(mode="json") if postprocessing else None,
        "sha256": {name: hashlib.sha256(payload).hexdigest() for name, payload in members.items()},
    }
    out_path = Path(out_path)
    with replacing(out_path) as temporary, zipfile.ZipFile(temporary, "w") as archive:
        _member(archive, MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        for name, payload in members.items():
            _member(archive, name, payload)
    return out_path


def read_manifest(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    """The checked manifest of an open model file."""
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError:
        raise ModelFileError(
            f"{path}: not a c2fnas model file (no {MANIFEST}); write one with `c2fnas export`"
        ) from None
    except ValueError as error:  # bad JSON, or a damaged member (zipfile's CRC check)
        raise ModelFileError(f"{path}: damaged ({MANIFEST}: {error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a c2fnas model file ({MANIFEST} of another format)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format version {version} written by c2fnas "
            f"{manifest.get('c2fnas')}; this c2fnas {__version__} reads up to {FORMAT_VERSION}"
        )
    return manifest


def verified_member(
    archive: zipfile.ZipFile, name: str, manifest: dict[str, Any], path: Path
) -> bytes:
    """A member's bytes, checked against the manifest's SHA-256."""
    expected = manifest.get("sha256", {}).get(name)
    try:
        payload = archive.read(name)
    except KeyError:
        raise ModelFileError(f"{path}: damaged or incomplete (no member {name})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ModelFileError(f"{path}: damaged ({name}: {error})") from None
    if expected is None or hashlib.sha256(payload).hexdigest() != expected:
        raise ModelFileError(f"{path}: damaged ({name} does not match its recorded SHA-256)")
    return payload


def load_model_file(
    path: str | Path, device: torch.device, accelerated: bool = False
) -> tuple[list[LoadedModel], Postprocessing | None]:
    """The models and post-processing of an exported ``.zip`` file, every member verified
    (``accelerated``: see ``load_model``).

    Raises:
        ModelFileError: not a zip archive, not a c2fnas model file, a newer format, or damaged
            (a checksum or a member's CRC differs, a member is missing).
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelFileError(f"{path}: not a c2fnas model file ({error})") from None
    with archive, tempfile.TemporaryDirectory(prefix="c2fnas-model-") as scratch:
        manifest = read_manifest(archive, path)
        try:
            check_members(archive, manifest, path)
            models = [
                unpacked_model(
                    archive,
                    entry["path"],
                    manifest,
                    path,
                    Path(scratch) / str(index),
                    device,
                    accelerated,
                )
                for index, entry in enumerate(manifest["models"])
            ]
            postprocessing = manifest["postprocessing"]
            chosen = Postprocessing.model_validate(postprocessing) if postprocessing else None
            check_manifest(manifest, models, chosen, path)
        except (KeyError, TypeError, ValidationError) as error:
            raise ModelFileError(f"{path}: damaged ({MANIFEST}: {error!r})") from None
    if not models:
        raise ModelFileError(f"{path}: damaged ({MANIFEST} lists no model)")
    return models, chosen


def unpacked_model(
    archive: zipfile.ZipFile,
    member: str,
    manifest: dict[str, Any],
    path: Path,
    scratch: Path,
    device: torch.device,
    accelerated: bool = False,
) -> LoadedModel:
    """One model of the archive, its files verified and laid in ``scratch`` (our own names,
    never the archive's), loaded as a model folder."""
    scratch.mkdir()
    for name in MODEL_FILES:
        payload = verified_member(archive, f"{member}/{name}", manifest, path)
        if name == "model.json":
            checked = _with_weights_checksum(payload, path, member, manifest)
            if checked is None:
                raise ModelFileError(f"{path}: damaged ({member}/model.json is not a JSON object)")
            payload = checked
        (scratch / name).write_bytes(payload)
    try:
        model = load_model(scratch, device, accelerated)
    except CheckpointError as error:
        raise ModelFileError(f"{path}: {member}: {error}") from None
    model.folder = path / member
    return model


def _with_weights_checksum(
    payload: bytes, path: Path, member: str, manifest: dict[str, Any]
) -> bytes | None:
    """``model.json`` as loaded from the scratch folder: one without the weights' SHA-256 (a
    folder from before checksums, exported as it was) gets the manifest's, which the weights
    were just verified against, and a warning naming the model file's member once; None when
    it is no JSON object."""
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if recorded_checksum(record, "model.safetensors") is not None:
        return payload
    _warn_unverified(path.resolve(), member)
    record[CHECKSUMS] = {"model.safetensors": manifest["sha256"][f"{member}/model.safetensors"]}
    return json.dumps(record).encode()


@functools.cache
def _warn_unverified(path: Path, member: str) -> None:
    """Once per model file's member and process (prediction may load the same file often)."""
    log.warning(
        "%s: %s/model.json records no SHA-256 of its weights: they were not verified when "
        "exported (a model folder from before c2fnas recorded checksums, or edited by hand?), "
        "only against this file's manifest",
        path,
        member,
    )


def check_members(archive: zipfile.ZipFile, manifest: dict[str, Any], path: Path) -> None:
    """Refuse a model member the manifest does not list (a fold it would leave out unsaid)."""
    listed = {f"{entry['path']}/{name}" for entry in manifest["models"] for name in MODEL_FILES}
    unlisted = sorted(set(archive.namelist()) - listed - {MANIFEST})
    if unlisted:
        raise ModelFileError(
            f"{path}: {MANIFEST}: models lists {len(manifest['models'])} model(s), but the file "
            f"also holds {', '.join(unlisted[:3])}; export the models again"
        )


def check_manifest(
    manifest: dict[str, Any],
    models: Sequence[LoadedModel],
    postprocessing: Postprocessing | None,
    path: Path,
) -> None:
    """Refuse a manifest whose plan, labels, patch or post-processing are not those of the
    models it lists, naming the manifest's field and the model's ``model.json``."""

    def refuse(field: str, stated: Any, member: str, found: Any) -> ModelFileError:
        return ModelFileError(
            f"{path}: {MANIFEST}: {field} {json.dumps(stated)}, but {member}/model.json has "
            f"{json.dumps(found)}; the file was changed after export: export the models again"
        )

    for entry, model in zip(manifest["models"], models, strict=True):
        member = entry["path"]
        plan = model.plan.model_dump(mode="json")
        stated = manifest["plan"]
        for key in sorted(set(plan) | set(stated)):
            if stated.get(key) != plan.get(key):
                raise refuse(f"plan.{key}", stated.get(key), member, plan.get(key))
        labels = {str(value): name for value, name in model.plan.labels.items()}
        if manifest["labels"] != labels:
            raise refuse("labels", manifest["labels"], member, labels)
        if "patch" in entry and list(entry["patch"]) != list(model.patch):  # older files lack it
            raise refuse("patch", entry["patch"], member, list(model.patch))
        foreground = sorted(model.plan.labels)[1:]
        if postprocessing is not None and not set(postprocessing.largest_component) <= set(
            foreground
        ):
            raise refuse(
                "postprocessing.largest_component", list(postprocessing.largest_component),
                member, {"foreground labels": foreground},
            )  # fmt: skip
