"""Studies scoped to the run: named from the dataset and the search's settings."""

import pytest

from c2fnas.search.coarse import CoarseSettings, make_job, open_search
from c2fnas.search.store import StoreError, TrialStore
from c2fnas.search.study import RunFolderError
from c2fnas.space import u_shaped_topologies
from tests.search.toy_worker import toy_run_folder

CODES = u_shaped_topologies()


def _settings(**changes):
    return CoarseSettings(**{"budget": 4, "strategy": "random", **changes})


def _claim(job, code):
    store = open_search(job)
    trial = store.ask()
    assert store.claim(trial, code, {"worker": str(job.run_dir)}, budget=4) == "claimed"
    store.complete(trial, 0.5, {})


def test_different_runs_on_one_store_never_share_trials(storage, tmp_path):
    first = make_job(toy_run_folder(tmp_path / "a", ("a1", "a2")), _settings(), storage)
    other_data = make_job(toy_run_folder(tmp_path / "b", ("b1",)), _settings(), storage)
    other_seed = make_job(toy_run_folder(tmp_path / "c", ("a1", "a2")), _settings(seed=1))
    assert len({first.study, other_data.study}) == 2
    assert first.study.startswith("coarse-")
    _claim(first, CODES[0])
    _claim(other_data, CODES[0])  # the same topology: another run's trials do not hold it
    assert [r.code for r in open_search(first).snapshot().records] == [CODES[0]]
    assert other_seed.study not in (first.study, other_data.study)


def test_the_same_run_from_two_run_folders_shares_its_trials(storage, tmp_path):
    """Two machines, each with its own copy of the preprocessed data, join one search."""
    here = make_job(toy_run_folder(tmp_path / "here"), _settings(), storage)
    there = make_job(toy_run_folder(tmp_path / "there"), _settings(budget=6), storage)
    assert here.study == there.study
    _claim(here, CODES[0])
    store = open_search(there)
    trial = store.ask()
    assert store.claim(trial, CODES[0], {}, budget=6) == "taken"
    assert store.snapshot().finished == [(CODES[0], 0.5)]


def test_a_run_folder_refuses_a_search_with_other_data_or_settings(run_dir, tmp_path):
    open_search(make_job(run_dir, _settings()))
    open_search(make_job(run_dir, _settings(budget=9)))  # a larger budget: the same search
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"  # another store does not help
    with pytest.raises(StoreError, match=r"study.json: this run folder holds the coarse search "):
        open_search(make_job(run_dir, _settings(seed=3), elsewhere))
    with pytest.raises(StoreError, match=r"seed 0 -> 3\)"):
        open_search(make_job(run_dir, _settings(seed=3)))
    toy_run_folder(run_dir, ("a", "b", "c", "d", "e", "f"))  # data changed under it
    with pytest.raises(StoreError, match=r"dataset \{'plan': "):
        open_search(make_job(run_dir, _settings()))


def test_a_run_folder_of_the_old_study_names_resumes_its_study(run_dir):
    """Before studies were named by the run, the coarse study was called ``coarse``."""
    storage = f"sqlite:///{run_dir / 'coarse' / 'trials.db'}"
    old = TrialStore(storage, study_name="coarse")
    old.check_settings(_settings(strategy="c2f").identity())
    trial = old.ask()
    old.claim(trial, CODES[0], {}, budget=4)
    old.complete(trial, 0.7, {})
    (run_dir / "coarse" / "trials.csv").write_text("trial\n0\n")

    with pytest.raises(StoreError, match="holds a search with strategy='c2f', not 'random'"):
        open_search(make_job(run_dir, _settings()))
    job = make_job(run_dir, _settings(strategy="c2f"))
    assert job.study == "coarse"
    assert open_search(job).snapshot().finished == [(CODES[0], 0.7)]
    assert make_job(run_dir, _settings(strategy="c2f")).study == "coarse"  # recorded now


def test_a_damaged_study_record_is_named(run_dir):
    (run_dir / "coarse").mkdir()
    (run_dir / "coarse" / "study.json").write_text("{")
    with pytest.raises(RunFolderError, match=r"coarse/study.json: unreadable"):
        make_job(run_dir, _settings())
