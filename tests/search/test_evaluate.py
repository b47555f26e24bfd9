import json
from typing import get_args

import optuna
import pytest

from c2fnas.data.splits import SEARCH_FOLD
from c2fnas.search.coarse import CANDIDATE_SCORES, CoarseSettings, make_job
from c2fnas.search.evaluate import TrainingEvaluator, settings_from_config
from c2fnas.search.strategies import RandomSearch
from c2fnas.search.worker import run_worker
from c2fnas.space import Architecture, u_shaped_topologies
from c2fnas.training import RunConfig
from c2fnas.training.config import CandidateScore, load_config
from c2fnas.training.loop import TrainResult, fit
from tests.training.out_of_memory import RunsOutOfMemory
from tests.training.synthetic import TINY, batches, validation


def _settings(prune_from):
    return CoarseSettings(budget=3, strategy="random", prune_min_iterations=prune_from)


@pytest.mark.parametrize("prune_from", [0, 2])
def test_training_evaluator_calls_train_as_the_contract_says(run_dir, monkeypatch, prune_from):
    """``train`` replaced by a recorder that calls ``progress`` and ``on_validation`` in the
    loop's order (validation Dice 0.1 x iteration)."""
    calls = []

    def fake_train(
        architecture, folder, fold, config, out_dir, resume, progress, on_validation, micro_batch,
        accelerated,
    ):  # fmt: skip
        calls.append(
            (architecture, folder, fold, config, out_dir, resume, micro_batch, accelerated)
        )
        for done in range(1, config.training.iterations + 1):
            progress(done, config.training.iterations, {"loss": 1.0})
            if done % config.training.validate_every == 0:
                on_validation(done, 0.1 * done)
        return TrainResult([0.5, 0.7], 0.6, 4, config.training.iterations, 1.0)

    monkeypatch.setattr("c2fnas.search.evaluate.train", fake_train)
    config = RunConfig.model_validate(
        {"training": {"validate_every": 2}, "search": {"iterations": 6, "milestones": [3]}}
    )
    job = make_job(run_dir, _settings(prune_from))
    evaluate = TrainingEvaluator(config.to_yaml(), width=0.25, accelerated=True)(job, 0)
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
    [(trained, trained_in, fold, used, out_dir, resume, micro_batch, accelerated)] = calls
    assert trained.width == 0.25 and trained.levels == code and set(trained.ops) == {"3d"}
    assert (trained_in, fold, resume, micro_batch) == (run_dir, SEARCH_FOLD, True, None)
    assert accelerated  # the command's choice reaches the worker's training
    assert used.training.iterations == 6 and used.training.milestones == (3,)
    assert out_dir == run_dir / "coarse" / "candidates" / "-".join(map(str, code))


@pytest.mark.parametrize("limit", [2, 0])
def test_a_candidate_out_of_memory_is_retried_with_micro_batches(run_dir, monkeypatch, limit):
    """Batch 4 on a network that runs out of memory above ``limit`` samples per pass: it trains
    in passes of at most ``limit`` and is scored; with no pass fitting (0), it fails and says so."""
    attempts, scores = [], []

    def train_in_memory(
        architecture, folder, fold, config, out_dir, resume, progress, on_validation, micro_batch,
        accelerated,
    ):  # fmt: skip
        attempts.append(micro_batch)
        network = RunsOutOfMemory(limit)
        result = fit(network, TINY, batches(0, 4), validation(), config, out_dir,
                     resume=resume, progress=progress, micro_batch=micro_batch)  # fmt: skip
        scores.append(result.best_mean)
        return result

    monkeypatch.setattr("c2fnas.search.evaluate.train", train_in_memory)
    config = load_config("smoke").with_fields("data", batch_size=4)
    job = make_job(run_dir, CoarseSettings(budget=1, strategy="random"))
    store = job.open_store()
    evaluate = TrainingEvaluator(config.to_yaml(), width=0.25)(job, 0)
    run_worker(store, RandomSearch(), evaluate, 1, worker="w", poll_seconds=0.1, clusters=None)
    [record] = store.snapshot().records
    if limit == 0:
        assert attempts == [None, 2, 1] and record.state == "failed"
        assert record.failure.startswith("CandidateFailed: does not fit in memory even one sample")
        assert "with micro-batch 1: CUDA out of memory" in record.failure
        return
    assert attempts == [None, 2] and record.state == "finished" and record.failure == ""
    assert record.iterations == config.search.iterations and record.score == scores[0]
    candidate = run_dir / "coarse" / "candidates" / "-".join(map(str, record.code))
    last = candidate / "checkpoints" / f"iter_{config.search.iterations:07d}" / "state.json"
    assert json.loads(last.read_text())["micro_batch"] == 2


@pytest.mark.parametrize(
    ("score", "expected"), [("best", 0.6), ("final", 0.45), ("last3", (0.3 + 0.6 + 0.45) / 3)]
)
def test_a_candidate_is_scored_by_its_best_its_final_or_its_last_validations(
    run_dir, monkeypatch, score, expected
):
    """Best validation 0.6 at iteration 4, the final weights 0.45 at iteration 6."""
    history = {"dice": [[2, [0.2, 0.4], 0.3, 5], [4, [0.5, 0.7], 0.6, 5], [6, [0.4, 0.5], 0.45, 5]]}

    def fake_train(architecture, folder, fold, config, out_dir, resume, progress, on_validation,
                   micro_batch, accelerated):  # fmt: skip
        return TrainResult([0.5, 0.7], 0.6, 4, 6, 1.0, history)

    monkeypatch.setattr("c2fnas.search.evaluate.train", fake_train)
    config = RunConfig.model_validate({"search": {"iterations": 6, "milestones": [3],
                                                  "score": score}})  # fmt: skip
    settings = settings_from_config(config, "random", budget=3)
    job = make_job(run_dir, settings)
    evaluate = TrainingEvaluator(config.to_yaml())(job, 0)

    class Context:
        number, iterations = 0, 0

    assert settings.score == score
    assert evaluate(Architecture.coarse(u_shaped_topologies()[0]), Context()) == pytest.approx(
        expected
    )


def test_the_final_score_is_part_of_the_search_identity_the_default_is_not():
    default = CoarseSettings(strategy="c2f")
    assert default.identity() == {"strategy": "c2f", "seed": 0, "clusters": 8}
    assert CoarseSettings(strategy="c2f", score="final").identity() == {
        **default.identity(),
        "score": "final",
    }


def test_an_unknown_score_is_refused_before_any_candidate_trains():
    with pytest.raises(ValueError, match="score 'last': choose best, final, last3"):
        CoarseSettings(strategy="c2f", score="last")
    assert get_args(CandidateScore) == CANDIDATE_SCORES  # the config's choices, the same
