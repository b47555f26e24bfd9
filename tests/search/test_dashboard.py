"""What ``optuna-dashboard sqlite:///RUN_DIR/coarse/trials.db`` sees: the trial store read back
through Optuna's own API, as any Optuna tool reads it, while nothing of c2fnas is loaded."""

import json

import optuna
import pytest

from c2fnas.files.run_folder import RunFolder
from c2fnas.search.coarse import CoarseSettings, make_job, run_coarse
from c2fnas.search.report import code_text
from tests.search import toy_worker

BUDGET = 4


@pytest.mark.slow
def test_the_coarse_study_loads_through_optunas_api(run_dir):
    settings = CoarseSettings(
        budget=BUDGET, strategy="random", heartbeat_interval=1, grace_period=5, poll_seconds=0.2
    )
    run_coarse(make_job(run_dir, settings), toy_worker.toy_factory, workers=1)
    folder = RunFolder(run_dir).coarse
    url = f"sqlite:///{folder.trials_db}"

    summaries = {summary.study_name: summary for summary in optuna.get_all_study_summaries(url)}
    name = json.loads(folder.study.read_text())["study"]
    assert name.startswith("coarse-") and name in summaries
    assert summaries[name].direction == optuna.study.StudyDirection.MAXIMIZE

    study = optuna.load_study(study_name=name, storage=url)
    assert {"strategy", "last_settings"} <= set(study.user_attrs)  # the study's settings
    trials = study.get_trials(deepcopy=False)
    finished = [trial for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == BUDGET
    for trial in finished:  # the columns the dashboard's trial table shows
        attrs = trial.user_attrs
        assert {"topology", "cluster", "worker", "seconds", "iterations"} <= set(attrs)
        assert trial.value == pytest.approx(toy_worker.toy_score(attrs["topology"]))
    best = max(finished, key=lambda trial: trial.value)
    assert study.best_trial.number == best.number
    rows = (folder.trials_csv).read_text()
    assert code_text(tuple(best.user_attrs["topology"])) in rows  # the same trial as trials.csv
