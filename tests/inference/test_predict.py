import os

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.data import cache
from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.preprocess import ChannelNormalization, Plan
from c2fnas.files.model_folder import write_model
from c2fnas.inference.predict import (
    LoadedModel,
    ensemble_labels,
    load_model,
    predict_folder,
)
from c2fnas.nn import C2FNet
from tests.files.test_atomic import dead_pid
from tests.training.synthetic import TINY

PLAN = Plan(
    spacing=(1.0, 1.0, 1.0),
    normalization=[ChannelNormalization(scheme="mr")],
    modalities={0: "MR"},
    labels={0: "background", 1: "one", 2: "two"},
)


def oblique_affine(spacing, degrees=(20, -35, 110), origin=(-40.0, 12.5, 7.0)):
    """A rotation that is not a permutation, plus a flip, so every axis is reoriented."""
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix() @ np.diag(
        [spacing[0], -spacing[1], spacing[2]]
    )
    affine[:3, 3] = origin
    return affine


def write_case(folder, name, shape, spacing, seed=0):
    """An image whose intensity encodes the label (10 x label, background 0) and the label."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, dtype=np.uint8)
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    for value in (1, 2):
        centre = rng.uniform(0.3, 0.7, 3) * shape
        label[((grid - centre) ** 2 / (np.array(shape) / 5) ** 2).sum(-1) < 1] = value
    image = (label * 10.0).astype(np.float32)
    affine = oblique_affine(spacing)
    for kind, data in (("imagesTr", image), ("labelsTr", label)):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        nifti = nib.Nifti1Image(data, affine)
        nifti.header.set_xyzt_units("mm", "sec")
        nib.save(nifti, folder / kind / name)
    return folder / "imagesTr" / name, folder / "labelsTr" / name


def test_output_geometry_equals_the_input(tmp_path):
    image_path, _ = write_case(tmp_path / "data", "odd.nii.gz", (23, 30, 17), (0.7, 1.3, 2.1))
    torch.manual_seed(0)
    network = C2FNet(TINY, 1, 3)
    info = {"kind": "network", "in_channels": 1, "num_classes": 3, "patch": [32, 32, 16],
            "stride": 16, "plan": PLAN.model_dump(mode="json")}  # fmt: skip
    write_model(tmp_path / "fold_0" / "best", network, TINY, info)
    summary = predict_folder([tmp_path / "fold_0"], image_path.parent, tmp_path / "out", stride=8)
    assert not summary.failed and len(summary.written) == 1
    source, written = nib.load(image_path), nib.load(tmp_path / "out" / "odd.nii.gz")
    assert written.shape == source.shape
    np.testing.assert_array_equal(written.affine, source.affine)
    np.testing.assert_array_equal(written.header.get_zooms(), source.header.get_zooms())
    assert written.header.get_xyzt_units() == source.header.get_xyzt_units()
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2}


def test_a_killed_predicts_temporary_file_is_removed_by_the_next(tmp_path):
    """``SIGKILL`` while writing leaves ``.CASE.tmpPID.nii.gz``; the rerun clears it."""
    image_path, _ = write_case(tmp_path / "data", "case.nii.gz", (20, 20, 12), (1.0, 1.0, 1.0))
    info = {"kind": "network", "in_channels": 1, "num_classes": 3, "patch": [32, 32, 16],
            "stride": 16, "plan": PLAN.model_dump(mode="json")}  # fmt: skip
    write_model(tmp_path / "fold_0" / "best", C2FNet(TINY, 1, 3), TINY, info)
    out = tmp_path / "out"
    out.mkdir()
    leftover = out / f".case.tmp{dead_pid()}.nii.gz"
    leftover.write_bytes(b"")
    summary = predict_folder([tmp_path / "fold_0"], image_path.parent, out, stride=16)
    assert not summary.failed and not leftover.exists()
    assert [path.name for path in out.iterdir()] == ["case.nii.gz"]


class NearestMean(torch.nn.Module):
    """A 'perfect' model fitted on the cached training case: each voxel goes to the class whose
    mean normalised intensity is nearest. It sees only the image, as a trained network does."""

    def __init__(self, image, label):
        super().__init__()
        self.register_buffer(
            "means", torch.tensor([float(image[0][label == v].mean()) for v in (0, 1, 2)])
        )

    def forward(self, x):
        return -((x - self.means.view(1, 3, 1, 1, 1)) ** 2)


def test_perfect_model_reproduces_the_label_through_the_whole_chain(tmp_path):
    data = tmp_path / "data"
    image_path, label_path = write_case(data, "case_001.nii.gz", (27, 31, 19), (1.0, 1.0, 1.0))
    (data / "dataset.json").write_text(
        '{"name": "t", "modality": {"0": "MR"}, "labels": {"0": "bg", "1": "a", "2": "b"},'
        ' "training": [{"image": "./imagesTr/case_001.nii.gz",'
        ' "label": "./labelsTr/case_001.nii.gz"}], "test": []}'
    )
    summary = preprocess_dataset(data, tmp_path / "run")
    image, label, _ = cache.load_case(tmp_path / "run", "case_001")
    assert image.shape[1:] != nib.load(image_path).shape  # reoriented and cropped: a real test
    model = LoadedModel(NearestMean(image, label), summary.plan, (16, 16, 16))
    result = predict_folder([], data / "imagesTr", tmp_path / "out", models=[model], stride=8,
                            precision="fp32")  # fmt: skip
    assert not result.failed
    predicted = np.asarray(nib.load(tmp_path / "out" / "case_001.nii.gz").dataobj)
    np.testing.assert_array_equal(predicted, np.asarray(nib.load(label_path).dataobj))


def test_a_failing_case_is_reported_and_the_others_run(tmp_path):
    data = tmp_path / "data"
    write_case(data, "good.nii.gz", (20, 20, 20), (1.0, 1.0, 1.0))
    (data / "imagesTr" / "broken.nii.gz").write_bytes(b"not a nifti")
    model = LoadedModel(lambda x: torch.zeros(x.shape[0], 3, *x.shape[2:]), PLAN, (16, 16, 16))
    result = predict_folder([], data / "imagesTr", tmp_path / "out", models=[model], stride=16)
    assert (
        list(result.failed) == ["broken.nii.gz"]
        and "broken.nii.gz" in result.failed["broken.nii.gz"]
    )
    assert [p.name for p in result.written] == ["good.nii.gz"]


def test_vote_and_mean_ensembles():
    def probabilities(*classes):
        return torch.tensor(classes, dtype=torch.float32).view(3, 1, 1, 1)

    models = [probabilities(0.1, 0.5, 0.4), probabilities(0.1, 0.45, 0.45 + 1e-3),
              probabilities(0.0, 0.3, 0.7)]  # fmt: skip
    assert ensemble_labels(models, "vote").item() == 2  # two of three pick class 2
    assert ensemble_labels(models[:2], "mean").item() == 1
    tie = [probabilities(0.2, 0.7, 0.1), probabilities(0.2, 0.3, 0.5)]
    assert ensemble_labels(tie, "vote").item() == 1  # 1 vote each; class 1 has more probability
    with pytest.raises(ValueError, match="vote or mean"):
        ensemble_labels(tie, "median")


def test_load_model_rejects_a_folder_without_a_model(tmp_path):
    with pytest.raises(ValueError, match="no model here"):
        load_model(tmp_path, torch.device("cpu"))


def tiny_model(folder):
    torch.manual_seed(0)
    info = {"kind": "network", "in_channels": 1, "num_classes": 3, "patch": [32, 32, 16],
            "stride": 16, "plan": PLAN.model_dump(mode="json")}  # fmt: skip
    write_model(folder, C2FNet(TINY, 1, 3), TINY, info)
    return folder


def test_predicting_into_the_input_folder_is_refused_and_keeps_the_images(tmp_path):
    image_path, _ = write_case(tmp_path / "data", "case.nii.gz", (20, 20, 20), (1.0, 1.0, 1.0))
    images = image_path.parent
    original = image_path.read_bytes()
    result = CliRunner().invoke(app, ["predict", "-m", str(tiny_model(tmp_path / "model")),
                                      "-i", str(images), "-o", str(images)])  # fmt: skip
    assert result.exit_code == 2
    assert "would overwrite the input images" in result.output and "case.nii.gz" in result.output
    assert image_path.read_bytes() == original


def test_an_output_folder_reaching_the_inputs_through_a_link_is_refused(tmp_path):
    image_path, _ = write_case(tmp_path / "data", "case.nii.gz", (20, 20, 20), (1.0, 1.0, 1.0))
    linked = tmp_path / "linked"
    linked.symlink_to(image_path.parent)
    one_file = tmp_path / "one_file"
    one_file.mkdir()
    (one_file / "case.nii.gz").symlink_to(image_path)
    for out_dir in (linked, one_file, tmp_path / "data" / "imagesTr" / "."):
        # refused before anything is loaded: the model folder does not even exist
        with pytest.raises(ValueError, match="would overwrite the input images of"):
            predict_folder([tmp_path / "no_model"], image_path.parent, out_dir)
    with pytest.raises(ValueError, match="no model here"):  # a sibling folder is fine
        predict_folder([tmp_path / "no_model"], image_path.parent, tmp_path / "out")


def test_an_output_that_is_a_file_is_refused_before_any_model_loads(tmp_path):
    image_path, _ = write_case(tmp_path / "data", "case.nii.gz", (20, 20, 20), (1.0, 1.0, 1.0))
    existing = tmp_path / "labels.nii.gz"
    existing.write_bytes(b"a file the user meant to keep")
    # the model folder does not even exist: the output is checked first
    with pytest.raises(ValueError, match="labels.nii.gz: a file, not a folder"):
        predict_folder([tmp_path / "no_model"], image_path.parent, existing)
    assert existing.read_bytes() == b"a file the user meant to keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_before_any_model_loads(tmp_path):
    image_path, _ = write_case(tmp_path / "data", "case.nii.gz", (20, 20, 20), (1.0, 1.0, 1.0))
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="read_only: cannot write the label maps there"):
            predict_folder([tmp_path / "no_model"], image_path.parent, read_only)
        with pytest.raises(ValueError, match="cannot write the label maps there"):
            predict_folder([tmp_path / "no_model"], image_path.parent, read_only / "inner")
    finally:
        read_only.chmod(0o755)


def test_saved_probabilities_sum_to_one_and_their_argmax_is_the_written_label(tmp_path):
    # oblique, anisotropic voxels resampled to 1 mm: the probabilities are interpolated
    image_path, _ = write_case(tmp_path / "data", "odd.nii.gz", (23, 30, 17), (0.7, 1.3, 2.1))

    def intensity_classes(x):  # confident, smooth in the intensity
        return torch.cat([-4 * x, torch.zeros_like(x), 4 * x - 2], dim=1)

    model = LoadedModel(intensity_classes, PLAN, (16, 16, 16))
    summary = predict_folder([], image_path.parent, tmp_path / "out", models=[model], stride=8,
                             precision="fp32", save_probabilities=True)  # fmt: skip
    assert not summary.failed
    label = np.asarray(nib.load(tmp_path / "out" / "odd.nii.gz").dataobj)
    with np.load(tmp_path / "out" / "odd.npz") as saved:
        probabilities, values = saved["probabilities"], saved["labels"]
    assert probabilities.dtype == np.float16 and list(values) == [0, 1, 2]
    assert probabilities.shape == (3, *nib.load(image_path).shape)
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(0), 1.0, atol=2e-3)
    assert len(np.unique(label)) == 3  # every class present: a real test of the argmax
    argmax = values[probabilities.argmax(0)]
    # float16 can round two near-equal classes to a tie; the written class is then among them
    agree = argmax == label
    assert agree.mean() > 0.999
    chosen = np.take_along_axis(probabilities, np.searchsorted(values, label)[None], 0)[0]
    assert (chosen[~agree] == probabilities.max(0)[~agree]).all()


def test_mirroring_changes_nothing_for_a_mirror_equivariant_network(tmp_path):
    from tests.inference.test_sliding_window import SymmetricNetwork

    image_path, _ = write_case(tmp_path / "data", "case.nii.gz", (27, 31, 19), (1.0, 1.0, 1.0))
    model = LoadedModel(SymmetricNetwork().eval(), PLAN, (16, 16, 16))
    for tta in (False, True):
        predict_folder([], image_path.parent, tmp_path / f"tta_{tta}", models=[model], stride=8,
                       precision="fp32", tta=tta, save_probabilities=True)  # fmt: skip
    folders = [tmp_path / "tta_False", tmp_path / "tta_True"]
    plain, mirrored = (np.load(folder / "case.npz")["probabilities"] for folder in folders)
    np.testing.assert_allclose(mirrored.astype(float), plain.astype(float), atol=2e-3)
    assert np.array_equal(*(nib.load(folder / "case.nii.gz").get_fdata() for folder in folders))
