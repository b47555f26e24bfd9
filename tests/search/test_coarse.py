import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from c2fnas.search.coarse import CoarseSettings, make_job, open_search, run_coarse
from c2fnas.search.report import code_text, progress_table
from c2fnas.search.store import StoreError
from c2fnas.space import Architecture
from tests.search import toy_worker

REPO = Path(__file__).resolve().parents[2]


def _settings(budget, strategy="random"):
    return CoarseSettings(
        budget=budget, strategy=strategy, heartbeat_interval=1, grace_period=5, poll_seconds=0.2
    )


def _rows(run_dir):
    with open(run_dir / "coarse" / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_run_writes_outputs_and_a_rerun_extends_the_search(run_dir):
    seen = []
    job = make_job(run_dir, _settings(5))
    first = run_coarse(job, toy_worker.toy_factory, workers=2, on_progress=seen.append)
    assert first.evaluated == 5 and seen[-1].evaluated == 5

    rows = _rows(run_dir)
    assert len(rows) == len(first.records)
    assert set(rows[0]) >= {"trial", "topology", "cluster", "dice", "iterations", "seconds"}
    finished = [row for row in rows if row["state"] == "finished"]
    assert all(row["iterations"] == "3" for row in finished)
    best = max(finished, key=lambda row: float(row["dice"]))
    architecture = Architecture.load(run_dir / "coarse" / "best_topology.json")
    assert code_text(architecture.levels) == best["topology"]
    assert set(architecture.ops) == {"3d"}
    assert (run_dir / "coarse" / "search.png").read_bytes()[:4] == b"\x89PNG"
    assert "best Dice" in progress_table(first, 5).title

    before = {r.number: r for r in first.records if r.state == "finished"}
    second = run_coarse(make_job(run_dir, _settings(7)), toy_worker.toy_factory, workers=1)
    assert second.evaluated == 7
    assert all(second.records[number] == record for number, record in before.items())
    assert len(_rows(run_dir)) == len(second.records)


def test_resuming_with_another_strategy_is_refused(run_dir):
    open_search(make_job(run_dir, _settings(1)))
    open_search(make_job(run_dir, _settings(3)))  # a larger budget extends the same search
    with pytest.raises(StoreError, match="strategy 'random' -> 'c2f'"):
        run_coarse(make_job(run_dir, _settings(2, "c2f")), toy_worker.toy_factory)
    assert (run_dir / "coarse" / "trials.db").is_file()


def _toy_search_holding_a_candidate(run_dir, store, call):
    """A process running ``call`` (``coarse_worker(0, job, ...)`` or ``run_coarse(job, ...)``)
    on a slow toy search of ``run_dir``, once it holds a candidate."""
    script = (
        "import sys; from pathlib import Path; from c2fnas.search.coarse import *; "
        "from tests.search import toy_worker; "
        "settings = CoarseSettings(budget=3, strategy='random', heartbeat_interval=1, "
        "grace_period=5, poll_seconds=0.2); "
        f"job = make_job(Path(sys.argv[1]), settings); {call}"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    process = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while not any(r.code for r in store.snapshot().records) and time.monotonic() < deadline:
        time.sleep(0.05)
    return process


@pytest.mark.slow
def test_sigterm_releases_the_candidate_at_once(run_dir):
    store = open_search(make_job(run_dir, _settings(3)))
    worker = _toy_search_holding_a_candidate(
        run_dir, store, "coarse_worker(0, job, toy_worker.slow_factory)"
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 128 + signal.SIGTERM
    [record] = store.snapshot().records
    assert (record.state, record.failure) == ("released", "interrupted")


def _process_gone(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie: exited, waiting for its new parent to reap it


@pytest.mark.slow
def test_workers_stop_and_release_their_candidates_when_the_main_process_is_killed(run_dir):
    """SIGKILL of the command alone (no time to stop its workers) must not leave orphans."""
    store = open_search(make_job(run_dir, _settings(3)))
    main = _toy_search_holding_a_candidate(
        run_dir, store, "run_coarse(job, toy_worker.slow_factory, workers=1)"
    )
    main.kill()
    main.wait()
    [held] = store.snapshot().records
    worker_pid = int(held.worker.split("-")[-2])
    deadline = time.monotonic() + 20
    while not _process_gone(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _process_gone(worker_pid):
        os.kill(worker_pid, signal.SIGKILL)
        pytest.fail("the worker outlived its main process")
    [record] = store.snapshot().records
    assert (record.state, record.failure) == ("released", "interrupted")
