"""Real data: predictions on Hippocampus images keep each image's geometry and can be scored."""

import nibabel as nib
import numpy as np
import pytest
import torch

from c2fnas.evaluation.metrics import evaluate_folders
from c2fnas.files.model_folder import write_model
from c2fnas.inference.predict import predict_folder
from c2fnas.nn import C2FNet
from tests.inference.test_predict import PLAN
from tests.training.synthetic import TINY


@pytest.mark.realdata
def test_predict_and_evaluate_real_cases(hippocampus, tmp_path):
    names = ["hippocampus_001.nii.gz", "hippocampus_003.nii.gz"]
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        source = hippocampus / ("imagesTr" if folder == "images" else "labelsTr")
        for name in names:
            (tmp_path / folder / name).symlink_to(source / name)
    torch.manual_seed(0)
    info = {"kind": "network", "in_channels": 1, "num_classes": 3, "patch": [32, 48, 32],
            "stride": 16, "plan": PLAN.model_dump(mode="json")}  # fmt: skip
    write_model(tmp_path / "model", C2FNet(TINY, 1, 3), TINY, info)
    summary = predict_folder([tmp_path / "model"], tmp_path / "images", tmp_path / "out")
    assert not summary.failed
    for name in names:
        source, written = nib.load(tmp_path / "images" / name), nib.load(tmp_path / "out" / name)
        assert written.shape == source.shape
        np.testing.assert_array_equal(written.affine, source.affine)
    scores = evaluate_folders(tmp_path / "out", tmp_path / "labels", labels=[1, 2])
    assert len(scores) == 4 and all(0.0 <= score.dice <= 1.0 for score in scores)
