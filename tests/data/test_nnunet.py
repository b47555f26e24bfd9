"""The nnU-Net v2 raw layout, read directly, and ``c2fnas data convert`` both ways."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.data import cache
from c2fnas.data.check import check_dataset
from c2fnas.data.convert import convert_dataset
from c2fnas.data.io import load_images
from c2fnas.data.msd import DatasetError, read_dataset
from c2fnas.data.pipeline import cached_case_ids, preprocess_dataset
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.inference.predict import input_cases
from c2fnas.pipeline import dataset_identity

from .conftest import SMALL

runner = CliRunner()


def nnunet_by_hand(msd, out):
    """The MSD dataset ``msd`` in the v2 layout, written here without c2fnas's converter."""
    description = json.loads((msd / "dataset.json").read_text())
    for entry in description["training"]:
        case = entry["image"].split("/")[-1].removesuffix(".nii.gz")
        image = nib.load(str(msd / entry["image"]))
        data = np.asanyarray(image.dataobj)
        data = data[..., None] if data.ndim == 3 else data
        (out / "imagesTr").mkdir(parents=True, exist_ok=True)
        for channel in range(data.shape[-1]):
            channel_image = nib.Nifti1Image(data[..., channel], image.affine, image.header)
            nib.save(channel_image, str(out / "imagesTr" / f"{case}_{channel:04d}.nii.gz"))
        (out / "labelsTr").mkdir(exist_ok=True)
        shutil.copy(msd / entry["label"], out / "labelsTr" / f"{case}.nii.gz")
    v2 = {
        "channel_names": description["modality"],
        "labels": {name: int(value) for value, name in description["labels"].items()},
        "numTraining": len(description["training"]),
        "file_ending": ".nii.gz",
    }
    (out / "dataset.json").write_text(json.dumps(v2))
    return out


@pytest.fixture(scope="module")
def two_channels(tmp_path_factory):
    """4 tiny cases with 2 channels (4D NIfTI in MSD), and their v2 form."""
    msd = make_synthetic_dataset(
        tmp_path_factory.mktemp("msd2"), cases=4, shape=SMALL, seed=5, modalities=("MR", "MR")
    )
    return msd, nnunet_by_hand(msd, tmp_path_factory.mktemp("nnunet2") / "Dataset002_Two")


def assert_same_cache(run_a, run_b, case_ids):
    for case_id in case_ids:
        a, b = cache.load_arrays(run_a, case_id), cache.load_arrays(run_b, case_id)
        assert sorted(a) == sorted(b) == ["image", "label", "locations"]
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{case_id} {name}")


def test_the_v2_layout_gives_the_same_cache(two_channels, tmp_path):
    msd, v2 = two_channels
    dataset = read_dataset(v2)
    assert dataset.modalities == {0: "MR", 1: "MR"}
    assert dataset.labels == {0: "background", 1: "organ", 2: "lesion"}
    assert [path.name for path in dataset.training[0].images] == [
        "synth_000_0000.nii.gz",
        "synth_000_0001.nii.gz",
    ]
    assert check_dataset(v2).ok
    preprocess_dataset(msd, tmp_path / "msd_run")
    preprocess_dataset(v2, tmp_path / "v2_run")
    case_ids = [f"synth_{i:03d}" for i in range(4)]
    assert cached_case_ids(tmp_path / "v2_run") == case_ids
    assert_same_cache(tmp_path / "msd_run", tmp_path / "v2_run", case_ids)
    assert dataset_identity(v2).cases == 4


def test_v2_test_images_are_grouped_by_case(two_channels, tmp_path):
    _, v2 = two_channels
    root = shutil.copytree(v2, tmp_path / "v2")
    (root / "imagesTs").mkdir()
    for channel in (0, 1):
        shutil.copy(
            root / "imagesTr" / f"synth_000_000{channel}.nii.gz",
            root / "imagesTs" / f"new_000{channel}.nii.gz",
        )
    test = read_dataset(root).test
    assert [(case.case_id, len(case.images), case.label) for case in test] == [("new", 2, None)]
    files = sorted((root / "imagesTs").iterdir())
    assert input_cases(files, 2) == {"new.nii.gz": files}
    assert input_cases(files, 1) == {file.name: [file] for file in files}  # not 2 cases of 1


def v2_dataset(root, labels=None, **extra):
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for name in ("a_0000", "b_0000"):
        image = nib.Nifti1Image(rng.uniform(1, 2, (6, 6, 4)).astype(np.float32), np.eye(4))
        nib.save(image, str(root / "imagesTr" / f"{name}.nii.gz"))
        label = nib.Nifti1Image(np.zeros((6, 6, 4), np.uint8), np.eye(4))
        nib.save(label, str(root / "labelsTr" / f"{name[:1]}.nii.gz"))
    description = {
        "channel_names": {"0": "CT"},
        "labels": labels or {"background": 0, "tumor": 1},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(description | extra))
    return root


def test_a_small_v2_dataset_reads_and_checks(tmp_path):
    root = v2_dataset(tmp_path / "Dataset001_Small")
    dataset = read_dataset(root)
    assert dataset.case_ids == ["a", "b"] and dataset.labels == {0: "background", 1: "tumor"}
    assert dataset.modalities == {0: "CT"} and dataset.test == []
    result = runner.invoke(app, ["data", "check", str(root)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": {"background": 0, "whole": [1, 2], "core": 2}}, "region-based labels"),
        ({"labels": {"tumor": 1}}, "background to 0"),
        ({"numTraining": 3}, "'numTraining' is 3 but imagesTr holds 2"),
        ({"file_ending": ".png"}, "'file_ending' is '.png'"),
        ({"channel_names": {"0": "CT", "1": "PET"}}, "do not have exactly the 2 channel"),
    ],
)
def test_bad_v2_descriptions_are_refused(tmp_path, change, message):
    root = v2_dataset(tmp_path / "ds")
    description = json.loads((root / "dataset.json").read_text()) | change
    (root / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(DatasetError, match=message):
        read_dataset(root)


def test_misnamed_v2_files_are_counted_once(tmp_path):
    root = v2_dataset(tmp_path / "ds", numTraining=None)
    for name in ("x.nii.gz", "y_1.nii.gz", "z_00000.nii.gz", "w_000a.nii.gz"):
        shutil.copy(root / "imagesTr" / "a_0000.nii.gz", root / "imagesTr" / name)
    with pytest.raises(DatasetError, match=r"4 file\(s\) not named CASE_XXXX.nii.gz.* and 1 more"):
        read_dataset(root)


def test_convert_both_ways_keeps_every_voxel(two_channels, tmp_path):
    msd, _ = two_channels
    v2 = convert_dataset(msd, tmp_path / "Dataset002_Two", "nnunet")
    description = json.loads((v2 / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "MR", "1": "MR"}
    assert description["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert description["file_ending"] == ".nii.gz" and description["numTraining"] == 4
    assert "training" not in description
    assert (v2 / "imagesTr" / "synth_003_0001.nii.gz").is_file()
    back = convert_dataset(v2, tmp_path / "back", "msd")
    for original, converted in zip(
        read_dataset(msd).training, read_dataset(back).training, strict=True
    ):
        image, reference = load_images(converted.images)
        expected, original_reference = load_images(original.images)
        np.testing.assert_array_equal(image, expected)
        np.testing.assert_array_equal(reference.affine, original_reference.affine)
        assert converted.label is not None and original.label is not None
        assert converted.label.read_bytes() == original.label.read_bytes()


def test_convert_refuses_a_folder_that_holds_files(synthetic, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["data", "convert", str(synthetic), str(target), "--to", "nnunet"])
    assert result.exit_code == 1 and "not an empty folder" in result.stderr
    assert [path.name for path in target.iterdir()] == ["mine.txt"]
    result = runner.invoke(app, ["data", "convert", str(synthetic), str(target), "--to", "nnU"])
    assert result.exit_code == 2 and "choose nnunet or msd" in result.stderr


def test_convert_command_writes_a_v2_dataset_that_checks(synthetic, tmp_path):
    target = tmp_path / "empty"
    target.mkdir()  # an empty folder is taken
    result = runner.invoke(app, ["data", "convert", str(synthetic), str(target), "--to", "nnunet"])
    assert result.exit_code == 0, result.output
    assert (
        sorted(path.name for path in (target / "imagesTr").iterdir())[0] == "synth_000_0000.nii.gz"
    )
    assert check_dataset(target).ok
    assert not list(tmp_path.glob(".*"))  # no temporary folder left
