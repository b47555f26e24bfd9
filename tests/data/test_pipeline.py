import builtins
import errno
import json
import os
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from c2fnas.data.cache import CacheError, case_paths, load_case
from c2fnas.data.check import check_dataset
from c2fnas.data.msd import DatasetError
from c2fnas.data.pipeline import PreprocessError, parse_spacing, preprocess_dataset, verify_cache
from c2fnas.data.preprocess import Plan

from .conftest import save

IDS = [f"synth_{i:03d}" for i in range(6)]


@pytest.fixture
def dataset(synthetic, tmp_path):
    return shutil.copytree(synthetic, tmp_path / "dataset")


def test_run_folder_contents(run_dir, synthetic):
    source = json.loads((run_dir / "dataset.json").read_text())
    assert source["source"] == str(synthetic.resolve())
    fingerprint = json.loads((run_dir / "fingerprint.json").read_text())
    assert fingerprint["cases"].keys() == set(IDS)
    median = fingerprint["spacing"]["median"]
    assert median[0] < 1.0 < median[2]  # the synthetic voxels are about 0.9 x 0.9 x 1.8 mm
    frequency = fingerprint["class_frequency"]
    assert set(frequency) == {"0", "1", "2"} and abs(sum(frequency.values()) - 1) < 1e-9
    image, label, properties = load_case(run_dir, IDS[0])
    assert image.dtype == np.float32 and image.ndim == 4 and image.shape[0] == 1
    assert label.dtype == np.uint8 and label.shape == image.shape[1:]
    assert properties["spacing"] == [1.0, 1.0, 1.0] and properties["case_id"] == IDS[0]
    assert not list(run_dir.rglob(".*tmp*"))  # no temporary files left behind


def test_reruns_skip_and_redo_what_changed(dataset, tmp_path):
    run = tmp_path / "run"
    assert len(preprocess_dataset(dataset, run).written) == 6
    again = preprocess_dataset(dataset, run)
    assert again.written == [] and len(again.skipped) == 6

    npz, _ = case_paths(run, IDS[1])
    npz.write_bytes(npz.read_bytes()[:-100])  # truncated
    npz2, _ = case_paths(run, IDS[2])
    payload = bytearray(npz2.read_bytes())
    payload[len(payload) // 2] ^= 0xFF  # same size, one flipped byte
    npz2.write_bytes(bytes(payload))
    image = dataset / "imagesTr" / f"{IDS[3]}.nii.gz"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    summary = preprocess_dataset(dataset, run)
    assert sorted(summary.written) == IDS[1:4]
    load_case(run, IDS[1])  # readable again

    summary = preprocess_dataset(dataset, run, spacing=(2.0, 2.0, 2.0))
    assert len(summary.written) == 6  # a new plan redoes everything
    assert Plan.load(run).spacing == (2.0, 2.0, 2.0)


def test_one_bad_case_does_not_stop_the_others(dataset, tmp_path):
    bad = dataset / "labelsTr" / f"{IDS[4]}.nii.gz"
    bad.write_bytes(bad.read_bytes()[:40])
    run = tmp_path / "run"
    with pytest.raises(PreprocessError, match=IDS[4]) as error:
        preprocess_dataset(dataset, run)
    assert "1 case(s) failed" in str(error.value)
    for case_id in IDS[:4] + IDS[5:]:
        load_case(run, case_id)
    with pytest.raises(CacheError, match=IDS[4]):
        load_case(run, IDS[4])


def test_a_case_that_failed_its_checks_is_named_as_a_source_problem_not_a_cache_one(
    dataset, tmp_path
):
    bad = dataset / "labelsTr" / f"{IDS[4]}.nii.gz"
    bad.write_bytes(bad.read_bytes()[:40])
    run = tmp_path / "run"
    with pytest.raises(PreprocessError):
        preprocess_dataset(dataset, run)
    plan = Plan.load(run)
    verify_cache(run, IDS[:4], plan)  # the cases that passed are usable
    with pytest.raises(CacheError, match="failed the data checks when preprocessed") as error:
        verify_cache(run, IDS, plan)
    assert IDS[4] in str(error.value) and "c2fnas data check" in str(error.value)
    assert "Rebuild it with" not in str(error.value)  # preprocessing cannot fix a source file


def test_workers_give_the_same_cache(dataset, tmp_path, run_dir):
    preprocess_dataset(dataset, tmp_path / "run", workers=2)
    for case_id in IDS[:2]:
        first, label, _ = load_case(run_dir, case_id)
        second, label2, _ = load_case(tmp_path / "run", case_id)
        np.testing.assert_array_equal(first, second)
        np.testing.assert_array_equal(label, label2)


def test_progress_callback(dataset, tmp_path):
    calls = []
    preprocess_dataset(dataset, tmp_path / "run", progress=lambda *a: calls.append(a))
    assert ("fingerprint", 6, 6) in calls and ("preprocess", 6, 6) in calls


def test_auto_spacing_and_ct(tmp_path):
    from c2fnas.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "ct", cases=5, shape=(20, 20, 10), modalities=["CT"])
    plan = preprocess_dataset(root, tmp_path / "run", spacing="auto").plan
    fingerprint = json.loads((tmp_path / "run" / "fingerprint.json").read_text())
    assert list(plan.spacing) == fingerprint["spacing"]["median"]
    rule = plan.normalization[0]
    assert rule.scheme == "ct" and rule.clip[0] < rule.mean < rule.clip[1]
    assert 30 < rule.mean < 130  # organ and lesion HU of the synthetic CT, not air


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (["auto"], "auto"),
        (["1.5"], (1.5, 1.5, 1.5)),
        (["0.8", "0.8", "2.5"], (0.8, 0.8, 2.5)),
        (["0.8,0.8,2.5"], (0.8, 0.8, 2.5)),
    ],
)
def test_parse_spacing(values, expected):
    assert parse_spacing(values) == expected


@pytest.mark.parametrize("values", [["1", "2"], ["-1"], ["fast"], ["1", "0", "1"]])
def test_parse_spacing_rejects(values):
    with pytest.raises(ValueError, match="--spacing"):
        parse_spacing(values)


def test_cached_case_ids(run_dir, tmp_path):
    from c2fnas.data.pipeline import cached_case_ids

    assert cached_case_ids(run_dir) == IDS
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        cached_case_ids(tmp_path)


def test_a_killed_run_is_finished_cleanly(dataset, tmp_path):
    run = tmp_path / "run"
    preprocess_dataset(dataset, run)
    npz, json_path = case_paths(run, IDS[0])
    json_path.unlink()  # killed between writing the arrays and the properties
    stale = npz.with_name(f".{npz.name}.tmp999")
    stale.write_bytes(b"half")  # killed while writing
    summary = preprocess_dataset(dataset, run)
    assert summary.written == [IDS[0]] and not stale.exists()
    load_case(run, IDS[0])


def replace_image(path, change):
    """Rewrite a NIfTI file with ``change(data)`` (float32), keeping its affine."""
    image = nib.load(str(path))
    save(path, change(image.get_fdata(dtype=np.float32)), image.affine)


def test_a_ct_case_with_nan_is_refused_and_damages_no_other(tmp_path):
    from c2fnas.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "ct", cases=4, shape=(20, 20, 10), modalities=["CT"])
    label = nib.load(str(root / "labelsTr" / "synth_001.nii.gz")).get_fdata() > 0

    def nan_in_foreground(data):
        data[label] = np.nan
        return data

    replace_image(root / "imagesTr" / "synth_001.nii.gz", nan_in_foreground)
    run = tmp_path / "run"
    with pytest.raises(PreprocessError, match="synth_001: .*NaN or infinite") as error:
        preprocess_dataset(root, run)
    assert "1 case(s) failed" in str(error.value)
    text = (run / "plan.json").read_text()
    assert "null" not in text and "NaN" not in text
    rule = Plan.load(run).normalization[0]
    assert rule.scheme == "ct" and np.isfinite([*rule.clip, rule.mean, rule.std]).all()
    for case_id in ("synth_000", "synth_002", "synth_003"):
        image, _, _ = load_case(run, case_id)
        assert np.isfinite(image).all(), case_id
    assert "synth_001" not in json.loads((run / "fingerprint.json").read_text())["cases"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [("undeclared", "label values [5] are not declared"), ("affine", "affines differ by up to 5")],
)
def test_preprocess_refuses_what_data_check_rejects(dataset, tmp_path, damage, message):
    label_path = dataset / "labelsTr" / f"{IDS[2]}.nii.gz"
    label = nib.load(str(label_path))
    data, affine = np.asarray(label.dataobj).astype(np.uint8), label.affine.copy()
    if damage == "undeclared":
        data[0, 0, 0] = 5
    else:
        affine[0, 3] += 5.0  # 5 mm off the image
    save(label_path, data, affine)
    assert any(message in p for p in check_dataset(dataset).bad_cases[0].problems)
    run = tmp_path / "run"
    with pytest.raises(PreprocessError, match=rf"{IDS[2]}: .*{re.escape(message)}"):
        preprocess_dataset(dataset, run)
    with pytest.raises(CacheError, match=IDS[2]):
        load_case(run, IDS[2])
    for case_id in IDS[:2] + IDS[3:]:
        load_case(run, case_id)


class FullDisk:
    """A file whose writes stop after a few bytes with "no space left on device"."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.handle.close()

    def write(self, data):
        self.handle.write(data[:7])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.handle, name)


def fail_writing(monkeypatch, folder, read_only):
    """Files opened for writing under ``folder`` cannot be created (``read_only``) or fill the
    disk once written to; other files are untouched."""
    real_open = builtins.open

    def fake_open(file, mode="r", *args, **kwargs):
        if "w" not in mode or not str(file).startswith(str(folder)):
            return real_open(file, mode, *args, **kwargs)
        if read_only:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return FullDisk(real_open(file, mode, *args, **kwargs))

    monkeypatch.setattr(builtins, "open", fake_open)


def test_a_failed_replan_on_a_full_disk_keeps_plan_and_cache_together(
    dataset, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    preprocess_dataset(dataset, run)
    cache_dir = run / "preprocessed"
    with monkeypatch.context() as patch:
        fail_writing(patch, cache_dir, read_only=False)
        with pytest.raises(PreprocessError, match="No space left on device") as error:
            preprocess_dataset(dataset, run, spacing=(1.5, 1.5, 1.5))
    assert Plan.load(run).spacing == (1.0, 1.0, 1.0)  # still the plan of the cache
    for case_id in IDS:
        assert load_case(run, case_id)[2]["spacing"] == [1.0, 1.0, 1.0]
    assert not list(run.rglob(".*tmp*"))  # nothing left behind
    assert ".tmp" not in str(error.value)  # names the case files, not temporary ones
    assert f"{case_paths(run, IDS[0])[0]}: cannot write" in str(error.value)


def test_a_read_only_cache_folder_is_found_before_any_case_is_read(dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    calls = []
    fail_writing(monkeypatch, run / "preprocessed", read_only=True)
    with pytest.raises(OSError, match="Permission denied") as error:
        preprocess_dataset(dataset, run, progress=lambda *a: calls.append(a))
    monkeypatch.undo()
    assert str(error.value).startswith(f"{run / 'preprocessed'}: cannot write")
    assert calls == [] and not (run / "plan.json").exists()
    assert not list(run.rglob(".*tmp*"))


def test_no_training_cases_is_said_clearly(tmp_path):
    description = {"modality": {"0": "MR"}, "labels": {"0": "background"}, "training": []}
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(DatasetError, match="'training' lists no cases"):
        preprocess_dataset(tmp_path, tmp_path / "run")
    report = check_dataset(tmp_path)
    assert not report.ok and "'training' lists no cases" in report.problems[0]


@pytest.mark.parametrize("listed", [True, False])
def test_a_test_image_named_like_a_training_case_is_refused_as_data_check_does(
    dataset, tmp_path, listed
):
    """Listed in dataset.json or only found in imagesTs, it would be predicted under the name
    of a training case: ``data check`` refuses it, so must ``preprocess``."""
    shutil.copy(dataset / "imagesTr" / "synth_000.nii.gz", dataset / "imagesTs")
    if listed:
        description = json.loads((dataset / "dataset.json").read_text())
        description["test"] = ["./imagesTs/synth_000.nii.gz"]
        (dataset / "dataset.json").write_text(json.dumps(description))
    problems = [p for case in check_dataset(dataset).bad_cases for p in case.problems]
    assert "case id synth_000 is used by 2 entries" in problems
    with pytest.raises(DatasetError, match=r"more than one training or test case.*synth_000"):
        preprocess_dataset(dataset, tmp_path / "run")
    assert not (tmp_path / "run").exists()
