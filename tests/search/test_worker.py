import optuna

from c2fnas.search.coarse import CoarseSettings, make_job
from c2fnas.search.strategies import RandomSearch
from c2fnas.search.worker import run_worker

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


def test_successive_halving_stops_weak_candidates_and_reports_the_saving(run_dir):
    job = make_job(run_dir, _settings(prune_from=1))
    store = job.open_store()
    run_worker(store, RandomSearch(), _learning_curve, 12, worker="w", poll_seconds=0.1)
    snapshot = store.snapshot()
    pruned = [r for r in snapshot.records if r.state == "pruned"]
    assert snapshot.evaluated == 12 and pruned
    assert all(r.iterations < STEPS and r.failure.startswith("pruned at") for r in pruned)
    assert snapshot.iterations_saved(STEPS) == sum(STEPS - r.iterations for r in pruned) > 0
    codes = [r.code for r in snapshot.records]
    assert len(codes) == len(set(codes))  # a pruned topology is not handed out again


def test_without_pruning_every_candidate_trains_to_the_end(run_dir):
    job = make_job(run_dir, _settings(prune_from=0))
    store = job.open_store()
    run_worker(store, RandomSearch(), _learning_curve, 4, worker="w", poll_seconds=0.1)
    assert store.snapshot().count("finished") == 4


def test_a_worker_stops_when_every_candidate_fails(run_dir):
    """A fault outside the candidates (bad data) must not burn the whole budget."""
    store = make_job(run_dir, _settings(0)).open_store()

    def broken(architecture, context):
        raise OSError("cannot read case_003.npz")

    assert run_worker(store, RandomSearch(), broken, 12, worker="w", max_failures_in_a_row=3) == 3
    snapshot = store.snapshot()
    assert snapshot.count("failed") == 3
    assert {r.failure for r in snapshot.records} == {"OSError: cannot read case_003.npz"}
