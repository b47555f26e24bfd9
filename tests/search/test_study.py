"""Studies scoped to the run: named from the dataset and the search's settings."""

import json
import re

import pytest

from c2fnas.search import fine
from c2fnas.search.coarse import CoarseSettings, make_job, open_search
from c2fnas.search.evaluate import settings_from_config
from c2fnas.search.store import StoreError, TrialStore
from c2fnas.search.study import RunFolderError, scoring_settings
from c2fnas.space import Architecture, u_shaped_topologies
from c2fnas.training.config import load_config
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


# One change per setting that changes a candidate's score: (section, field, new value, how the
# change reads in the refusal).
SCORING_CHANGES = [
    ("search", "width", 0.25, "width 1.0 -> 0.25"),
    ("search", "iterations", 8, "iterations 4 -> 8"),
    ("search", "milestones", [3], "milestones [2] -> [3]"),
    ("data", "patch", [32, 32, 32], "patch [32, 32, 16] -> [32, 32, 32]"),
    ("data", "batch_size", 4, "batch_size 2 -> 4"),
    ("data", "foreground_oversample", 0.5, "foreground_oversample 0.33 -> 0.5"),
    ("training", "learning_rate", 0.01, "learning_rate 0.02 -> 0.01"),
    ("training", "warmup_iterations", 1, "warmup_iterations 2 -> 1"),
    ("training", "weight_decay", 0.0, "weight_decay 4e-05 -> 0.0"),
    ("training", "validate_every", 2, "validate_every 3 -> 2"),
    ("training", "stride", 16, "validation_stride 8 -> 16"),
]


def _real_settings(**fields):
    """Coarse settings of the smoke preset, with ``{section: {field: value}}`` changed."""
    config = load_config("smoke")
    for section, values in fields.items():
        config = config.with_fields(section, **values)
    return settings_from_config(config, "random", budget=4)


@pytest.mark.parametrize(("section", "field", "value", "change"), SCORING_CHANGES)
def test_a_run_folder_refuses_a_resume_that_scores_candidates_otherwise(
    run_dir, section, field, value, change
):
    """``search coarse RUN --width 0.25`` in a folder searched at another width (or schedule,
    patch, batch, optimiser, validation) would rank candidates trained two ways together."""
    open_search(make_job(run_dir, _real_settings()))
    changed = make_job(run_dir, _real_settings(**{section: {field: value}}))
    assert changed.study == make_job(run_dir, _real_settings()).study  # not named by it
    with pytest.raises(StoreError, match=rf"coarse search .*differs \({re.escape(change)}\)"):
        open_search(changed)
    open_search(make_job(run_dir, _real_settings()))  # unchanged: resumes


@pytest.mark.parametrize(("section", "field", "value", "change"), SCORING_CHANGES[:3])
def test_two_run_folders_on_one_store_refuse_to_mix_scoring_settings(
    storage, tmp_path, section, field, value, change
):
    here = make_job(toy_run_folder(tmp_path / "here"), _real_settings(), storage)
    there_settings = _real_settings(**{section: {field: value}})
    there = make_job(toy_run_folder(tmp_path / "there"), there_settings, storage)
    _claim(here, CODES[0])
    name, old, new = re.fullmatch(r"(\w+) (.+) -> (.+)", change).groups()
    with pytest.raises(StoreError, match=rf"holds a search with {name}={re.escape(old)}, not "):
        open_search(there)


def test_the_score_choice_names_the_study(run_dir, tmp_path):
    best = make_job(run_dir, _real_settings())
    final = make_job(run_dir, _real_settings(search={"score": "final"}))
    assert best.study != final.study
    open_search(best)
    with pytest.raises(StoreError, match=r"score None -> 'final'"):
        open_search(final)


def test_a_study_stored_before_its_scoring_settings_resumes_and_adopts_them(run_dir):
    """Stores and run folders written before the settings were recorded keep resuming."""
    old = _settings(clusters=2)  # the smoke preset's search, as before: no scoring settings
    _claim(make_job(run_dir, old), CODES[0])
    study = json.loads((run_dir / "coarse" / "study.json").read_text())
    (run_dir / "coarse" / "study.json").write_text(
        json.dumps({"study": study["study"], "identity": study["identity"]})
    )
    job = make_job(run_dir, _real_settings())
    assert job.study == make_job(run_dir, old).study
    assert open_search(job).snapshot().finished == [(CODES[0], 0.5)]
    with pytest.raises(StoreError, match=r"width 1.0 -> 0.5"):
        open_search(make_job(run_dir, _real_settings(search={"width": 0.5})))


@pytest.mark.parametrize(
    ("section", "values", "change"),
    [
        ("search", {"iterations": 8, "milestones": [4]}, "iterations 8 -> 16"),
        ("search", {"fine_stride": 32}, "stride 16 -> 32"),
        ("training", {"learning_rate": 0.01}, "learning_rate 0.02 -> 0.01"),
        ("data", {"patch": [32, 32, 32]}, "patch [32, 32, 16] -> [32, 32, 32]"),
    ],
)
def test_the_fine_search_refuses_a_resume_that_scores_colourings_otherwise(
    run_dir, section, values, change
):
    topology = Architecture.coarse(CODES[0])
    config = load_config("smoke")
    fine.open_search(fine.make_job(run_dir, topology, config))
    changed = fine.make_job(run_dir, topology, config.with_fields(section, **values))
    with pytest.raises(StoreError, match=rf"fine search .*{re.escape(change)}"):
        fine.open_search(changed)


def test_training_levers_at_their_defaults_leave_the_scoring_settings_as_before():
    """A study stored before the levers existed keeps its settings, so its name and resume."""
    config = load_config("smoke")
    before = scoring_settings(config)
    assert not {"lr_decay", "deep_supervision", "augmentation"} & set(before)
    poly = config.with_fields("training", lr_decay="poly", deep_supervision=True)
    changed = scoring_settings(poly.with_fields("data", augmentation="nnunet"))
    assert changed == {**before, "lr_decay": "poly", "deep_supervision": True,
                       "augmentation": "nnunet"}  # fmt: skip
