"""Exported model files: what the folders predict, in one file; damaged or foreign files refused."""

import json
import logging
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.files.model_folder import write_model
from c2fnas.inference.export import MANIFEST, ModelFileError, export_models, load_model_file
from c2fnas.inference.postprocess import Postprocessing
from c2fnas.nn import C2FNet
from tests.inference.test_predict import PLAN, write_case
from tests.training.synthetic import TINY


def fold(folder, seed):
    torch.manual_seed(seed)
    info = {"kind": "network", "in_channels": 1, "num_classes": 3, "patch": [32, 32, 16],
            "stride": 16, "plan": PLAN.model_dump(mode="json")}  # fmt: skip
    write_model(folder / "best", C2FNet(TINY, 1, 3), TINY, info)
    return folder


@pytest.fixture
def folds(tmp_path):
    return [fold(tmp_path / "run" / "train" / f"fold_{k}", seed=k) for k in range(2)]


def test_a_zip_round_trip_predicts_exactly_what_the_folders_predict(tmp_path, folds):
    image_path, _ = write_case(tmp_path / "data", "case.nii.gz", (27, 31, 19), (0.9, 1.2, 1.5))
    Postprocessing(largest_component=(1,)).save(tmp_path / "run" / "postprocessing.json")
    cli = CliRunner()
    result = cli.invoke(app, ["export", "-m", str(folds[0]), "-m", str(folds[1]),
                              "-o", str(tmp_path / "model.zip")])  # fmt: skip
    assert result.exit_code == 0, result.output
    for source, out in ((folds, "folders"), ([tmp_path / "model.zip"], "zip")):
        arguments = [item for path in source for item in ("-m", str(path))]
        result = cli.invoke(app, ["predict", *arguments, "-i", str(image_path.parent),
                                  "-o", str(tmp_path / out), "--stride", "8,16,8",
                                  "--precision", "fp32", "--save-probabilities"])  # fmt: skip
        assert result.exit_code == 0, result.output
    folders, packed = (nib.load(tmp_path / out / "case.nii.gz") for out in ("folders", "zip"))
    assert np.array_equal(np.asarray(folders.dataobj), np.asarray(packed.dataobj))
    assert len(np.unique(np.asarray(folders.dataobj))) > 1  # two models that predict something
    probabilities = [
        np.load(tmp_path / out / "case.npz")["probabilities"] for out in ("folders", "zip")
    ]
    assert np.array_equal(*probabilities)
    models, postprocessing = load_model_file(tmp_path / "model.zip", torch.device("cpu"))
    assert len(models) == 2 and postprocessing == Postprocessing(largest_component=(1,))
    assert models[0].plan == PLAN and models[0].patch == (32, 32, 16)


def test_exporting_twice_gives_the_same_bytes(tmp_path, folds):
    for name in ("a.zip", "b.zip"):
        export_models(folds, tmp_path / name, None)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def flip_byte_inside(path, member):
    """Flip one byte in the stored data of ``member`` (not in the zip's directory)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_and_foreign_files_are_refused_by_name(tmp_path, folds):
    cpu = torch.device("cpu")
    export_models(folds[:1], tmp_path / "model.zip", None)
    flip_byte_inside(tmp_path / "model.zip", "models/0/model.safetensors")
    with pytest.raises(ModelFileError, match="model.zip: damaged"):
        load_model_file(tmp_path / "model.zip", cpu)

    # rewritten with a valid CRC but other weights: the manifest's checksum catches it
    export_models(folds[:1], tmp_path / "edited.zip", None)
    with zipfile.ZipFile(tmp_path / "edited.zip") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["models/0/model.safetensors"] = (folds[1] / "best" / "model.safetensors").read_bytes()
    with zipfile.ZipFile(tmp_path / "edited.zip", "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    with pytest.raises(ModelFileError, match="does not match its recorded SHA-256"):
        load_model_file(tmp_path / "edited.zip", cpu)

    with zipfile.ZipFile(tmp_path / "foreign.zip", "w") as archive:
        archive.writestr("data.pkl", b"\x80\x04K\x01.")
    with pytest.raises(ModelFileError, match="not a c2fnas model file"):
        load_model_file(tmp_path / "foreign.zip", cpu)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr(MANIFEST, json.dumps({"format": "something-else"}))
    with pytest.raises(ModelFileError, match="of another format"):
        load_model_file(tmp_path / "other.zip", cpu)
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(ModelFileError, match="not a c2fnas model file"):
        load_model_file(tmp_path / "text.zip", cpu)


def test_predict_names_a_damaged_model_file(tmp_path, folds):
    image_path, _ = write_case(tmp_path / "data", "case.nii.gz", (20, 20, 20), (1.0, 1.0, 1.0))
    export_models(folds[:1], tmp_path / "model.zip", None)
    flip_byte_inside(tmp_path / "model.zip", "models/0/model.safetensors")
    arguments = ["-i", str(image_path.parent), "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(app, ["predict", "-m", str(tmp_path / "model.zip"), *arguments])
    assert result.exit_code == 2 and "model.zip: damaged" in " ".join(result.output.split())


def rewrite_manifest(path, edit):
    """Rewrite a model file with its manifest changed by ``edit`` (the models as they were)."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members[MANIFEST])
    edit(manifest)
    members[MANIFEST] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        ("labels", lambda manifest: manifest["labels"].update({"2": "tumour"})),
        ("plan.spacing", lambda manifest: manifest["plan"].update(spacing=[2.0, 2.0, 2.0])),
        ("plan.modalities", lambda manifest: manifest["plan"]["modalities"].update({"1": "CT"})),
        ("patch", lambda manifest: manifest["models"][1].update(patch=[64, 64, 32])),
        ("postprocessing.largest_component",
         lambda manifest: manifest.update(postprocessing={"largest_component": [5]})),
        ("models", lambda manifest: manifest["models"].pop()),
    ],
)  # fmt: skip
def test_a_manifest_that_disagrees_with_its_models_is_refused_naming_the_field(
    tmp_path, folds, field, edit
):
    """The manifest's plan, labels, patch and post-processing describe what the models were
    trained for, and it lists every model in the file: an edited one is refused, not believed."""
    export_models(folds, tmp_path / "model.zip", Postprocessing(largest_component=(1,)))
    rewrite_manifest(tmp_path / "model.zip", edit)
    with pytest.raises(ModelFileError) as raised:
        load_model_file(tmp_path / "model.zip", torch.device("cpu"))
    message = str(raised.value)
    assert str(tmp_path / "model.zip") in message and f"{MANIFEST}: {field}" in message


def test_weights_without_a_checksum_in_a_model_file_are_named_once(tmp_path, folds, caplog):
    model_json = folds[0] / "best" / "model.json"
    record = json.loads(model_json.read_text())
    del record["sha256"]
    model_json.write_text(json.dumps(record))
    export_models(folds, tmp_path / "model.zip", None)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            load_model_file(tmp_path / "model.zip", torch.device("cpu"))
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1, warnings
    assert f"{tmp_path / 'model.zip'}: models/0/model.json" in warnings[0]
    assert "not verified" in warnings[0]
