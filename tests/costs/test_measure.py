"""The one measured training step: ``c2fnas profile``, ``c2fnas plan`` and the coarse search's
compute estimate all time it."""

import json

import torch
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.costs import measure
from c2fnas.costs import search as search_estimate
from c2fnas.costs.measure import Measurement
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.planning import plan as plan_module
from c2fnas.space import Architecture

runner = CliRunner()


def test_profile_and_plan_time_the_same_step(tmp_path, monkeypatch):
    """Both measure with ``costs.measure.measure_step``: the same network, patch, batch,
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


def test_the_plan_and_the_search_estimate_import_the_one_measured_step():
    assert plan_module.measure_step is measure.measure_step
    assert search_estimate.measure_step is measure.measure_step


def test_the_measured_step_is_the_median_after_the_warm_up_steps(monkeypatch):
    """The first steps pay for allocations and kernel selection (on a CPU the second too):
    untimed, they do not reach the plan; of the timed ones a spike does not either."""
    seconds = iter([9.0, 5.0, 0.2, 0.4, 0.1])
    monkeypatch.setattr(
        measure, "training_step", lambda *_: (torch.nn.Identity(), lambda: next(seconds))
    )
    monkeypatch.setattr(measure, "seconds_per_window", lambda *_: 0.01)
    architecture = Architecture.coarse(plan_module.REFERENCE_LEVELS, 0.25)
    measured = measure.measure_step(
        architecture, 1, 2, (16, 16, 16), 2, 1, "fp32", torch.device("cpu")
    )
    assert measure.WARMUP_STEPS == 2
    assert measured.step_seconds == 0.2 and measured.window_seconds == 0.01
    assert next(seconds, None) is None  # all three timed steps were taken
