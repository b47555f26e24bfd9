"""``c2fnas run``: every stage on a tiny synthetic dataset, resume, and a bad dataset."""

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.costs.solve import MIN_LATE_FOLD_ITERATIONS
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.files.run_state import RESULT_TYPES, CheckResult, Refit, RunState, TrainResult
from c2fnas.pipeline import DEFAULT_STAGES, STAGES, Pipeline, dataset_identity
from c2fnas.space import C2FNAS_PANC, Architecture
from c2fnas.training.config import load_config
from c2fnas.training.loop import Timings
from c2fnas.training.loop import TrainResult as FitResult
from tests.training.synthetic import TINY as TINY_ARCHITECTURE

runner = CliRunner()
TINY = """
training:
  iterations: 2
  milestones: [1]
  validate_every: 2
  checkpoint_every: 2
  stride: 16
search:
  coarse_networks: 2
  fine_candidates: 2
  iterations: 1
  milestones: []
  width: 0.125
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    make_synthetic_dataset(root / "data", cases=5, shape=(32, 32, 24), test_cases=2)
    (root / "tiny.yaml").write_text(TINY)
    return root


def _run(dataset, run_dir, *extra):
    arguments = ["run", str(dataset / "data"), "--run", str(run_dir), "--preset", "smoke"]
    return runner.invoke(app, [*arguments, "--config", str(dataset / "tiny.yaml"), *extra])


@pytest.fixture(scope="module")
def finished_run(dataset):
    run_dir = dataset / "run"
    return run_dir, _run(dataset, run_dir)


@pytest.mark.slow
def test_every_stage_runs_and_writes_its_outputs(dataset, finished_run):
    run_dir, result = finished_run
    assert result.exit_code == 0, result.output
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert list(state) == list(DEFAULT_STAGES)
    assert len(state["train"]["fold_dice"]) == 5
    for path in (
        "coarse/best_topology.json", "fine/best_architecture.json", "fine/supernet/last",
        "train/fold_4/best/model.safetensors", "evaluation/summary.json", "report.md",
        "report.html", "architecture.png", "postprocessing.json",
    ):  # fmt: skip
        assert (run_dir / path).exists(), path
    # every training case predicted once, out of fold: the choice of post-processing
    assert len(list((run_dir / "crossval").glob("*.nii.gz"))) == 5
    for image in (dataset / "data" / "imagesTs").glob("*.nii.gz"):
        source, prediction = nib.load(image), nib.load(run_dir / "predictions" / image.name)
        assert prediction.shape == source.shape
        np.testing.assert_allclose(prediction.affine, source.affine)
    report = (run_dir / "report.md").read_text()
    for heading in ("Time per stage", "Searched architecture", "Coarse stage", "Fine stage",
                    "validation Dice per fold", "ensemble of 5 fold(s)",
                    "Post-processing chosen on cross-validation"):  # fmt: skip
        assert heading in report
    assert "test set, fold ensemble" in result.stdout


@pytest.mark.slow
def test_a_rerun_skips_finished_stages(dataset, finished_run):
    run_dir, first = finished_run
    assert first.exit_code == 0, first.output
    before = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    again = _run(dataset, run_dir)
    assert again.exit_code == 0, again.output
    after = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert {k: v for k, v in after.items() if k != "report"} == {
        k: v for k, v in before.items() if k != "report"
    }
    assert again.stderr.count("done before, skipped") == len(DEFAULT_STAGES) - 1


@pytest.mark.slow
def test_a_changed_configuration_is_refused_on_resume(dataset, finished_run):
    run_dir, first = finished_run
    assert first.exit_code == 0, first.output
    other = dataset / "other.yaml"
    other.write_text(TINY.replace("coarse_networks: 2", "coarse_networks: 3"))
    arguments = ["run", str(dataset / "data"), "--run", str(run_dir), "--preset", "smoke"]
    result = runner.invoke(app, [*arguments, "--config", str(other)])
    assert result.exit_code == 1
    assert "another configuration" in result.stderr.replace("\n", " ")


def test_a_run_folder_written_before_the_run_state_resumes(dataset, tmp_path):
    """``pipeline.json`` as ``c2fnas run`` wrote it before ``RunState`` (no version), for a
    run of this very dataset: every finished stage is skipped and its result summarised."""
    old = Path(__file__).parent / "files" / "data" / "pipeline_v0.json"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(old, run_dir / "pipeline.json")
    recorded = RunState.read(run_dir / "pipeline.json").dataset
    assert recorded is not None and recorded.sha256 == dataset_identity(dataset / "data").sha256
    finished = [stage for stage in DEFAULT_STAGES if stage != "report"]  # report always reruns
    result = _run(dataset, run_dir, *(f"--stages={stage}" for stage in finished))
    assert result.exit_code == 0, result.output
    assert all(f"{stage}: done before, skipped" in result.stderr for stage in finished)
    assert "fold Dice 0.082, 0.066, 0.069, 0.071, 0.063" in result.stdout
    assert "largest component kept for classes [1]" in result.stdout
    state = RunState.read(run_dir / "pipeline.json")
    assert state.stages == RunState.read(old).stages  # nothing ran, nothing rewritten
    assert state.dataset is not None and state.dataset.path == str(dataset / "data")


def test_a_bad_dataset_stops_at_the_check_naming_the_case(tmp_path):
    root = make_synthetic_dataset(tmp_path / "data", cases=3, shape=(16, 16, 16))
    (root / "labelsTr" / "synth_001.nii.gz").write_bytes(b"not a nifti file")
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["run", str(root), "--run", str(run_dir), "--preset", "smoke"])
    assert result.exit_code == 1
    message = result.stderr.replace("\n", " ")
    assert "check:" in message and "synth_001" in message
    assert not (run_dir / "preprocessed").exists()
    assert (
        "check" not in json.loads((run_dir / "pipeline.json").read_text())["stages"]
        if (run_dir / "pipeline.json").exists()
        else True
    )


def test_unknown_stage_is_refused(tmp_path):
    root = make_synthetic_dataset(tmp_path / "data", cases=2, shape=(16, 16, 16))
    result = runner.invoke(app, ["run", str(root), "--run", str(tmp_path / "r"), "--stages", "x"])
    assert result.exit_code == 1 and "unknown stage" in result.stderr


def _check(dataset_dir, run_dir):
    return runner.invoke(
        app, ["run", str(dataset_dir), "--run", str(run_dir), "--preset", "smoke", "--stages",
              "check"],
    )  # fmt: skip


def test_an_unknown_search_mode_is_refused_before_anything_runs(tmp_path):
    dataset_dir = make_synthetic_dataset(tmp_path / "data", cases=3, shape=(16, 16, 16))
    result = runner.invoke(app, ["run", str(dataset_dir), "--run", str(tmp_path / "run"),
                                 "--preset", "smoke", "--search", "maybe"])  # fmt: skip
    assert result.exit_code == 2 and "choose coarse, fine, none" in result.output
    assert not (tmp_path / "run" / "pipeline.json").exists()


def test_another_dataset_in_a_used_run_folder_is_refused(tmp_path):
    first = make_synthetic_dataset(tmp_path / "first", cases=2, shape=(16, 16, 16))
    second = make_synthetic_dataset(tmp_path / "second", cases=3, shape=(16, 16, 16))
    run_dir = tmp_path / "run"
    assert _check(first, run_dir).exit_code == 0
    result = _check(second, run_dir)
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())  # undo the console's line wrapping
    assert f"{run_dir} holds the run of the dataset {first} (2 training cases" in message
    assert f"{second} has 3 training cases" in message and "new run folder" in message
    recorded = json.loads((run_dir / "pipeline.json").read_text())["dataset"]
    assert recorded["path"] == str(first) and recorded["cases"] == 2
    again = _check(first, run_dir)  # the run's own dataset resumes; a moved copy of it too
    assert again.exit_code == 0 and "check: done before, skipped" in again.stderr
    moved = shutil.copytree(first, tmp_path / "moved")
    assert _check(moved, run_dir).exit_code == 0
    assert json.loads((run_dir / "pipeline.json").read_text())["dataset"]["path"] == str(moved)


def test_a_run_folder_from_before_the_dataset_record_is_checked_by_its_dataset_copy(tmp_path):
    first = make_synthetic_dataset(tmp_path / "first", cases=2, shape=(16, 16, 16))
    second = make_synthetic_dataset(tmp_path / "second", cases=3, shape=(16, 16, 16))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "pipeline.json").write_text('{"stages": {"check": {"done": true, "seconds": 1}}}')
    copy = {**json.loads((first / "dataset.json").read_text()), "source": str(first)}
    (run_dir / "dataset.json").write_text(json.dumps(copy, indent=4))  # formatting is no matter
    result = _check(second, run_dir)
    assert result.exit_code == 1
    assert f"holds the run of the dataset {first}" in " ".join(result.stderr.split())
    assert _check(first, run_dir).exit_code == 0


def test_the_dataset_folder_as_run_folder_is_refused(tmp_path):
    dataset = make_synthetic_dataset(tmp_path / "data", cases=2, shape=(16, 16, 16))
    original = (dataset / "dataset.json").read_bytes()
    arguments = ["run", str(dataset), "--run", str(dataset), "--preset", "smoke"]
    result = runner.invoke(app, [*arguments, "--stages", "check", "--stages", "preprocess"])
    assert result.exit_code == 1 and "is the dataset folder" in " ".join(result.stderr.split())
    assert (dataset / "dataset.json").read_bytes() == original  # preprocess would rewrite it


@pytest.mark.slow
def test_a_given_architecture_skips_the_search_and_trains_the_folds_asked_for(dataset, tmp_path):
    architecture = tmp_path / "tiny.json"
    TINY_ARCHITECTURE.with_width(0.25).save(architecture)  # trained at search.width, 0.125
    run_dir = tmp_path / "run"
    result = _run(dataset, run_dir, "--arch", str(architecture), "--folds", "0", "--folds", "2")
    assert result.exit_code == 0, result.output
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert "coarse" not in state and "fine" not in state
    assert state["train"]["folds"] == [0, 2] and len(state["train"]["fold_dice"]) == 2
    assert not (run_dir / "coarse").exists() and not (run_dir / "train" / "fold_1").exists()
    assert (run_dir / "architecture.json").read_text() == architecture.read_text()
    report = (run_dir / "report.md").read_text()
    assert "Architecture (given: no search)" in report and "ensemble of 2 fold(s)" in report
    assert "width 0.125" in report  # the width the folds trained at (search.width), not the file's
    assert len(list((run_dir / "predictions").glob("*.nii.gz"))) == 2

    # one more fold: only it trains, and the ensemble is predicted again with three
    first_predictions = (run_dir / "predictions").stat().st_mtime_ns
    more = _run(dataset, run_dir, "--arch", str(architecture), "--folds", "0", "--folds", "2",
                "--folds", "3")  # fmt: skip
    assert more.exit_code == 0, more.output
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert state["train"]["folds"] == [0, 2, 3]
    assert "ensemble of 3 fold(s)" in (run_dir / "report.md").read_text()
    assert "predict: done before" not in more.stderr
    assert (run_dir / "predictions").stat().st_mtime_ns >= first_predictions

    other = tmp_path / "other.json"
    TINY_ARCHITECTURE.with_ops(["2d"] * 12).save(other)
    refused = _run(dataset, run_dir, "--arch", str(other))
    assert refused.exit_code == 1 and "use a new run folder" in " ".join(refused.stderr.split())
    searched = _run(dataset, run_dir)  # without --arch: a search would mix into this run
    assert searched.exit_code == 1 and "--arch" in " ".join(searched.stderr.split())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fine", "none"])
def test_a_forced_search_mode_runs_only_its_stages_on_c2fnas_pancs_topology(
    dataset, tmp_path, mode
):
    run_dir = tmp_path / mode
    result = _run(dataset, run_dir, "--search", mode, "--folds", "0")
    assert result.exit_code == 0, result.output
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert "coarse" not in state and not (run_dir / "coarse").exists()
    assert ("fine" in state) == (mode == "fine")
    trained = Architecture.load(run_dir / "train" / "fold_0" / "best" / "architecture.json")
    assert trained.levels == C2FNAS_PANC.levels
    if mode == "none":
        assert trained.ops == C2FNAS_PANC.ops
    assert len(list((run_dir / "predictions").glob("*.nii.gz"))) == 2
    other = _run(dataset, run_dir, "--search", "coarse", "--folds", "0")
    assert other.exit_code == 1 and f"search.mode {mode} -> coarse" in " ".join(
        other.stderr.split()
    )


@pytest.mark.slow
def test_without_a_preset_the_run_is_planned_and_preprocessed_as_planned(dataset, tmp_path):
    architecture = tmp_path / "tiny.json"
    TINY_ARCHITECTURE.save(architecture)
    run_dir = tmp_path / "run"
    arguments = ["run", str(dataset / "data"), "--run", str(run_dir), "--arch", str(architecture),
                 "--time-budget", "20m", "--stages", "check", "--stages", "preprocess"]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    planned = load_config("paper", run_dir / "plan.yaml")
    assert (run_dir / "config.yaml").read_text() == planned.to_yaml()
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["spacing"] == pytest.approx(list(planned.data.spacing))
    state = json.loads((run_dir / "pipeline.json").read_text())
    assert set(state["planned"]) >= {"data", "training", "prediction"}
    assert "planned against spent" in result.stdout
    again = runner.invoke(app, arguments)  # a rerun keeps its plan: nothing is refused
    assert again.exit_code == 0, again.output
    both = runner.invoke(app, [*arguments, "--preset", "cpu"])
    assert both.exit_code == 2 and "--time-budget plans the run" in " ".join(both.stderr.split())


def test_the_configuration_chooses_the_folds_unless_given(tmp_path):
    config = load_config("smoke").with_fields("training", folds=[0, 2])
    assert Pipeline(tmp_path, tmp_path / "run", config).fold_ids == (0, 2)
    assert Pipeline(tmp_path, tmp_path / "run", config, folds=(1,)).fold_ids == (1,)
    with pytest.raises(ValueError, match="folds"):
        load_config("smoke").with_fields("training", folds=[3, 1])


def test_a_configuration_saved_before_a_setting_existed_still_resumes(tmp_path):
    """A run folder's config.yaml without a newer setting (here training.folds) holds its
    default: compared by value, the run resumes; a changed value is still refused."""
    config = load_config("smoke")
    pipeline = Pipeline(tmp_path, tmp_path / "run", config)
    (tmp_path / "run").mkdir()
    old = config.to_yaml().replace("  folds:\n  - 0\n  - 1\n  - 2\n  - 3\n  - 4\n", "")
    assert "folds" not in old
    pipeline.folder.config.write_text(old)
    assert pipeline._changed_settings(pipeline.folder.config) == []
    pipeline.folder.config.write_text(old.replace("seed: 0", "seed: 1"))
    assert pipeline._changed_settings(pipeline.folder.config) == ["training.seed 1 -> 0"]


@pytest.mark.parametrize(
    "order",
    [
        ["DATA", "--folds", "0", "2"],  # as README writes it
        ["--folds", "0", "2", "DATA"],
        ["DATA", "--folds", "2", "--folds", "0"],
    ],
)
def test_run_takes_folds_either_way_and_passes_the_grace_period(tmp_path, monkeypatch, order):
    seen = {}

    def run(self, stages):
        seen.update(folds=self.folds, grace_period=self.grace_period)
        return RunState()

    monkeypatch.setattr(Pipeline, "run", run)
    monkeypatch.setattr("c2fnas.cli.plan_run.print_run_summary", lambda run_dir, state: None)
    data = str(tmp_path / "data")
    arguments = ["run", *(data if token == "DATA" else token for token in order)]
    arguments += ["--run", str(tmp_path / "run"), "--preset", "smoke", "--grace-period", "120"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert seen == {"folds": (0, 2), "grace_period": 120}
    extra = runner.invoke(app, [*arguments[:-2], "elsewhere"])
    assert extra.exit_code == 2 and "expected one dataset folder" in extra.stderr


def test_the_pipeline_passes_its_grace_period_to_both_searches(tmp_path, monkeypatch):
    calls = {}

    def stage(name):
        def record(run_dir, config, **options):
            calls[name] = options["grace_period"]
            return SimpleNamespace(best=SimpleNamespace(score=0.5), evaluated=1)

        return record

    monkeypatch.setattr("c2fnas.pipeline.coarse_stage", stage("coarse"))
    monkeypatch.setattr("c2fnas.pipeline.fine_stage", stage("fine"))
    pipeline = Pipeline(tmp_path, tmp_path / "run", load_config("smoke"), grace_period=90)
    pipeline.stage_coarse()
    pipeline.stage_fine()
    assert calls == {"coarse": 90, "fine": 90}


def test_every_stage_has_one_method_and_one_result_type(tmp_path):
    pipeline = Pipeline(tmp_path, tmp_path / "run", load_config("smoke"))
    assert tuple(pipeline._stages()) == STAGES == tuple(RESULT_TYPES)


def test_hidden_files_alone_in_imagests_leave_nothing_to_predict(tmp_path):
    """A ``._CASE.nii.gz`` from a Mac is no test image: no model is asked to predict it."""
    (tmp_path / "imagesTs").mkdir()
    (tmp_path / "imagesTs" / "._case.nii.gz").write_bytes(b"\0\5\26\7 AppleDouble")
    result = Pipeline(dataset_dir=tmp_path, run_dir=tmp_path / "run").stage_predict()
    assert result.cases == 0


def _prepare(dataset_dir, run_dir, *extra):
    return runner.invoke(
        app, ["run", str(dataset_dir), "--run", str(run_dir), "--preset", "smoke", "--stages",
              "check", "--stages", "preprocess", *extra],
    )  # fmt: skip


def _edit(path):
    """Rewrite a NIfTI file with one voxel changed, and a modification time a second later."""
    image = nib.load(path)
    data = np.asanyarray(image.dataobj).copy()
    data.flat[0] = 1 - data.flat[0]
    before = path.stat().st_mtime_ns
    nib.save(nib.Nifti1Image(data, image.affine, image.header), path)
    os.utime(path, ns=(before + 10**9, before + 10**9))


@pytest.mark.parametrize("recorded_in", ["pipeline.json", "cache"])
def test_a_label_edited_after_training_is_refused_naming_the_file(tmp_path, recorded_in):
    """The stages after preprocessing were made from the old label: a rerun refuses, naming the
    file and the two ways on, rather than skipping every stage with the old results. Run folders
    from before ``pipeline.json`` recorded the sources are checked by the cache's record."""
    data = make_synthetic_dataset(tmp_path / "data", cases=3, shape=(16, 16, 16))
    run_dir = tmp_path / "run"
    assert _prepare(data, run_dir).exit_code == 0
    state = RunState.read(run_dir / "pipeline.json")
    assert state.sources is not None and set(state.sources) == {"synth_000", "synth_001",
                                                                "synth_002"}  # fmt: skip
    trained = TrainResult(folds=(0,), fold_dice=(0.5,))
    state = state.with_stage("train", 1.0, trained)
    if recorded_in == "cache":
        state = replace(state, sources=None)
    state.write(run_dir / "pipeline.json")
    label = data / "labelsTr" / "synth_001.nii.gz"
    _edit(label)
    refused = _prepare(data, run_dir)
    assert refused.exit_code == 1
    message = " ".join(refused.stderr.split())
    assert str(label) in "".join(message.split())  # wrapped anywhere by the console
    assert "changed after" in message and "synth_000" not in message
    assert "new run folder" in message and "--accept-changed-data" in message
    assert RunState.read(run_dir / "pipeline.json").result("train", TrainResult) == trained
    accepted = _prepare(data, run_dir, "--accept-changed-data")
    assert accepted.exit_code == 0, accepted.output
    assert "preprocess: done before, skipped" in accepted.stderr
    again = _prepare(data, run_dir)  # the edit is accepted once and for all
    assert again.exit_code == 0, again.output


def test_a_label_edited_before_training_is_preprocessed_again(tmp_path):
    """Nothing was made from the preprocessed cases yet: the data stages rerun, and only the
    edited case is preprocessed again."""
    data = make_synthetic_dataset(tmp_path / "data", cases=3, shape=(16, 16, 16))
    run_dir = tmp_path / "run"
    assert _prepare(data, run_dir).exit_code == 0
    cached = {case: (run_dir / "preprocessed" / f"{case}.npz").stat().st_mtime_ns
              for case in ("synth_000", "synth_001")}  # fmt: skip
    _edit(data / "labelsTr" / "synth_001.nii.gz")
    again = _prepare(data, run_dir)
    assert again.exit_code == 0, again.output
    assert "preprocess: done before" not in again.stderr
    assert (run_dir / "preprocessed" / "synth_000.npz").stat().st_mtime_ns == cached["synth_000"]
    assert (run_dir / "preprocessed" / "synth_001.npz").stat().st_mtime_ns != cached["synth_001"]
    assert "preprocess: done before, skipped" in _prepare(data, run_dir).stderr


def test_a_stopped_stage_counts_its_time_when_it_finishes_on_resume(tmp_path, monkeypatch):
    """SIGTERM or Ctrl-C in a stage: the attempt's seconds are kept and added on resume."""
    root = make_synthetic_dataset(tmp_path / "data", cases=3, shape=(16, 16, 16))
    pipeline = Pipeline(root, tmp_path / "run", load_config("smoke"))
    finish = pipeline.stage_check
    clock = iter([100.0, 130.0, 200.0, 205.0])  # attempt 1: 30 s, stopped; attempt 2: 5 s
    monkeypatch.setattr("c2fnas.pipeline.time.perf_counter", lambda: next(clock))

    def stopped():
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "stage_check", stopped)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(["check"])
    assert pipeline.state().interrupted == {"check": 30.0}
    monkeypatch.setattr(pipeline, "stage_check", finish)
    state = pipeline.run(["check"])
    assert state.stages["check"].seconds == pytest.approx(35.0) and state.interrupted == {}


def _budgeted(tmp_path):
    """A checked run planned (as if) for 1,000 s: 50 s of prediction, 10 s spent checking."""
    root = make_synthetic_dataset(tmp_path / "data", cases=3, shape=(16, 16, 16))
    config = load_config("smoke").with_fields(
        "training", iterations=1000, validate_every=100, checkpoint_every=100, folds=[0, 1]
    )
    pipeline = Pipeline(root, tmp_path / "run", config)
    pipeline.run(["check"])
    state = pipeline.state().with_stage("check", 10.0, CheckResult(3))
    state.with_planned({"data": 10.0, "training": 800.0, "prediction": 50.0}, 1000.0).write(
        pipeline.folder.pipeline_state
    )
    return pipeline


def test_a_budgets_training_is_refitted_once_to_the_first_folds_measured_time(tmp_path):
    """(0.9 x 1,000 s - 10 s spent - 50 s of prediction) / 2 folds = 420 s a fold: at 0.1 s a
    step and 1 s a validation, 3,800 iterations (``refit_training``)."""
    pipeline = _budgeted(tmp_path)
    refit = pipeline.reschedule(2)
    assert refit is not None
    assert refit(40, Timings(0.1, 1.0, 20)) is None  # before 5% of the 1,000 iterations
    config = refit(100, Timings(0.1, 1.0, 80))
    assert config is not None and config.training.iterations == 3800
    assert config.training.milestones == (1520, 3040) and config.training.validate_every == 95
    assert load_config("paper", pipeline.folder.config) == config
    (record,) = pipeline.state().refits
    assert record.at_iteration == 100 and record.seconds == 420.0 and record.before_fold is None
    assert record.planned_iterations == 1000 and record.iterations == 3800
    assert pipeline.reschedule(2) is None  # once


def test_no_refit_without_a_budget_or_after_a_trained_fold(tmp_path):
    pipeline = _budgeted(tmp_path)
    state = pipeline.state()
    trained = state.with_stage("train", 5.0, TrainResult((0,), (0.5,)))
    trained.write(pipeline.folder.pipeline_state)
    assert pipeline.reschedule(2) is None
    state.with_planned(state.planned or {}, None).write(pipeline.folder.pipeline_state)
    assert pipeline.reschedule(2) is None


def test_a_resumed_run_trains_its_refit_over_its_plan(tmp_path):
    """The plan stays as planned; the re-fit recorded in pipeline.json applies over it."""
    root = make_synthetic_dataset(tmp_path / "data", cases=3, shape=(16, 16, 16))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    planned = load_config("smoke").with_fields("training", iterations=1000, folds=[0, 1])
    (run_dir / "plan.yaml").write_text(planned.to_yaml())
    fields = {"iterations": 1300, "milestones": [520, 1040], "warmup_iterations": 33,
              "validate_every": 33, "checkpoint_every": 33}  # fmt: skip
    first = Refit(100, 0.1, 1.0, 420.0, 1000, {**fields, "iterations": 1200})
    later = Refit(0, 0.1, 1.0, 430.0, 1200, fields, before_fold=1)  # the last one applies
    state = RunState().with_planned({"training": 800.0}, 1000.0).with_refit(first)
    state.with_refit(later).write(run_dir / "pipeline.json")
    pipeline = Pipeline(root, run_dir)
    pipeline.run(["check"])
    assert pipeline.run_config.training.iterations == 1300
    assert load_config("paper", run_dir / "config.yaml").training.milestones == (520, 1040)
    assert load_config("paper", run_dir / "plan.yaml").training.iterations == 1000


def _finished_fold(iterations: int, step: float, validations: int) -> FitResult:
    """A fold's training result: ``iterations`` of ``step`` seconds, ``validations`` of 1 s."""
    seconds = iterations * step + validations * 1.0
    dice = [[iterations, [0.5], 0.5, 1]] * validations
    return FitResult([0.5], 0.5, iterations, iterations, seconds, {"dice": dice})


def _refitted_in_the_first_fold(tmp_path: Path) -> Pipeline:
    """``_budgeted``, its first fold re-fitted to 3,800 iterations (0.1 s a step, 1 s a
    validation)."""
    pipeline = _budgeted(tmp_path)
    refit = pipeline.reschedule(2)
    assert refit is not None and refit(100, Timings(0.1, 1.0, 80)) is not None
    assert pipeline.run_config.training.iterations == 3800
    return pipeline


def test_a_later_fold_is_refitted_to_the_step_the_finished_folds_measured(tmp_path):
    """The first fold ran at 0.08 s a step, not the 0.1 s measured early: with 351 s spent in
    it, 0.9 x 1,000 - 10 - 351 - 50 = 489 s are left for the second fold, 40 of them for its
    validations: floor(449 / 0.08) = 5,612 iterations."""
    pipeline = _refitted_in_the_first_fold(tmp_path)
    pipeline.refit_later(1, 1, [_finished_fold(3800, 0.08, 40)], spent=351.0)
    assert pipeline.run_config.training.iterations == 5612
    assert load_config("paper", pipeline.folder.config).training.iterations == 5612
    first, later = pipeline.state().refits
    assert first.before_fold is None and later.before_fold == 1
    assert later.planned_iterations == 3800 and later.step == 0.08 and later.seconds == 489.0


def test_a_later_refit_takes_the_pace_of_the_last_fold_finished(tmp_path):
    """The machine slowed: fold 0 ran at 0.08 s a step, fold 1 at 0.12 s. Fold 2 is fitted to
    0.12 s, not to the 0.10 s of both together; the time spent counts both (0.9 x 1,000 - 10 -
    220 - 50 = 620 s left)."""
    pipeline = _refitted_in_the_first_fold(tmp_path)
    slowed = [_finished_fold(1000, 0.08, 10), _finished_fold(1000, 0.12, 10)]
    pipeline.refit_later(2, 1, slowed, spent=220.0)
    later = pipeline.state().refits[-1]
    assert later.before_fold == 2 and later.step == 0.12 and later.seconds == 620.0


def test_a_later_fold_after_an_overrun_keeps_the_fold_floor_or_its_schedule(tmp_path):
    """No time left: the fold trains the shorter of ``MIN_LATE_FOLD_ITERATIONS`` and its
    schedule."""
    pipeline = _refitted_in_the_first_fold(tmp_path)
    pipeline.refit_later(1, 1, [_finished_fold(3800, 0.2, 40)], spent=800.0)
    assert pipeline.run_config.training.iterations == 3800  # its schedule, under the floor
    assert pipeline.state().refits[-1].seconds == 40.0
    longer = _refitted_in_the_first_fold(tmp_path / "longer")
    longer.config = longer.run_config.with_fields("training", iterations=9000)
    longer.refit_later(1, 1, [_finished_fold(3800, 0.2, 40)], spent=1000.0)  # 60 s over
    assert longer.run_config.training.iterations == MIN_LATE_FOLD_ITERATIONS == 5000
    assert longer.state().refits[-1].seconds == -160.0  # 900 - 10 - 1,000 - 50


def test_a_later_refit_counts_the_finished_folds_seconds_when_a_kill_left_no_record(tmp_path):
    """A start killed outright recorded no interrupted time and this start spent little: the
    finished folds' 800 s (over their starts) are spent all the same, so 40 s are left."""
    pipeline = _refitted_in_the_first_fold(tmp_path)
    pipeline.refit_later(1, 1, [_finished_fold(3800, 0.2, 40)], spent=3.0)
    assert pipeline.state().refits[-1].seconds == 40.0  # 900 - 10 - 800 - 50


def test_no_later_refit_without_the_first_or_after_the_stage_finished(tmp_path):
    pipeline = _budgeted(tmp_path)
    pipeline.refit_later(1, 1, [_finished_fold(1000, 0.08, 10)], spent=100.0)
    assert pipeline.state().refits == () and pipeline.run_config.training.iterations == 1000
    pipeline = _refitted_in_the_first_fold(tmp_path / "again")
    state = pipeline.state().with_stage("train", 5.0, TrainResult((0,), (0.5,)))
    state.write(pipeline.folder.pipeline_state)
    pipeline.refit_later(1, 1, [_finished_fold(3800, 0.08, 40)], spent=351.0)
    assert len(pipeline.state().refits) == 1 and pipeline.run_config.training.iterations == 3800


def test_a_started_fold_resumes_its_own_schedule_and_a_new_one_is_refitted(tmp_path, monkeypatch):
    """Fold 0 has a checkpoint and its own 2,500 iterations: it resumes with them, whatever the
    run's schedule says now (3,800); fold 1, not started, is re-fitted from fold 0's time."""
    pipeline = _refitted_in_the_first_fold(tmp_path)
    started = pipeline.folder.fold(0)
    (started.checkpoints / "iter_0000100").mkdir(parents=True)
    (started.checkpoints / "iter_0000100" / "state.json").write_text("{}")
    (started.checkpoints / "latest.json").write_text('{"checkpoint": "iter_0000100"}')
    started.config.write_text(
        pipeline.run_config.with_fields("training", iterations=2500).to_yaml()
    )
    trained = []

    def train(architecture, run_dir, fold, config, **options):
        trained.append((fold, config.training.iterations, options["reschedule"]))
        return _finished_fold(config.training.iterations, 0.08, 40)

    monkeypatch.setattr("c2fnas.pipeline.train", train)
    monkeypatch.setattr(pipeline, "final_architecture", lambda: TINY_ARCHITECTURE)
    result = pipeline.stage_train()
    assert result.folds == (0, 1)
    (fold_0, resumed, none), (fold_1, refitted, _) = trained
    assert (fold_0, resumed, none) == (0, 2500, None)  # re-fitted before: no second early one
    later = pipeline.state().refits[-1]
    assert fold_1 == 1 and later.before_fold == 1 and refitted == later.iterations
    # fold 0's 240 s (2,500 x 0.08 + 40 validations of 1 s) are spent whatever the start that
    # spent them recorded: 900 - 10 - 240 - 50 = 600 s, 40 of them validating: 7,000 at 0.08 s
    assert later.step == 0.08 and later.seconds == 600.0 and refitted == 7000
