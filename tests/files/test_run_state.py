"""``pipeline.json`` as ``RunState``: today's files and older ones load, a round trip is exact,
and what cannot be read is refused naming the file."""

import json
from pathlib import Path

import pytest

from c2fnas.files.run_state import (
    RESULT_TYPES,
    VERSION,
    CheckResult,
    DatasetIdentity,
    EvaluateResult,
    PostprocessResult,
    Refit,
    RunState,
    RunStateError,
    SearchResult,
    TrainResult,
)

DATA = Path(__file__).parent / "data"
BEFORE_THE_VERSION = DATA / "pipeline_v0.json"
"""Written by ``c2fnas run`` (smoke preset, ``tests/test_pipeline.py``'s TINY) before
``RunState``: no version, records as ``{"done": true, "seconds": ..., **result}``."""


def test_a_file_written_before_the_version_loads_with_every_result():
    state = RunState.read(BEFORE_THE_VERSION)
    assert list(state.stages) == [stage for stage in RESULT_TYPES if stage != "scale"]
    assert state.dataset == DatasetIdentity(
        "/tmp/oldrun/data", 5, "55cf4672a48003b3f8a682d92a937ead5fb06149bf3a4727a0314bc9cef44be4"
    )
    assert state.planned is None and state.sources is None
    trained = state.result("train", TrainResult)
    assert trained is not None and trained.folds == (0, 1, 2, 3, 4) and len(trained.fold_dice) == 5
    assert state.stages["coarse"].seconds == 52.7
    assert state.result("postprocess", PostprocessResult) == PostprocessResult((1,), 5)
    summaries = {stage: record.summary() for stage, record in state.stages.items()}
    assert summaries["check"] == "7 cases"
    assert summaries["fine"] == "2 evaluated, best Dice 0.136"
    assert summaries["train"] == "fold Dice 0.082, 0.066, 0.069, 0.071, 0.063"
    assert summaries["postprocess"] == "largest component kept for classes [1]"
    assert summaries["evaluate"] == "test mean Dice 0.0836 (fold ensemble)"
    assert summaries["report"] == "report.md, report.html"


def test_a_written_state_reads_back_equal_and_keeps_the_old_layout(tmp_path):
    state = RunState.read(BEFORE_THE_VERSION).with_planned({"data": 60.0, "training": 600.0}, 900.0)
    state = state.with_sources({"case_1": {"image": [352, 1764000000123456789], "label": [80, 1]}})
    path = tmp_path / "pipeline.json"
    state.write(path)
    assert RunState.read(path) == state
    written = json.loads(path.read_text())
    assert written["version"] == VERSION
    old = json.loads(BEFORE_THE_VERSION.read_text())
    assert written["stages"] == old["stages"] and written["dataset"] == old["dataset"]


def test_records_lacking_fields_take_their_defaults(tmp_path):
    """Runs from before the folds were recorded trained all five: ``folds`` is None."""
    path = tmp_path / "pipeline.json"
    path.write_text('{"stages": {"train": {"done": true, "seconds": 5}, "evaluate": {}}}')
    state = RunState.read(path)
    assert state.result("train", TrainResult) == TrainResult(folds=None, fold_dice=())
    assert state.stages["evaluate"].summary() == "no labelsTs: not evaluated"
    assert state.result("coarse", SearchResult) is None


def test_a_missing_file_is_an_empty_state(tmp_path):
    state = RunState.read(tmp_path / "pipeline.json")
    assert state == RunState() and not state.stages and state.seconds == 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "unreadable"),
        (json.dumps({"version": VERSION + 1, "stages": {}}), "newer than this c2fnas"),
        ('{"stages": {"polish": {"done": true}}}', "unknown stage 'polish'"),
        ('{"stages": {"check": {"done": true, "cases": "many", "seconds": "x"}}}', "unreadable"),
    ],
)
def test_an_unreadable_file_is_refused_naming_it(tmp_path, text, reason):
    path = tmp_path / "pipeline.json"
    path.write_text(text)
    with pytest.raises(RunStateError, match=reason) as error:
        RunState.read(path)
    assert str(path) in str(error.value) and "delete it to rerun all" in str(error.value)


def test_with_stage_replaces_the_record_and_checks_its_type():
    state = RunState().with_stage("check", 1.0, CheckResult(3))
    state = state.with_stage("evaluate", 2.0, EvaluateResult(True, 0.5))
    again = state.with_stage("check", 4.0, CheckResult(4))
    assert list(again.stages) == ["check", "evaluate"] and again.seconds == 6.0
    assert state.stages["check"].seconds == 1.0  # frozen: the old value is unchanged
    with pytest.raises(TypeError, match="TrainResult"):
        state.with_stage("train", 1.0, CheckResult(3))  # type: ignore[arg-type]


def test_time_planned_against_spent_adds_the_stages_of_each_part():
    state = (
        RunState()
        .with_stage("check", 10.0, CheckResult(3))
        .with_stage("train", 500.0, TrainResult((0,), (0.5,)))
        .with_planned({"data": 60.0, "training": 600.0, "prediction": 60.0}, 900.0)
    )
    assert state.planned_against_spent() == [
        ("data", 60.0, 10.0), ("training", 600.0, 500.0), ("prediction", 60.0, 0.0),
    ]  # fmt: skip
    assert RunState().planned_against_spent() == []


def test_stopped_attempts_count_in_the_stage_that_finishes_after_them(tmp_path):
    """A run resumed after SIGTERMs accounts for the time of every attempt, in the file too."""
    path = tmp_path / "pipeline.json"
    state = RunState().with_interrupted("train", 100.0)
    state.write(path)
    state = RunState.read(path).with_interrupted("train", 50.0)
    assert state.interrupted == {"train": 150.0} and state.seconds == 0
    state.write(path)
    done = RunState.read(path).with_stage("train", 25.0, TrainResult((0,), (0.5,)))
    assert done.stages["train"].seconds == 175.0 and done.interrupted == {}
    done.write(path)
    assert "interrupted" not in json.loads(path.read_text())
    assert RunState.read(path).seconds == 175.0


def test_the_budget_and_the_refits_read_back_and_a_new_plan_drops_them(tmp_path):
    fields = {"iterations": 8100, "milestones": [3240, 6480], "warmup_iterations": 203,
              "validate_every": 203, "checkpoint_every": 203}  # fmt: skip
    first = Refit(
        at_iteration=316, step=0.17, validation=1.9, seconds=1500.0, planned_iterations=6283,
        training=fields,
    )  # fmt: skip
    later = Refit(0, 0.16, 1.9, 1560.0, 8100, {**fields, "iterations": 8800}, before_fold=1)
    state = RunState().with_planned({"training": 3100.0}, 3600.0).with_refit(first)
    state = state.with_refit(later)
    path = tmp_path / "pipeline.json"
    state.write(path)
    again = RunState.read(path)
    assert again == state and again.budget == 3600.0 and again.refits == (first, later)
    assert again.refits[0].iterations == 8100 and again.refits[1].iterations == 8800
    assert again.refits[0].summary().startswith("re-fitted at iteration 316 of the first fold")
    says_first, says_later = (refit.summary() for refit in again.refits)
    assert "8,100 iterations per fold (24.2 min each at that step, of the 25.0" in says_first
    assert again.refits[1].summary().startswith("re-fitted before fold 1, from the last fold")
    assert "8,800 iterations per fold (24.9 min each at that step, of the 26.0" in says_later
    assert RunState().with_refit(first).with_planned({"training": 1.0}, None).refits == ()
    overrun = Refit(0, 0.16, 1.9, -60.0, 8100, {**fields, "iterations": 5000}, before_fold=2)
    assert overrun.summary().endswith(
        "(14.1 min each at that step: the budget is spent); no fewer than 5,000: a fold's floor "
        "holds"
    )
    older = RunState.read(BEFORE_THE_VERSION)
    assert older.budget is None and older.refits == ()


def test_a_version_1_file_reads_its_one_refit(tmp_path):
    """Version 1 wrote ``"refit": {...}`` (one re-fit, made in the first fold)."""
    path = tmp_path / "pipeline.json"
    refit = {"at_iteration": 316, "step": 0.17, "validation": 1.9, "seconds": 1500.0,
             "planned_iterations": 6283, "training": {"iterations": 8100}}  # fmt: skip
    path.write_text(json.dumps({"version": 1, "budget": 3600.0, "refit": refit, "stages": {}}))
    state = RunState.read(path)
    assert state.refits == (Refit(**refit),) and state.refits[0].before_fold is None
    state.write(path)
    written = json.loads(path.read_text())
    assert written["version"] == 2 and "refit" not in written and len(written["refits"]) == 1
