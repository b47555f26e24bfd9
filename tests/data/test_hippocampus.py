"""Real data: MSD Task04 Hippocampus (skipped when absent)."""

import numpy as np
import pytest

from c2fnas.data.check import check_dataset
from c2fnas.data.io import load_image, load_label
from c2fnas.data.msd import read_dataset
from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.preprocess import ChannelNormalization, Plan, preprocess_arrays

pytestmark = pytest.mark.realdata


def test_check_passes(hippocampus):
    report = check_dataset(hippocampus)
    assert report.ok, [(c.case_id, c.problems) for c in report.bad_cases]
    assert len(report.cases) == 200


def test_cases_preprocess_cleanly(hippocampus, tmp_path):
    dataset = read_dataset(hippocampus)
    kinds = {}
    for case in dataset.training:
        dtype = np.dtype(load_image(case.image)[1].get_data_dtype())
        kinds.setdefault(dtype.name, case)
        if len(kinds) == 2:
            break
    assert set(kinds) == {"float32", "uint8"}
    plan = Plan(
        spacing=(1.0, 1.0, 1.0),
        normalization=[ChannelNormalization(scheme="mr")],
        modalities=dataset.modalities,
        labels=dataset.labels,
    )
    for case in kinds.values():
        image, nifti = load_image(case.image)
        label, _ = load_label(case.label)
        pre_image, pre_label, geometry = preprocess_arrays(image, nifti.affine, plan, label)
        assert np.isfinite(pre_image).all() and pre_image.dtype == np.float32
        assert abs(pre_image[pre_image != pre_image.min()].mean()) < 0.5
        assert set(np.unique(pre_label)) <= {0, 1, 2} and (pre_label > 0).sum() > 100
        np.testing.assert_array_equal(geometry.restore_label(pre_label), label)


def test_a_small_run(hippocampus, tmp_path):
    # five cases through the whole pipeline, by way of a dataset.json that lists only them
    import json
    import shutil

    description = json.loads((hippocampus / "dataset.json").read_text())
    description["training"] = description["training"][:5]
    root = tmp_path / "hippo"
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for entry in description["training"]:
        for key in ("image", "label"):
            shutil.copy(hippocampus / entry[key], root / entry[key])
    (root / "dataset.json").write_text(json.dumps(description))
    summary = preprocess_dataset(root, tmp_path / "run")
    assert len(summary.written) == 5 and summary.plan.normalization[0].scheme == "mr"
