import json
import re

import pytest

from c2fnas.data.msd import DatasetError, case_id_of, read_dataset

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
    assert "'../outside.nii.gz' escapes" in text and "'/etc/passwd' escapes" in text
    assert "gone.nii.gz: missing" in text and "x.nii.gz: missing" in text
