"""ONNX export and ONNX Runtime as an engine: the same probabilities and labels as PyTorch."""

import nibabel as nib
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.inference.export import ModelFileError
from c2fnas.inference.models import load_model
from c2fnas.inference.onnx_engine import OnnxNetwork, load_onnx_model
from c2fnas.inference.predict import predict_folder
from c2fnas.inference.sliding_window import predict_probabilities
from tests.inference.test_export import fold
from tests.inference.test_predict import write_case

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One model folder and its ONNX file (exporting traces the network: about a minute)."""
    folder = fold(tmp_path_factory.mktemp("onnx") / "fold_0", seed=3)
    arguments = ["-m", str(folder), "--onnx", str(folder / "model.onnx"), "--postprocess", "none"]
    result = CliRunner().invoke(app, ["export", *arguments])
    assert result.exit_code == 0, result.output
    return folder, folder / "model.onnx"


def test_onnx_runtime_agrees_with_pytorch_on_random_input(exported):
    folder, path = exported
    torch_model = load_model(folder, CPU, accelerated=True)  # as `c2fnas predict` runs it
    onnx_model, postprocessing = load_onnx_model(path)
    assert postprocessing is None and onnx_model.plan == torch_model.plan
    assert onnx_model.patch == torch_model.patch == (32, 32, 16)
    torch.manual_seed(0)
    image = torch.randn(1, 1, 45, 38, 29)
    expected = predict_probabilities(torch_model.network, image, (32, 32, 16), 8)
    actual = predict_probabilities(onnx_model.network, image, (32, 32, 16), 8)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)
    # dynamic axes: another batch and another window size than the export's example
    windows = torch.randn(3, 1, 48, 32, 64)
    with torch.no_grad():
        reference = torch_model.network(windows).softmax(1)
    torch.testing.assert_close(onnx_model.network(windows).softmax(1), reference, rtol=0, atol=1e-4)


@pytest.mark.realdata
def test_onnx_and_pytorch_labels_agree_on_a_real_case(exported, hippocampus, tmp_path):
    folder, path = exported
    images = tmp_path / "images"
    images.mkdir()
    (images / "case.nii.gz").symlink_to(hippocampus / "imagesTr" / "hippocampus_001.nii.gz")
    for source, engine in ((folder, "torch"), (path, "onnx")):
        summary = predict_folder([source], images, tmp_path / engine, precision="fp32",
                                 engine=engine, device=CPU, save_probabilities=True)  # fmt: skip
        assert not summary.failed
    torch_label, onnx_label = (
        np.asarray(nib.load(tmp_path / engine / "case.nii.gz").dataobj).astype(np.int64)
        for engine in ("torch", "onnx")
    )
    assert len(np.unique(torch_label)) == 3
    # An untrained network has voxels where two classes tie to within the engines' 1e-4; only
    # there may the labels differ (2 of 62,475 voxels when this was written).
    differ = torch_label != onnx_label
    assert differ.mean() < 1e-3
    probabilities = np.load(tmp_path / "torch" / "case.npz")["probabilities"].astype(np.float32)
    chosen = [np.take_along_axis(probabilities, label[None], 0)[0][differ]
              for label in (torch_label, onnx_label)]  # fmt: skip
    np.testing.assert_allclose(chosen[0], chosen[1], atol=1e-3)


def test_foreign_and_unreadable_onnx_files_are_refused(tmp_path, exported):
    image_path, _ = write_case(tmp_path / "data", "case.nii.gz", (20, 20, 20), (1.0, 1.0, 1.0))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["logits"])], "identity",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 16, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 16, 16, 16])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), tmp_path / "foreign.onnx")
    with pytest.raises(ModelFileError, match="without c2fnas metadata"):
        load_onnx_model(tmp_path / "foreign.onnx")
    (tmp_path / "text.onnx").write_text("not onnx")
    with pytest.raises(ModelFileError, match="not a readable ONNX file"):
        load_onnx_model(tmp_path / "text.onnx")
    path = exported[1]
    with pytest.raises(ValueError, match="predict it with --engine onnx"):
        predict_folder([path], image_path.parent, tmp_path / "out")
    with pytest.raises(ValueError, match="runs .onnx files"):
        predict_folder([exported[0]], image_path.parent, tmp_path / "out", engine="onnx")
    assert isinstance(load_onnx_model(path)[0].network, OnnxNetwork)
