import optuna
import pytest

from c2fnas.data.splits import SEARCH_FOLD
from c2fnas.search.coarse import CoarseSettings, make_job
from c2fnas.search.evaluate import TrainingEvaluator
from c2fnas.space import Architecture, u_shaped_topologies
from c2fnas.training import RunConfig
from c2fnas.training.loop import TrainResult


def _settings(prune_from):
    return CoarseSettings(budget=3, strategy="random", prune_min_iterations=prune_from)


@pytest.mark.parametrize("prune_from", [0, 2])
def test_training_evaluator_calls_train_as_the_contract_says(run_dir, monkeypatch, prune_from):
    """``train`` replaced by a recorder that calls ``progress`` in the loop's order."""
    calls = []

    def fake_train(architecture, folder, fold, config, out_dir, resume, progress):
        calls.append((architecture, folder, fold, config, out_dir, resume))
        for done in range(1, config.training.iterations + 1):
            dice = {"dice": 0.1 * (done - 1)} if done > 2 else {}
            progress(done, config.training.iterations, {"loss": 1.0, **dice})
        return TrainResult([0.5, 0.7], 0.6, 4, config.training.iterations, 1.0)

    monkeypatch.setattr("c2fnas.training.train", fake_train)
    config = RunConfig.model_validate(
        {"training": {"validate_every": 2}, "search": {"iterations": 6, "milestones": [3]}}
    )
    job = make_job(run_dir, _settings(prune_from))
    evaluate = TrainingEvaluator(config.to_yaml(), width=0.25)(job, 0)
    reports = []

    class Context:
        number, iterations = 7, 0

        def report(self, score, iteration):
            reports.append((iteration, score))

        def should_prune(self):
            return len(reports) == 2

    code = u_shaped_topologies()[5]
    architecture = Architecture.coarse(code)
    if prune_from:
        with pytest.raises(optuna.TrialPruned, match="pruned at iteration 4"):
            evaluate(architecture, Context())
        assert reports == [(2, pytest.approx(0.2)), (4, pytest.approx(0.4))]
        return
    assert evaluate(architecture, Context()) == 0.6 and reports == []
    [(trained, trained_in, fold, used, out_dir, resume)] = calls
    assert trained.width == 0.25 and trained.levels == code and set(trained.ops) == {"3d"}
    assert (trained_in, fold, resume) == (run_dir, SEARCH_FOLD, True)
    assert used.training.iterations == 6 and used.training.milestones == (3,)
    assert out_dir == run_dir / "coarse" / "candidates" / "-".join(map(str, code))
