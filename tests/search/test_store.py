import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from c2fnas.search.report import code_text
from c2fnas.search.store import RELEASED, StoreError, TrialStore
from c2fnas.search.worker import launch_workers, run_worker
from c2fnas.space import u_shaped_topologies
from tests.search import toy_worker

REPO = Path(__file__).resolve().parents[2]
CODES = u_shaped_topologies()


def _live_codes(snapshot):
    return [r.code for r in snapshot.records if r.state != "released" and r.code is not None]


def test_a_topology_has_one_holder_until_released(storage):
    store = TrialStore(storage, heartbeat_interval=1, grace_period=3)
    first, second = store.ask(), store.ask()
    assert store.claim(first, CODES[0], {"worker": "a"}, budget=5) == "claimed"
    assert store.claim(second, CODES[0], {"worker": "b"}, budget=5) == "taken"
    assert store.claim(second, CODES[1], {"worker": "b"}, budget=5) == "claimed"
    store.fail(first, "interrupted", RELEASED, {})
    third = store.ask()
    assert store.claim(third, CODES[0], {"worker": "c"}, budget=5) == "claimed"
    snapshot = store.snapshot()
    assert [r.state for r in snapshot.records] == ["released", "running", "running"]
    assert snapshot.pending == {CODES[0], CODES[1]}


def test_no_more_candidates_than_the_budget_are_held(storage):
    store = TrialStore(storage, heartbeat_interval=1, grace_period=3)
    first, second, third = store.ask(), store.ask(), store.ask()
    assert store.claim(first, CODES[0], {}, budget=2) == "claimed"
    assert store.claim(second, CODES[1], {}, budget=2) == "claimed"
    assert store.claim(third, CODES[2], {}, budget=2) == "full"
    store.complete(first, 0.5, {})
    assert store.claim(third, CODES[2], {}, budget=2) == "full"  # scored ones keep their place
    store.fail(second, "interrupted", RELEASED, {})
    assert store.claim(third, CODES[2], {}, budget=2) == "claimed"  # a released one does not
    assert store.claim(store.ask(), CODES[3], {}, budget=3) == "claimed"  # a larger budget


def test_a_store_refuses_a_search_with_other_settings(storage):
    TrialStore(storage).check_settings({"strategy": "c2f", "seed": 0})
    store = TrialStore(storage)
    store.check_settings({"strategy": "c2f", "seed": 0})
    with pytest.raises(StoreError, match="strategy='c2f', not 'random'"):
        store.check_settings({"strategy": "random", "seed": 0})


def test_an_unusable_storage_url_is_a_clear_error():
    with pytest.raises(StoreError, match="cannot open trial store nosuchdb://x"):
        TrialStore("nosuchdb://x")


@pytest.mark.slow
def test_concurrent_workers_never_share_a_topology_and_stop_at_the_budget(storage):
    """Every worker proposes the same topology each time: only the claims keep them apart."""
    budget, workers = 10, 3
    TrialStore(storage)  # create the database once, as the command does before launching
    start_at = time.time() + 6  # after every process has imported and opened the store
    exit_codes = launch_workers(workers, toy_worker.run, (storage, budget, 0.2, start_at))
    assert exit_codes == [0] * workers
    snapshot = TrialStore(storage).snapshot()
    codes = _live_codes(snapshot)
    assert len(codes) == len(set(codes))
    assert snapshot.evaluated == budget
    assert snapshot.count("running") == 0
    assert {r.worker for r in snapshot.records} == {"w0", "w1", "w2"}
    failed = [r for r in snapshot.records if r.state == "failed"]
    assert [(r.code, r.failure) for r in failed] == [(CODES[3], "FloatingPointError: loss is nan")]
    assert all(r.iterations == 7 for r in snapshot.records if r.state == "finished")


def _wait_for(condition, store, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot = store.snapshot()
        if condition(snapshot):
            return snapshot
        time.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.mark.slow
def test_a_killed_worker_loses_only_its_candidate_and_a_rerun_resumes_it(storage, tmp_path):
    """The killed topology is handed out again and resumed from its checkpoint, even by a
    strategy that would never propose it (``last`` starts from the other end of the list)."""
    store = TrialStore(storage, heartbeat_interval=1, grace_period=3)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    command = [sys.executable, "-m", "tests.search.toy_worker", storage, "6", "1.0"]
    worker = subprocess.Popen(
        [*command, "--checkpoints", str(checkpoints)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    steps_of = checkpoints / f"{code_text(CODES[2])}.steps"
    try:
        before = _wait_for(lambda s: s.count("finished") == 2 and steps_of.is_file(), store)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    killed = before.records[2]
    assert killed.state == "running" and killed.code == CODES[2]
    saved = int(steps_of.read_text())
    assert 0 < saved < toy_worker.STEPS

    toy_worker.run(1, storage, 6, 0.1, strategy="last", checkpoints=checkpoints)

    after = TrialStore(storage).snapshot()
    assert after.records[:2] == before.records[:2]  # finished results kept as they were
    assert after.records[2].state == "released"
    assert "no heartbeat" in after.records[2].failure
    assert killed.code in [code for code, _ in after.finished]  # handed out again
    starts = (checkpoints / f"{code_text(CODES[2])}.starts").read_text().split()
    assert starts == ["0", str(saved)]  # resumed from its checkpoint, not started over
    assert after.evaluated == 6
    codes = _live_codes(after)
    assert len(codes) == len(set(codes))


def test_the_store_holds_other_candidates_too(storage):
    """The fine stage stores colourings (tuples of op names) under its own key and study."""
    store = TrialStore(storage, study_name="fine", key="colouring")
    colouring = ("2d", "p3d", "3d") * 4
    first, second = store.ask(), store.ask()
    assert store.claim(first, colouring, {}, budget=5) == "claimed"
    assert store.claim(second, colouring, {}, budget=5) == "taken"
    store.complete(first, 0.8, {"seconds": 1.0})
    snapshot = store.snapshot()
    assert snapshot.finished == [(colouring, 0.8)]
    assert first.study.user_attrs == {} and TrialStore(storage).snapshot().records == ()


def test_a_waiting_worker_says_why_and_takes_over_a_dead_workers_candidate(storage, caplog):
    store = TrialStore(storage, heartbeat_interval=1, grace_period=3)
    dead = store.ask()
    assert store.claim(dead, CODES[0], {"worker": "gone"}, budget=1) == "claimed"
    store._stop_heartbeat(dead)  # its worker died: no more heartbeats

    def evaluate(architecture, context):
        return toy_worker.toy_score(architecture.levels)

    strategy = toy_worker.LastUntaken()  # would never propose CODES[0] itself
    with caplog.at_level(logging.INFO, logger="c2fnas.search.worker"):
        assert run_worker(store, strategy, evaluate, 1, worker="w", poll_seconds=0.1) == 1
    waits = [r.getMessage() for r in caplog.records if "waiting for trial 0" in r.getMessage()]
    assert len(waits) == 1, caplog.text
    assert f"(worker gone, candidate {list(CODES[0])})" in waits[0]
    assert "silent for 3 s (the grace period) counts as dead" in waits[0]
    assert store.snapshot().finished == [(CODES[0], toy_worker.toy_score(CODES[0]))]


def test_closing_a_store_stops_the_heartbeats_of_its_unfinished_trials(storage):
    store = TrialStore(storage, heartbeat_interval=1, grace_period=3)
    trial = store.ask()
    assert store.claim(trial, CODES[0], {}, budget=1) == "claimed"
    beating = [t for t in threading.enumerate() if t.name == f"heartbeat-{trial.number}"]
    assert len(beating) == 1 and beating[0].is_alive()
    store.close()
    assert not beating[0].is_alive()
    assert TrialStore(storage).snapshot().records[0].state == "running"  # left to go stale
