"""The worker loop: claim a topology, evaluate it, report, until the budget is spent.

Workers never wait for each other (SPEC section 2): each one asks the shared trial store for work
whenever it is idle. ``launch_workers`` starts N local worker processes; on other machines the
same command joins the same store.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import optuna

from c2fnas.accel.process import default_threads, use_threads
from c2fnas.search.simulate import proposal_rng
from c2fnas.search.store import EVALUATION, RELEASED, Record, Snapshot, TrialStore
from c2fnas.search.strategies import NUM_CLUSTERS, Code, Strategy, topology_clusters
from c2fnas.signals import exit_again_when_swallowed, exit_on_signal
from c2fnas.space import Architecture

logger = logging.getLogger(__name__)

MAX_RELEASES = 3
"""A candidate released this often (its workers died) is no longer handed out again first."""
STOP_SECONDS = 60
"""How long a stopped search waits for a worker to release its candidate before killing it."""


class CandidateFailed(Exception):
    """Raised by an evaluator for a candidate that cannot be scored (the reason is recorded)."""


@dataclass
class TrialContext:
    """What an evaluator may use besides the architecture.

    Attributes:
        number: the trial number (unique in the store; names the candidate's folder).
        code: the topology code.
        worker: the worker's name.
        iterations: set by the evaluator to the iterations it trained (recorded); None for
            evaluators that train nothing (the fine stage scores colourings with the supernet).
    """

    number: int
    code: Code
    worker: str
    trial: optuna.Trial | None = field(repr=False)
    """None on the non-zero ranks of a ``torchrun`` worker: only rank 0 talks to the store."""
    iterations: int | None = None

    def report(self, score: float, iteration: int) -> None:
        """Report an intermediate validation score (for pruners) at ``iteration``."""
        if self.trial is not None:
            self.trial.report(score, iteration)
        self.iterations = iteration

    def should_prune(self) -> bool:
        return self.trial is not None and bool(self.trial.should_prune())


Evaluate = Callable[[Architecture, TrialContext], float]


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def run_worker(
    store: TrialStore,
    strategy: Strategy,
    evaluate: Evaluate,
    budget: int,
    *,
    seed: int = 0,
    worker: str = "",
    poll_seconds: float = 10.0,
    clusters: int | None = NUM_CLUSTERS,
    max_failures_in_a_row: int = 5,
    architecture_of: Callable[[Code], Architecture] = Architecture.coarse,
) -> int:
    """Evaluate candidates until ``budget`` networks are evaluated (scored or failed).

    When the budget is covered by running candidates, the worker keeps polling instead of
    leaving: if one of those workers dies, its topology is handed out again and this worker
    takes it. Each trial records the topology's cluster (K-means with ``clusters`` and
    ``seed``) for reports, whatever the strategy; ``clusters=None`` records none (the fine
    stage, whose codes are colourings). ``architecture_of`` turns a claimed code into the
    candidate to evaluate (default: the coarse stage's all-``3d`` network of a topology).
    When the last ``max_failures_in_a_row`` evaluated candidates all failed, the fault is
    probably not the candidates' (bad data, no memory at all): the worker stops instead of
    burning the budget. Returns the number of candidates this worker evaluated.
    """
    worker = worker or default_worker_name()
    # once, before any trial is held
    cluster_of = topology_clusters(seed, clusters) if clusters is not None else {}
    done = 0
    reported: set[int] = set()
    while True:
        store.fail_stale()
        snapshot = store.snapshot()
        running = snapshot.count("running")
        if snapshot.evaluated >= budget:
            logger.info("%s: budget of %d evaluated networks reached", worker, budget)
            return done
        recent = _last_evaluated(snapshot, max_failures_in_a_row)
        if len(recent) == max_failures_in_a_row and all(r.state == "failed" for r in recent):
            logger.error(
                "%s: the last %d candidates all failed (last: %s); stopping. Fix the cause and "
                "rerun the command to continue.",
                worker,
                len(recent),
                recent[-1].failure,
            )
            return done
        claimed = None
        if snapshot.evaluated + running < budget:
            claimed = _claim_next(store, strategy, budget, seed, worker, cluster_of)
        if claimed is None:
            if running == 0 and snapshot.evaluated + running < budget:
                logger.info("%s: no topology left to propose", worker)
                return done
            report_silent_workers(store, snapshot, worker, reported)
            time.sleep(poll_seconds)
            continue
        _evaluate(store, evaluate, claimed, worker, architecture_of)
        done += 1


def report_silent_workers(
    store: TrialStore, snapshot: Snapshot, who: str, reported: set[int]
) -> None:
    """Log, once per trial, a running trial whose worker has been silent for two heartbeats:
    what the search waits for and how long at most. Adds the trials logged to ``reported``."""
    ages = store.heartbeat_ages()
    for record in snapshot.records:
        age = ages.get(record.number)
        if record.state != "running" or record.number in reported or age is None:
            continue
        if age < 2 * store.heartbeat_interval:
            continue
        reported.add(record.number)
        logger.warning(
            "%s: waiting for trial %d (worker %s, candidate %s): no heartbeat for %.0f s. A "
            "worker silent for %d s (the grace period) counts as dead; its candidate is then "
            "handed out again, in at most %.0f s.",
            who,
            record.number,
            record.worker or "?",
            list(record.code) if record.code else "none yet",
            age,
            store.grace_period,
            max(0.0, store.grace_period - age),
        )


def _last_evaluated(snapshot: Snapshot, count: int) -> list[Record]:
    evaluated = [r for r in snapshot.records if r.state in ("finished", "failed", "pruned")]
    evaluated.sort(key=lambda r: (r.completed_at is None, r.completed_at, r.number))
    return evaluated[-count:] if count > 0 else []


def abandoned(snapshot: Snapshot, limit: int = MAX_RELEASES) -> list[Code]:
    """Candidates whose worker died or was stopped mid-training, oldest first.

    They are handed out again before any new proposal, whatever the strategy, so that their
    training resumes from its checkpoint instead of being left half done. One released
    ``limit`` times (perhaps it kills its worker, e.g. through the kernel's OOM killer) is left
    to the strategy.
    """
    live = {r.code for r in snapshot.records if r.state != "released"}
    releases = Counter(r.code for r in snapshot.records if r.state == "released" and r.code)
    return [code for code, count in releases.items() if code not in live and count < limit]


def _claim_next(
    store: TrialStore,
    strategy: Strategy,
    budget: int,
    seed: int,
    worker: str,
    cluster_of: dict[Code, int],
    attempts: int = 20,
) -> tuple[optuna.Trial, Code] | None:
    snapshot = store.snapshot()
    lost: set[Code] = set()
    trial = None
    reason = "nothing left to claim"
    try:
        for attempt in range(attempts):
            code = next((c for c in abandoned(snapshot) if c not in lost), None)
            if code is None:
                rng = proposal_rng(seed, len(snapshot.records), attempt)
                code = strategy.propose(snapshot.finished, snapshot.pending | lost, rng)
            if code is None:
                break
            if trial is None:
                trial = store.ask()
            attrs: dict[str, Any] = {"worker": worker}
            if code in cluster_of:
                attrs["cluster"] = cluster_of[code]
            result = store.claim(trial, code, attrs, budget)
            if result == "claimed":
                logger.info("%s: trial %d claims %s", worker, trial.number, list(code))
                return trial, code
            if result == "full":
                reason = "the budget is held by other trials"
                break
            lost.add(code)  # another worker was faster; look again with fresh history
            snapshot = store.snapshot()
    except (KeyboardInterrupt, SystemExit):
        if trial is not None:
            store.fail(trial, "interrupted", RELEASED, {"worker": worker})
        raise
    if trial is not None:
        store.fail(trial, reason, RELEASED, {"worker": worker})
    return None


def _evaluate(
    store: TrialStore,
    evaluate: Evaluate,
    claimed: tuple[optuna.Trial, Code],
    worker: str,
    architecture_of: Callable[[Code], Architecture],
) -> None:
    trial, code = claimed
    context = TrialContext(number=trial.number, code=code, worker=worker, trial=trial)
    start = time.perf_counter()

    def attrs() -> dict[str, Any]:
        attributes: dict[str, Any] = {"seconds": round(time.perf_counter() - start, 3)}
        if context.iterations is not None:
            attributes["iterations"] = context.iterations
        return attributes

    try:
        score = float(evaluate(architecture_of(code), context))
        if not math.isfinite(score):
            raise CandidateFailed(f"score is {score}")
    except optuna.TrialPruned as pruned:
        store.prune(trial, {**attrs(), "failure": str(pruned) or "pruned"})
        logger.info("%s: trial %d pruned", worker, trial.number)
        return
    except (KeyboardInterrupt, SystemExit):
        store.fail(trial, "interrupted", RELEASED, attrs())
        raise
    except Exception as error:  # any training failure: record it, keep searching
        reason = f"{type(error).__name__}: {error}"
        store.fail(trial, reason, EVALUATION, attrs())
        logger.warning("%s: trial %d failed: %s", worker, trial.number, reason)
        return
    store.complete(trial, score, attrs())
    logger.info("%s: trial %d scored %.4f", worker, trial.number, score)


def start_workers(
    count: int, target: Callable[..., Any], args: tuple[Any, ...], gpus: int = 0
) -> list[BaseProcess]:
    """Start ``target(index, *args)`` in ``count`` fresh processes.

    With ``gpus > 0``, worker ``index`` sees only GPU ``index % gpus`` (``CUDA_VISIBLE_DEVICES``
    is set before the child imports torch). Without GPUs the threads (``default_threads``) are
    shared out, ``threads // count`` each, because OpenMP threads that outnumber the cores spin
    against each other and can make every step many times slower. Processes are spawned, not
    forked, so no CUDA or database connection leaks from the parent.

    The workers start with Ctrl-C ignored (an ignored signal stays ignored across ``exec``): a
    Ctrl-C in the terminal reaches every process of the group, and a worker would print a
    traceback from wherever it was, its imports included. The parent stops them with SIGTERM
    instead (``supervise``), on which they release their candidates.
    """
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    threads = None if gpus > 0 else max(1, default_threads() // max(1, count))
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
    try:
        for index in range(count):
            gpu = str(index % gpus) if gpus > 0 else None
            process = context.Process(
                target=_worker_entry,
                args=(os.getpid(), gpu, threads, target, index, *args),
                name=f"worker-{index}",
            )
            process.start()
            processes.append(process)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return processes


def prepare_worker_process(index: int, log_dir: Path) -> str:
    """Set up a worker process: its name, its own log file, and SIGTERM handling.

    Schedulers stop jobs with SIGTERM: the worker then leaves like on Ctrl-C, releasing its
    candidate at once. Returns the worker's name (host, process id, index).
    """
    name = f"{socket.gethostname()}-{os.getpid()}-w{index}"
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / f"{name}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    signal.signal(signal.SIGTERM, exit_on_signal)
    sys.unraisablehook = exit_again_when_swallowed
    return name


def supervise(
    processes: list[BaseProcess], refresh: Callable[[], None], refresh_seconds: float = 5.0
) -> None:
    """Wait for worker processes, calling ``refresh`` every ``refresh_seconds`` and at the end.

    SIGTERM or Ctrl-C to this process (a scheduler stopping the job, a user) terminates the
    workers, which release their candidates (``start_workers`` leaves Ctrl-C to this process).
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, exit_on_signal) if in_main_thread else None
    try:
        while any(process.is_alive() for process in processes):
            refresh()
            for process in processes:
                process.join(timeout=refresh_seconds / max(1, len(processes)))
    except (SystemExit, KeyboardInterrupt):
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=STOP_SECONDS)
            if process.is_alive():  # stuck: its candidate comes back after the grace period
                logger.warning("%s did not stop in %d s: killed", process.name, STOP_SECONDS)
                process.kill()
        raise
    finally:
        for process in processes:
            process.join()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        refresh()


def run_local_workers(
    store: TrialStore,
    worker: Callable[..., None],
    args: tuple[Any, ...],
    workers: int,
    gpus: int,
    write_outputs: Callable[[Snapshot], object],
    who: str,
    logs: Path,
    on_progress: Callable[[Snapshot], None] | None = None,
    refresh_seconds: float = 5.0,
) -> Snapshot:
    """What both searches do while they run: start ``workers`` processes running
    ``worker(index, *args)``, and every ``refresh_seconds`` until they end (and once more) write
    the stage's outputs, report silent workers and call ``on_progress``; the final state."""
    reported: set[int] = set()

    def refresh() -> None:
        snapshot = store.snapshot()
        report_silent_workers(store, snapshot, who, reported)
        write_outputs(snapshot)
        if on_progress is not None:
            on_progress(snapshot)

    processes = start_workers(workers, worker, args, gpus=gpus)
    supervise(processes, refresh, refresh_seconds)
    failed = [process.name for process in processes if process.exitcode not in (0, None)]
    if failed:
        logger.error("worker processes %s exited with an error; see %s", failed, logs)
    return store.snapshot()


def launch_workers(
    count: int, target: Callable[..., Any], args: tuple[Any, ...], gpus: int = 0
) -> list[int]:
    """``start_workers`` and wait for all of them; returns their exit codes."""
    processes = start_workers(count, target, args, gpus)
    for process in processes:
        process.join()
    return [process.exitcode if process.exitcode is not None else -1 for process in processes]


def _worker_entry(
    parent: int, gpu: str | None, threads: int | None, target: Callable[..., Any], *args: Any
) -> None:
    _stop_with_parent(parent)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    if threads is not None:
        use_threads(threads)
    target(*args)


def _stop_with_parent(parent: int, check_seconds: float = 1.0) -> None:
    """SIGTERM this worker once the process that started it is gone.

    A main process killed with SIGKILL cannot stop its workers; orphans would go on searching
    and heartbeating while nobody refreshes the outputs. On SIGTERM a worker releases its
    candidate at once (``prepare_worker_process``), so a rerun resumes it. A thread watching the
    parent id works on every platform (``prctl(PR_SET_PDEATHSIG)`` is Linux-only and fires when
    the starting *thread* ends).
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(check_seconds)
        logger.warning("the main process %d is gone; this worker stops", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
