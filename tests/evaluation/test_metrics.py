import json
import math

import nibabel as nib
import numpy as np
import pytest

from c2fnas.evaluation.metrics import EvaluationError, evaluate_folders, summarize
from c2fnas.evaluation.report import write_csv, write_summary

SPACING = (2.0, 1.0, 1.0)


def save(folder, name, label, affine=None):
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*SPACING, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / name)


def cube(offset=0, value=1, shape=(20, 20, 20)):
    label = np.zeros(shape, dtype=np.uint8)
    label[5 + offset : 15 + offset, 5:15, 5:15] = value
    return label


def test_scores_in_mm_and_empty_conventions(tmp_path):
    save(tmp_path / "ref", "a.nii.gz", cube())
    save(tmp_path / "pred", "a.nii.gz", cube(offset=2))  # 2 voxels of 2 mm along x
    both_empty = np.zeros((20, 20, 20), dtype=np.uint8)
    reference_b = cube(value=2)
    save(tmp_path / "ref", "b.nii.gz", reference_b)
    save(tmp_path / "pred", "b.nii.gz", both_empty)
    scores = evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    by_key = {(s.case, s.label): s for s in scores}
    shifted = by_key[("a", 1)]
    assert shifted.dice == pytest.approx(0.8)
    assert shifted.hd95 == pytest.approx(4.0)  # mm, not voxels
    assert 0.0 < shifted.surface_dice < 1.0
    assert by_key[("a", 2)].dice == 1.0 and by_key[("a", 2)].hd95 == 0.0  # both empty
    missed = by_key[("b", 2)]
    assert missed.dice == 0.0 and math.isnan(missed.hd95) and missed.surface_dice == 0.0
    summary = summarize(scores)
    assert summary["labels"]["2"]["hd95_undefined"] == 1
    assert summary["labels"]["1"]["dice_mean"] == pytest.approx((0.8 + 1.0) / 2)
    write_csv(scores, tmp_path / "scores.csv")
    write_summary(summary, tmp_path / "summary.json")
    assert (tmp_path / "scores.csv").read_text().splitlines()[
        0
    ] == "case,label,dice,hd95,surface_dice"
    assert json.loads((tmp_path / "summary.json").read_text())["labels"]["2"]["hd95_std"] == 0.0


def test_identical_folders_score_perfectly_with_chosen_labels(tmp_path):
    for folder in ("pred", "ref"):
        save(tmp_path / folder, "a.nii.gz", cube())
    scores = evaluate_folders(tmp_path / "pred", tmp_path / "ref", labels=[1])
    assert [(s.dice, s.hd95, s.surface_dice) for s in scores] == [(1.0, 0.0, 1.0)]


def test_mismatched_sets_and_geometry_are_clear_errors(tmp_path):
    save(tmp_path / "ref", "a.nii.gz", cube())
    save(tmp_path / "ref", "b.nii.gz", cube())
    save(tmp_path / "pred", "a.nii.gz", cube())
    save(tmp_path / "pred", "c.nii.gz", cube())
    with pytest.raises(EvaluationError, match=r"no prediction for \['b.nii.gz'\].*\['c.nii.gz'\]"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    (tmp_path / "pred" / "c.nii.gz").unlink()
    save(tmp_path / "pred", "b.nii.gz", cube(shape=(20, 20, 21)))
    with pytest.raises(EvaluationError, match="b.nii.gz: shape"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    save(tmp_path / "pred", "b.nii.gz", cube(), affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(EvaluationError, match="b.nii.gz: affine differs"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")
