"""``train`` checks the cache of its fold against ``plan.json`` before the first iteration."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.data import splits
from c2fnas.data.cache import CacheError, case_paths
from c2fnas.data.pipeline import cached_case_ids, preprocess_dataset
from c2fnas.data.preprocess import Plan
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.training.config import load_config
from c2fnas.training.run import train
from tests.training.synthetic import TINY

FOLD = 0


class Started(Exception):
    """Raised by the progress callback: training got as far as its first iteration."""


def never_started(done, total, metrics):
    raise Started


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    dataset = make_synthetic_dataset(root / "data", cases=5, shape=(24, 24, 12), test_cases=0)
    preprocess_dataset(dataset, root / "run")
    return root / "run"


@pytest.fixture
def run_dir(prepared, tmp_path):
    return shutil.copytree(prepared, tmp_path / "run")


def fold_cases(run_dir):
    fold = splits.load_or_create(run_dir, cached_case_ids(run_dir))[FOLD]
    return fold.train, fold.val


def train_fold(run_dir, tmp_path):
    config = load_config("smoke")
    return train(TINY, run_dir, FOLD, config, tmp_path / "out", progress=never_started)


def test_a_stale_plan_is_refused_naming_what_differs_and_the_fix(run_dir, tmp_path):
    # what a re-plan to 1.5 mm that could not write its cases used to leave behind
    plan = Plan.load(run_dir)
    plan.model_copy(update={"spacing": (1.5, 1.5, 1.5)}).save(run_dir)
    with pytest.raises(CacheError) as error:
        train_fold(run_dir, tmp_path)
    message = str(error.value)
    assert "spacing 1 x 1 x 1 mm, plan.json has 1.5 x 1.5 x 1.5 mm" in message
    source = json.loads((run_dir / "dataset.json").read_text())["source"]
    assert f"c2fnas preprocess {source} --run {run_dir} --spacing 1.5 1.5 1.5" in message
    assert not (tmp_path / "out" / "model.json").exists()


def test_a_damaged_validation_case_is_found_before_the_first_iteration(run_dir, tmp_path):
    _, val = fold_cases(run_dir)
    npz, _ = case_paths(run_dir, val[0])
    payload = bytearray(npz.read_bytes())
    payload[len(payload) // 2] ^= 0xFF  # same size, one flipped byte inside the image
    npz.write_bytes(bytes(payload))
    with pytest.raises(CacheError, match=f"{npz}: damaged"):
        train_fold(run_dir, tmp_path)


def test_another_cases_file_swapped_in_is_found(run_dir, tmp_path):
    train_ids, val = fold_cases(run_dir)
    target, other = case_paths(run_dir, val[0])[0], case_paths(run_dir, train_ids[0])[0]
    shutil.copyfile(other, target)
    with pytest.raises(CacheError, match=f"{target}: .*(replaced)"):
        train_fold(run_dir, tmp_path)


def test_the_cli_names_the_damaged_file_without_a_traceback(run_dir, tmp_path):
    train_ids, _ = fold_cases(run_dir)
    npz, _ = case_paths(run_dir, train_ids[0])
    npz.write_bytes(npz.read_bytes()[:-100])
    TINY.save(tmp_path / "tiny.json")
    result = CliRunner().invoke(
        app, ["train", str(run_dir), "--arch", str(tmp_path / "tiny.json"), "--fold", str(FOLD),
              "--preset", "smoke", "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    stderr = result.stderr.replace("\n", "")  # rich wraps long lines
    assert str(npz) in stderr and "truncated" in stderr
    assert "Traceback" not in result.output
