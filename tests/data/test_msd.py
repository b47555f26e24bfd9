import json
import re
import shutil

import pytest

from c2fnas.data.check import check_dataset
from c2fnas.data.msd import DatasetError, case_id_of, read_dataset
from c2fnas.data.pipeline import preprocess_dataset

from .conftest import save


def write_dataset(root, training, test=(), **extra):
    description = {"modality": {"0": "MR"}, "labels": {"0": "background", "1": "a"}}
    description |= {"training": training, "test": list(test)} | extra
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(description))
    return root


def test_read_synthetic(synthetic):
    dataset = read_dataset(synthetic)
    assert dataset.modalities == {0: "MR"}
    assert dataset.labels == {0: "background", 1: "organ", 2: "lesion"}
    assert dataset.case_ids == [f"synth_{i:03d}" for i in range(6)]
    assert all(case.image.is_absolute() and case.image.is_file() for case in dataset.training)


def test_test_cases_and_case_ids(tmp_path):
    import numpy as np

    save(tmp_path / "imagesTr" / "a_1.nii.gz", np.zeros((2, 2, 2), np.float32))
    save(tmp_path / "labelsTr" / "a_1.nii.gz", np.zeros((2, 2, 2), np.uint8))
    save(tmp_path / "imagesTs" / "b.nii", np.zeros((2, 2, 2), np.float32))
    entry = {"image": "./imagesTr/a_1.nii.gz", "label": "./labelsTr/a_1.nii.gz"}
    dataset = read_dataset(write_dataset(tmp_path, [entry], ["./imagesTs/b.nii"]))
    assert dataset.case_ids == ["a_1"] and dataset.test[0].case_id == "b"
    assert dataset.test[0].label is None
    assert case_id_of("x/la_003.nii.gz") == "la_003"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "missing"),
        ("{not json", "unreadable JSON"),
        ('{"labels": {"0": "bg"}, "training": []}', "missing key(s) modality"),
        ('{"modality": {"0": "CT"}, "labels": {"1": "a"}, "training": []}', "background"),
        ('{"modality": {"0": "CT"}, "labels": {"0": "a"}, "training": [{}]}', "'image'"),
    ],
)
def test_bad_description(tmp_path, content, message):
    if content is not None:
        (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(DatasetError, match=re.escape(message)) as error:
        read_dataset(tmp_path)
    assert "dataset.json" in str(error.value)


def test_escaping_and_missing_paths_are_all_named(tmp_path):
    outside = tmp_path / "outside.nii.gz"
    outside.write_bytes(b"")
    training = [
        {"image": "../outside.nii.gz", "label": "./labelsTr/x.nii.gz"},
        {"image": "./imagesTr/gone.nii.gz", "label": "/etc/passwd"},
    ]
    with pytest.raises(DatasetError) as error:
        read_dataset(write_dataset(tmp_path / "ds", training))
    text = str(error.value)
    assert "2 path(s) leave the dataset folder (absolute, or with '..')" in text
    assert "'../outside.nii.gz'" in text and "'/etc/passwd'" in text
    assert "2 listed file(s) missing" in text
    assert "gone.nii.gz" in text and "x.nii.gz" in text


def linked_dataset(synthetic, tmp_path):
    """The synthetic dataset with imagesTr/ and labelsTr/ as symlinks to a folder elsewhere,
    and one image file a symlink too, as clusters keep data on shared storage."""
    store = tmp_path / "store"
    for folder in ("imagesTr", "labelsTr"):
        shutil.copytree(synthetic / folder, store / folder)
    root = tmp_path / "ds"
    root.mkdir()
    shutil.copy(synthetic / "dataset.json", root / "dataset.json")
    (root / "imagesTr").symlink_to(store / "imagesTr", target_is_directory=True)
    (root / "labelsTr").symlink_to(store / "labelsTr", target_is_directory=True)
    moved = store / "imagesTr" / "synth_001.nii.gz"
    moved.rename(store / "elsewhere.nii.gz")
    moved.symlink_to(store / "elsewhere.nii.gz")
    return root


def test_symlinked_folders_and_files_are_followed(synthetic, tmp_path):
    root = linked_dataset(synthetic, tmp_path)
    dataset = read_dataset(root)
    assert dataset.case_ids == [f"synth_{i:03d}" for i in range(6)]
    assert dataset.training[1].image == root.resolve() / "imagesTr" / "synth_001.nii.gz"
    assert check_dataset(root).ok
    summary = preprocess_dataset(root, tmp_path / "run")  # what `c2fnas run` does next
    assert len(summary.written) == 6


def test_an_error_of_many_entries_is_said_once(tmp_path):
    training = [
        {"image": f"./imagesTr/c_{i:03d}.nii.gz", "label": f"./labelsTr/c_{i:03d}.nii.gz"}
        for i in range(260)
    ]
    with pytest.raises(DatasetError) as error:
        read_dataset(write_dataset(tmp_path, training))
    text = str(error.value)
    assert text.count("dataset.json") == 1 and "520 listed file(s) missing" in text
    assert "c_000.nii.gz" in text and "and 517 more" in text and len(text) < 1000


def test_a_dangling_folder_link_is_named(synthetic, tmp_path):
    root = linked_dataset(synthetic, tmp_path)
    shutil.rmtree(tmp_path / "store" / "labelsTr")
    with pytest.raises(DatasetError, match="labelsTr: a symlink to nothing"):
        read_dataset(root)
