import optuna
import pytest

from c2fnas.search import evaluate as search_evaluate
from c2fnas.search.coarse import CoarseSettings, make_job
from c2fnas.search.evaluate import SEARCH_FOLD, TrainingEvaluator
from c2fnas.search.strategies import RandomSearch
from c2fnas.search.worker import run_worker
from c2fnas.space import u_shaped_topologies
from c2fnas.training import RunConfig
from c2fnas.training.loop import TrainResult

STEPS = 9


def _settings(prune_from):
    return CoarseSettings(
        budget=12, strategy="random", heartbeat_interval=1, grace_period=5,
        poll_seconds=0.1, prune_min_iterations=prune_from,
    )  # fmt: skip


def _learning_curve(architecture, context):
    """Scores rise with the iterations towards a value fixed by the topology."""
    final = sum(level * (cell + 1) for cell, level in enumerate(architecture.levels)) / 100
    for step in range(1, STEPS + 1):
        context.report(final * step / STEPS, step)
        if context.should_prune():
            raise optuna.TrialPruned(f"pruned at iteration {step}")
    context.iterations = STEPS
    return final


def test_successive_halving_stops_weak_candidates_and_reports_the_saving(tmp_path):
    job = make_job(tmp_path, _settings(prune_from=1))
    store = job.open_store()
    run_worker(store, RandomSearch(), _learning_curve, 12, worker="w", poll_seconds=0.1)
    snapshot = store.snapshot()
    pruned = [r for r in snapshot.records if r.state == "pruned"]
    assert snapshot.evaluated == 12 and pruned
    assert all(r.iterations < STEPS and r.failure.startswith("pruned at") for r in pruned)
    assert snapshot.iterations_saved(STEPS) == sum(STEPS - r.iterations for r in pruned) > 0
    codes = [r.code for r in snapshot.records]
    assert len(codes) == len(set(codes))  # a pruned topology is not handed out again


def test_without_pruning_every_candidate_trains_to_the_end(tmp_path):
    job = make_job(tmp_path, _settings(prune_from=0))
    store = job.open_store()
    run_worker(store, RandomSearch(), _learning_curve, 4, worker="w", poll_seconds=0.1)
    assert store.snapshot().count("finished") == 4


@pytest.mark.parametrize("prune_from", [0, 2])
def test_training_evaluator_calls_train_as_the_contract_says(tmp_path, monkeypatch, prune_from):
    """``train`` replaced by a recorder that calls ``progress`` in the loop's order."""
    calls = []

    def fake_train(architecture, run_dir, fold, config, out_dir, resume, progress):
        calls.append((architecture, run_dir, fold, config, out_dir, resume))
        for done in range(1, config.training.iterations + 1):
            dice = {"dice": 0.1 * (done - 1)} if done > 2 else {}
            progress(done, config.training.iterations, {"loss": 1.0, **dice})
        return TrainResult([0.5, 0.7], 0.6, 4, config.training.iterations, 1.0)

    monkeypatch.setattr("c2fnas.training.run.train", fake_train)
    config = RunConfig.model_validate(
        {"training": {"validate_every": 2}, "search": {"iterations": 6, "milestones": [3]}}
    )
    job = make_job(tmp_path, _settings(prune_from))
    evaluate = TrainingEvaluator(config.to_yaml(), width=0.25)(job, 0)
    reports = []

    class Context:
        number, iterations = 7, 0

        def report(self, score, iteration):
            reports.append((iteration, score))

        def should_prune(self):
            return len(reports) == 2

    code = u_shaped_topologies()[5]
    architecture = search_evaluate.Architecture.coarse(code)
    if prune_from:
        with pytest.raises(optuna.TrialPruned, match="pruned at iteration 4"):
            evaluate(architecture, Context())
        assert reports == [(2, pytest.approx(0.2)), (4, pytest.approx(0.4))]
        return
    assert evaluate(architecture, Context()) == 0.6 and reports == []
    [(trained, run_dir, fold, used, out_dir, resume)] = calls
    assert trained.width == 0.25 and trained.levels == code and set(trained.ops) == {"3d"}
    assert (run_dir, fold, resume) == (tmp_path, SEARCH_FOLD, True)
    assert used.training.iterations == 6 and used.training.milestones == (3,)
    assert out_dir == tmp_path / "coarse" / "candidates" / "-".join(map(str, code))
