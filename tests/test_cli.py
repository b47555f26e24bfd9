import json

import torch
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.planning import plan as plan_module
from c2fnas.space import Architecture
from c2fnas.training import measure
from c2fnas.training.measure import Measurement

runner = CliRunner()


def test_profile_json(panc_path):
    result = runner.invoke(
        app, ["profile", str(panc_path), "--patch", "32", "32", "32", "--width", "0.25", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["patch"] == [32, 32, 32]
    assert report["architecture"]["width"] == 0.25
    assert report["params"] > 0 and report["macs"] > 0 and report["step_seconds"] > 0
    assert report["window_seconds"] > 0 and report["precision"] in ("fp32", "bf16")


def test_profile_table_and_default_patch(panc_path):
    result = runner.invoke(app, ["profile", str(panc_path), "--no-timing"])
    assert result.exit_code == 0, result.output
    assert "17.02 M" in result.stdout and "150.02 G" in result.stdout


def test_profile_bad_input_is_a_clear_error(panc_path, tmp_path):
    result = runner.invoke(app, ["profile", str(panc_path), "--patch", "30", "32", "32"])
    assert result.exit_code == 2 and "divisible by 16" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = runner.invoke(app, ["profile", str(bad)])
    assert result.exit_code == 2 and str(bad) in result.stderr.replace("\n", "")


def test_profile_and_plan_time_the_same_step(tmp_path, monkeypatch):
    """Both measure with ``training.measure.measure_step``: the same network, patch, batch,
    precision and device give the same call, so the two commands cannot disagree."""
    calls = []

    def fake_measure(*arguments):
        calls.append(arguments)
        return Measurement(0.123, 0.0045, None)

    monkeypatch.setattr(measure, "measure_step", fake_measure)
    monkeypatch.setattr(plan_module, "measure_step", fake_measure)
    dataset = make_synthetic_dataset(tmp_path / "data", cases=4, shape=(32, 32, 16))
    plan = plan_module.plan_run(dataset, tmp_path / "run", device=torch.device("cpu"),
                                memory_bytes=2**33, folds=[0])  # fmt: skip
    step = next(c for c in plan.choices if c.setting == "training step")
    assert step.value == "0.123 s"
    planned = calls[-1]
    architecture = Architecture.coarse(plan_module.REFERENCE_LEVELS, plan.config.search.width)
    architecture.save(tmp_path / "reference.json")
    patch = [str(side) for side in plan.config.data.patch]
    batch = str(plan.config.data.batch_size)
    arguments = ["profile", str(tmp_path / "reference.json"), "--patch", *patch, "--batch", batch]
    result = runner.invoke(app, [*arguments, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["step_seconds"] == 0.123
    assert calls[-1] == planned
