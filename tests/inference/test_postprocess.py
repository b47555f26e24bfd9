"""Post-processing chosen on out-of-fold cases, then applied by predict."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from c2fnas.data.preprocess import ChannelNormalization, Plan
from c2fnas.inference.postprocess import (
    Postprocessing,
    choose_from_files,
    choose_postprocessing,
    find_postprocessing,
    keep_largest_component,
)
from c2fnas.inference.predict import LoadedModel, predict_folder

SHAPE = (24, 24, 24)


def boxes(*corners, value=1, size=4):
    label = np.zeros(SHAPE, dtype=np.uint8)
    for x, y, z in corners:
        label[x : x + size, y : y + size, z : z + size] = value
    return label


def out_of_fold_cases():
    """Class 1: the organ is one piece, predictions add a false island (the step helps).
    Class 2: the organ has two pieces, predictions find both (the step would cut a true one)."""
    cases = []
    for shift in range(3):
        reference = boxes((2 + shift, 2, 2), size=8) + boxes((2, 14, 2), (14, 14, 14), value=2)
        prediction = reference.copy()
        prediction[18:21, 2:5, 18:21] = 1  # false island of class 1
        cases.append((prediction, reference))
    return cases


def test_the_largest_component_is_kept_only_where_out_of_fold_dice_rises():
    chosen = choose_postprocessing(out_of_fold_cases(), labels=[1, 2])
    assert chosen.largest_component == (1,)
    assert chosen.classes[1].dice_largest_component == 1.0 > chosen.classes[1].dice
    assert chosen.classes[2].dice_largest_component < chosen.classes[2].dice == 1.0
    with pytest.raises(ValueError, match="at least one"):
        choose_postprocessing([], labels=[1, 2])


def test_keep_largest_component_sets_the_rest_to_background():
    label = boxes((2, 2, 2), size=6) + boxes((14, 14, 14), size=3) + boxes((14, 2, 2), value=2)
    kept = keep_largest_component(label, 1)
    assert (kept[14:17, 14:17, 14:17] == 0).all() and (kept[2:8, 2:8, 2:8] == 1).all()
    assert np.array_equal(kept == 2, label == 2)


def write(folder, name, label):
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(label, np.eye(4)), folder / name)
    return folder / name


class Threshold(torch.nn.Module):
    """Logits from intensity: 10 -> class 1, 20 -> class 2, else background."""

    def forward(self, x):
        return torch.cat([-((x - v) ** 2) for v in (0.0, 10.0, 20.0)], dim=1)


def test_predict_removes_a_planted_island_only_in_the_class_that_gained(tmp_path):
    pairs = [
        (write(tmp_path / "oof", f"case_{i}.nii.gz", prediction),
         write(tmp_path / "ref", f"case_{i}.nii.gz", reference))
        for i, (prediction, reference) in enumerate(out_of_fold_cases())
    ]  # fmt: skip
    run = tmp_path / "run"
    choose_from_files(pairs, [1, 2], run / "postprocessing.json")
    assert json.loads((run / "postprocessing.json").read_text())["largest_component"] == [1]

    # a new image: a big class-1 body with an island, and two class-2 pieces
    truth = boxes((2, 2, 2), size=8) + boxes((18, 18, 18), size=3)
    truth += boxes((2, 14, 14), (14, 2, 14), value=2)
    image = write(tmp_path / "images", "new.nii.gz", (truth * 10.0).astype(np.float32))
    plan = Plan(spacing=(1.0, 1.0, 1.0), normalization=[ChannelNormalization(scheme="ct",
                clip=(0.0, 30.0), mean=0.0, std=1.0)], modalities={0: "CT"},
                labels={0: "background", 1: "one", 2: "two"})  # fmt: skip
    model = LoadedModel(Threshold(), plan, (16, 16, 16))
    kept = predict_folder([], image.parent, tmp_path / "plain", models=[model], precision="fp32")
    assert not kept.failed
    plain = np.asarray(nib.load(tmp_path / "plain" / "new.nii.gz").dataobj)
    assert np.array_equal(plain, truth)  # both islands predicted
    predict_folder([], image.parent, tmp_path / "post", models=[model], precision="fp32",
                   postprocess=str(run / "postprocessing.json"))  # fmt: skip
    post = np.asarray(nib.load(tmp_path / "post" / "new.nii.gz").dataobj)
    assert (post[18:21, 18:21, 18:21] == 0).all()  # the class-1 island is gone
    assert np.array_equal(post == 2, truth == 2)  # both class-2 pieces stay
    assert np.array_equal(post[:12, :12, :12], truth[:12, :12, :12])


def test_auto_finds_the_run_folders_file_and_a_bad_file_is_named(tmp_path):
    model = tmp_path / "run" / "train" / "fold_0" / "best"
    model.mkdir(parents=True)
    assert find_postprocessing([model]) is None
    Postprocessing(largest_component=(2,)).save(tmp_path / "run" / "postprocessing.json")
    assert find_postprocessing([model]) == tmp_path / "run" / "postprocessing.json"
    (tmp_path / "bad.json").write_text('{"largest_component": "all"}')
    with pytest.raises(ValueError, match="bad.json: not a c2fnas post-processing file"):
        Postprocessing.load(tmp_path / "bad.json")
