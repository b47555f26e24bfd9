"""Prediction from non-NIfTI images (written back in their format) and nnU-Net channel files."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from c2fnas.data import cache, io
from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.preprocess import ChannelNormalization
from c2fnas.inference.predict import LoadedModel, predict_folder
from tests.inference.test_predict import PLAN, NearestMean, write_case


def test_an_nrrd_case_is_predicted_into_nrrd_with_its_exact_geometry(tmp_path):
    nifti = tmp_path / "nifti"
    write_case(nifti, "case_001.nii.gz", (27, 31, 19), (1.0, 1.0, 1.0))
    data = tmp_path / "data"
    for folder in ("imagesTr", "labelsTr"):
        (data / folder).mkdir(parents=True)
        image = sitk.ReadImage(str(nifti / folder / "case_001.nii.gz"))
        sitk.WriteImage(image, str(data / folder / "case_001.nrrd"))
    entry = {"image": "./imagesTr/case_001.nrrd", "label": "./labelsTr/case_001.nrrd"}
    description = {"modality": {"0": "MR"}, "labels": {"0": "bg", "1": "a", "2": "b"}}
    (data / "dataset.json").write_text(json.dumps(description | {"training": [entry]}))
    summary = preprocess_dataset(data, tmp_path / "run")
    image, label, _ = cache.load_case(tmp_path / "run", "case_001")
    model = LoadedModel(NearestMean(image, label), summary.plan, (16, 16, 16))
    result = predict_folder([], data / "imagesTr", tmp_path / "out", models=[model], stride=8,
                            precision="fp32")  # fmt: skip
    assert not result.failed and [path.name for path in result.written] == ["case_001.nrrd"]
    written = sitk.ReadImage(str(tmp_path / "out" / "case_001.nrrd"))
    source = sitk.ReadImage(str(data / "imagesTr" / "case_001.nrrd"))
    # NRRD stores spacing x direction: reading it back may differ from the source in the last bit
    assert written.GetOrigin() == source.GetOrigin()
    assert written.GetSpacing() == pytest.approx(source.GetSpacing(), abs=1e-12)
    assert written.GetDirection() == pytest.approx(source.GetDirection(), abs=1e-12)
    expected = sitk.ReadImage(str(data / "labelsTr" / "case_001.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected))


def test_nnunet_channel_files_are_predicted_as_one_case(tmp_path):
    data = tmp_path / "data"
    image_path, _ = write_case(data, "case.nii.gz", (20, 20, 20), (1.0, 1.2, 1.5))
    inputs = tmp_path / "imagesTs"
    inputs.mkdir()
    for channel in (0, 1):
        (inputs / f"case_000{channel}.nii.gz").write_bytes(image_path.read_bytes())
    two = PLAN.model_copy(
        update={
            "modalities": {0: "MR", 1: "MR"},
            "normalization": [ChannelNormalization(scheme="mr")] * 2,
        }
    )
    seen = []

    def network(x):
        seen.append(x.shape[1])
        return torch.zeros(x.shape[0], 3, *x.shape[2:])

    model = LoadedModel(network, two, (16, 16, 16))
    result = predict_folder([], inputs, tmp_path / "out", models=[model], stride=16)
    assert not result.failed and [path.name for path in result.written] == ["case.nii.gz"]
    assert set(seen) == {2}
    written, source = nib.load(tmp_path / "out" / "case.nii.gz"), nib.load(image_path)
    np.testing.assert_array_equal(written.affine, source.affine)


@pytest.mark.parametrize("channels", [1, 2])
def test_each_input_file_is_read_once(tmp_path, monkeypatch, channels):
    """Estimating, preprocessing and writing share one read of every file: the estimate reads
    headers only (``io.read_grid``), the written label map takes the read image's header."""
    image_path, _ = write_case(tmp_path / "data", "case.nii.gz", (20, 20, 20), (1.0, 1.2, 1.5))
    inputs = tmp_path / "imagesTs"
    inputs.mkdir()
    if channels == 1:
        (inputs / "nifti.nii.gz").write_bytes(image_path.read_bytes())
        sitk.WriteImage(sitk.ReadImage(str(image_path)), str(inputs / "itk.nrrd"))
    else:
        for channel in range(channels):
            (inputs / f"case_000{channel}.nii.gz").write_bytes(image_path.read_bytes())
    plan = PLAN.model_copy(
        update={
            "modalities": dict.fromkeys(range(channels), "MR"),
            "normalization": [ChannelNormalization(scheme="mr")] * channels,
        }
    )
    reads: list[str] = []
    load_volume = io.load_volume

    def counted(path):
        reads.append(Path(path).name)
        return load_volume(path)

    monkeypatch.setattr(io, "load_volume", counted)
    model = LoadedModel(lambda x: torch.zeros(x.shape[0], 3, *x.shape[2:]), plan, (16, 16, 16))
    result = predict_folder([], inputs, tmp_path / "out", models=[model], stride=16)
    assert not result.failed and len(result.written) == 3 - channels
    assert sorted(reads) == sorted(path.name for path in inputs.iterdir())
