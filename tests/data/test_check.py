import json

import nibabel as nib
import numpy as np
import pytest

from c2fnas.data.check import check_dataset

from .conftest import save

SHAPE = (6, 7, 5)


def make_case(root, name, image=None, label=None, label_affine=None):
    rng = np.random.default_rng(0)
    image = rng.uniform(1, 2, size=SHAPE).astype(np.float32) if image is None else image
    label = np.zeros(SHAPE, np.uint8) if label is None else label
    save(root / "imagesTr" / f"{name}.nii.gz", image)
    save(root / "labelsTr" / f"{name}.nii.gz", label, label_affine)
    return {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}


def broken_dataset(root):
    """One good case and one case per kind of problem."""
    entries = {"good": make_case(root, "good")}
    entries["missing"] = {"image": "./imagesTr/none.nii.gz", "label": "./labelsTr/none.nii.gz"}
    entries["escape"] = {"image": "../../etc/hosts", "label": "./labelsTr/good.nii.gz"}
    truncated = make_case(root, "truncated")
    path = root / "imagesTr" / "truncated.nii.gz"
    path.write_bytes(path.read_bytes()[:-100])  # header intact, data cut
    entries["truncated"] = truncated
    entries["text"] = make_case(root, "text")
    (root / "labelsTr" / "text.nii.gz").write_text("not an image")
    entries["shape"] = make_case(root, "shape", label=np.zeros((6, 7, 4), np.uint8))
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    entries["affine"] = make_case(root, "affine", label_affine=shifted)
    undeclared = np.zeros(SHAPE, np.uint8)
    undeclared[1, 1, 1] = 7
    entries["undeclared"] = make_case(root, "undeclared", label=undeclared)
    fractional = np.zeros(SHAPE, np.float32)
    fractional[2, 2, 2] = 0.5
    entries["fractional"] = make_case(root, "fractional", label=fractional)
    nan = np.ones(SHAPE, np.float32)
    nan[0, 0, 0], nan[1, 0, 0] = np.nan, np.inf
    entries["nan"] = make_case(root, "nan", image=nan)
    entries["channels"] = make_case(root, "channels", image=np.ones((*SHAPE, 2), np.float32))
    description = {
        "modality": {"0": "MR"},
        "labels": {"0": "background", "1": "a"},
        "training": list(entries.values()),
        "test": ["./imagesTs/absent.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(description))
    return root


EXPECTED = {
    "missing": "none.nii.gz is missing",
    "escape": "leaves the dataset folder",
    "truncated": "cannot read the voxel data",
    "text": "not a readable NIfTI",
    "shape": "label shape (6, 7, 4) differs from image shape (6, 7, 5)",
    "affine": "affines differ by up to 0.5 mm",
    "undeclared": "label values [7] are not declared",
    "fractional": "not integers",
    "nan": "2 NaN or infinite voxel(s)",
    "channels": "2 channel(s) but dataset.json declares 1",
    "absent": "absent.nii.gz is missing",
}


def test_every_problem_is_reported_case_by_case(tmp_path):
    report = check_dataset(broken_dataset(tmp_path / "ds"))
    assert not report.ok and report.problems == []
    by_id = {case.case_id: case for case in report.cases}
    assert by_id["good"].ok and by_id["good"].shape == list(SHAPE)
    assert by_id["good"].labels == [0] and by_id["good"].channels == 1
    # an escaping path is named by its dataset.json entry, not by the file it points to
    names = {"missing": "none", "escape": "training[2]", "absent": "absent"}
    assert "hosts" not in by_id
    for kind, message in EXPECTED.items():
        case = by_id[names.get(kind, kind)]
        assert any(message in problem for problem in case.problems), (kind, case.problems)
    assert len(report.bad_cases) == len(EXPECTED)
    assert json.loads(json.dumps(report.to_dict()))["ok"] is False


def test_workers_give_the_same_report(tmp_path):
    root = broken_dataset(tmp_path / "ds")
    assert check_dataset(root, workers=2).to_dict() == check_dataset(root).to_dict()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "missing"),
        ("[1, 2", "unreadable JSON"),
        ('{"modality": {"0": "CT"}}', "missing key(s) labels, training"),
    ],
)
def test_dataset_json_problems(tmp_path, content, message):
    if content is not None:
        (tmp_path / "dataset.json").write_text(content)
    report = check_dataset(tmp_path)
    assert not report.ok and report.cases == []
    assert message in report.problems[0] and "dataset.json" in report.problems[0]


def test_synthetic_and_uint8_float_images_pass(synthetic, tmp_path):
    assert check_dataset(synthetic).ok
    entry = make_case(tmp_path, "u8", image=np.full(SHAPE, 200, np.uint8))
    entry2 = make_case(tmp_path, "f", label=np.ones(SHAPE, np.float32))
    description = {"modality": {"0": "MR"}, "labels": {"0": "b", "1": "a"}}
    description["training"] = [entry, entry2]
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    assert check_dataset(tmp_path).ok


def test_an_image_of_imagests_that_dataset_json_does_not_list_is_checked(tmp_path):
    """``predict`` reads every image of ``imagesTs``: a broken one stops the run at the check."""
    entry = make_case(tmp_path, "a")
    description = {"modality": {"0": "MR"}, "labels": {"0": "b"}, "training": [entry]}
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    save(tmp_path / "imagesTs" / "unlisted.nii.gz", np.ones(SHAPE, np.float32))
    (tmp_path / "imagesTs" / "broken.nii.gz").write_text("not an image")
    by_id = {case.case_id: case for case in check_dataset(tmp_path).cases}
    assert by_id["unlisted"].ok and by_id["unlisted"].kind == "test"
    assert "not a readable NIfTI" in "; ".join(by_id["broken"].problems)


def test_hidden_files_in_image_folders_are_no_cases(tmp_path):
    """macOS leaves ``._NAME.nii.gz`` beside each file it copies: not an image, never a case."""
    description = {
        "modality": {"0": "MR"},
        "labels": {"0": "b"},
        "training": [make_case(tmp_path, "a")],
    }
    description["test"] = ["./imagesTs/t.nii.gz"]
    save(tmp_path / "imagesTs" / "t.nii.gz", np.ones(SHAPE, np.float32))
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    (tmp_path / "imagesTs" / "._t.nii.gz").write_bytes(b"\0\5\26\7 AppleDouble")
    report = check_dataset(tmp_path)
    assert report.ok and [case.case_id for case in report.cases] == ["a", "t"]


def test_an_sform_and_qform_that_disagree_are_a_warning_naming_the_file(tmp_path):
    """nibabel reads the sform; an ITK tool may place the image 3 mm away by the qform."""
    entry = make_case(tmp_path, "a", image=np.ones((*SHAPE, 2), np.float32))
    description = {"modality": {"0": "MR", "1": "MR"}, "labels": {"0": "b"}, "training": [entry]}
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    path = tmp_path / "imagesTr" / "a.nii.gz"
    image = nib.load(path)
    shifted = image.affine.copy()
    shifted[0, 3] += 3.0
    image.set_qform(shifted, code=1)
    image.set_sform(image.affine, code=2)  # the label's, as nibabel reads them
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), None, image.header), path)
    case = check_dataset(tmp_path).cases[0]
    assert case.ok and len(case.warnings) == 1
    assert "a.nii.gz: sform and qform differ by up to 3 mm" in case.warnings[0]
    assert "reads the sform" in case.warnings[0] and "warning: a.nii.gz" in case.status
