"""The whole chain through the CLI on a tiny synthetic dataset: train, resume, predict, evaluate."""

import json

import nibabel as nib
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.synth import make_synthetic_dataset
from tests.training.synthetic import TINY

runner = CliRunner()


def stderr(result):
    """Rich wraps long lines at the terminal width; join them back."""
    return result.stderr.replace("\n", "")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    dataset = make_synthetic_dataset(root / "data", cases=5, shape=(32, 32, 24), test_cases=1)
    preprocess_dataset(dataset, root / "run")
    TINY.save(root / "tiny.json")
    return root


@pytest.mark.slow
def test_train_resume_predict_evaluate(run):
    arguments = ["train", str(run / "run"), "--arch", str(run / "tiny.json"), "--fold", "4",
                 "--preset", "smoke"]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    fold = run / "run" / "train" / "fold_4"
    assert "validation Dice" in result.stdout and (fold / "best" / "model.json").is_file()
    info = json.loads((fold / "best" / "model.json").read_text())
    assert info["fold"] == 4 and info["plan"]["labels"] and len(info["dice"]) == 2

    again = runner.invoke(app, arguments)
    assert again.exit_code == 2 and "--resume" in stderr(again)
    # resuming a finished run trains nothing more (an interrupted one: test_kill_resume.py)
    finished = load_file(str(fold / "last" / "model.safetensors"))
    resumed = runner.invoke(app, [*arguments, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    for key, value in load_file(str(fold / "last" / "model.safetensors")).items():
        assert torch.equal(value, finished[key]), key

    images = run / "data" / "imagesTr"
    out = run / "pred"
    predicted = runner.invoke(
        app, ["predict", "-m", str(fold), "-m", str(fold / "last"), "-i", str(images),
              "-o", str(out), "--stride", "16", "--ensemble", "mean"],
    )  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    for image in images.iterdir():
        assert nib.load(out / image.name).shape == nib.load(image).shape

    evaluated = runner.invoke(
        app, ["evaluate", str(out), str(run / "data" / "labelsTr"), "--labels", "1", "2",
              "--json", str(run / "summary.json")],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["labels"]) == {"1", "2"} and summary["labels"]["1"]["cases"] == 5
    assert (out / "evaluation.csv").read_text().count("\n") == 1 + 5 * 2


def test_user_errors_are_one_red_line(run, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  iteratoins: 3\n")
    result = runner.invoke(
        app, ["train", str(run / "run"), "--arch", str(run / "tiny.json"), "--fold", "0",
              "--config", str(bad), "--out", str(tmp_path / "x")],
    )  # fmt: skip
    assert result.exit_code == 2 and "iteratoins" in stderr(result) and str(bad) in stderr(result)
    images = str(run / "data" / "imagesTr")
    result = runner.invoke(
        app, ["predict", "-m", str(tmp_path), "-i", images, "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "no model here" in stderr(result)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["evaluate", str(empty), str(run / "data" / "labelsTr")])
    assert result.exit_code == 2 and "no prediction for" in stderr(result)
