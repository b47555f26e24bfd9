"""The trial store: one Optuna study, used through ask/tell, shared by every worker of a search.

Where it lives (``open_store``): an SQLite file by default, any SQLAlchemy database URL
(``postgresql://...``) for workers on many machines, or a path to an Optuna journal file.

Each trial is one candidate. The candidate (a tuple, stored as a list under the store's ``key``:
``topology`` in the coarse stage; the fine stage can store colourings the same way) and the
bookkeeping are trial user attributes (``cluster``, ``worker``, ``seconds``, ``iterations``,
``failure``, ``failure_kind``). A trial is in one of these conditions:

- running: a worker holds its topology (state RUNNING, heartbeat alive);
- finished: scored (COMPLETE);
- failed: training raised (``failure_kind = "evaluation"``); pruned: stopped early by the
  pruner. Both count as evaluated and are never handed out again;
- released: the worker died (its heartbeat stopped and the trial was failed as stale), was
  interrupted, or found nothing to claim. Its topology is free again.

Claiming is atomic through ``claims.py`` (a database table keyed by candidate and by budget slot
for SQL storages, a lock file for journal files): two workers never hold the same candidate, and
never more than the budget is evaluated.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._rdb import models as rdb_models  # heartbeat times: no public reader
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from c2fnas.files.run_folder import RunFolder
from c2fnas.search.claims import ClaimResult, Claims, Code, LockedClaims, SqlClaims

logger = logging.getLogger(__name__)

EVALUATION = "evaluation"
"""``failure_kind`` of a candidate whose training raised: it counts as evaluated."""
RELEASED = "released"
"""``failure_kind`` of a trial given up without an evaluation (interrupt, nothing to claim)."""
_JOURNAL_HEARTBEAT = "c2fnas:heartbeat"


class StoreError(Exception):
    """The trial store cannot be opened or belongs to a different search."""


@dataclass(frozen=True)
class Record:
    """One trial as the search sees it."""

    number: int
    state: str  # "running", "finished", "failed", "pruned", "released"
    code: Code | None
    score: float | None
    cluster: int | None
    worker: str
    seconds: float | None
    iterations: int | None
    failure: str
    completed_at: datetime | None


@dataclass(frozen=True)
class Snapshot:
    records: tuple[Record, ...]

    @property
    def finished(self) -> list[tuple[Code, float]]:
        """Scored topologies in the order they finished (what strategies rank)."""
        done = [r for r in self.records if r.state == "finished"]
        done.sort(key=lambda r: (r.completed_at or datetime.min, r.number))
        return [(r.code, r.score) for r in done if r.code is not None and r.score is not None]

    @property
    def pending(self) -> set[Code]:
        """Topologies that must not be proposed: held by a live worker, or failed."""
        held = ("running", "failed", "pruned")
        return {r.code for r in self.records if r.state in held and r.code}

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.records)

    @property
    def evaluated(self) -> int:
        """Candidates that count towards the budget: scored, failed or pruned."""
        return self.count("finished") + self.count("failed") + self.count("pruned")

    def iterations_saved(self, iterations: int) -> int:
        """Training iterations the pruner saved, with ``iterations`` per full training."""
        return sum(
            max(0, iterations - (r.iterations or 0)) for r in self.records if r.state == "pruned"
        )

    @property
    def best(self) -> Record | None:
        scored = [r for r in self.records if r.state == "finished" and r.score is not None]
        return max(scored, key=lambda r: (r.score, -r.number)) if scored else None


def default_storage(run_dir: Path, stage: str = "coarse") -> str:
    """The SQLite file of a search stage: ``RUN_DIR/<stage>/trials.db``."""
    return f"sqlite:///{RunFolder(run_dir).search(stage).trials_db.resolve()}"


def is_database_url(storage: str) -> bool:
    return "://" in storage


class TrialStore:
    """The study of one search stage, with atomic claims and dead-worker detection.

    Args:
        storage: a database URL, or a path to a journal file.
        study_name: one store may hold several studies (e.g. ``coarse`` and ``fine``).
        heartbeat_interval: seconds between a busy worker's heartbeats.
        grace_period: seconds without a heartbeat after which a running trial is failed and
            its candidate handed out again; several heartbeat intervals.
        pruner: Optuna pruner deciding ``TrialContext.should_prune``.
        key: the user attribute holding the candidate.
    """

    def __init__(
        self,
        storage: str,
        study_name: str = "coarse",
        heartbeat_interval: int = 60,
        grace_period: int = 300,
        pruner: optuna.pruners.BasePruner | None = None,
        key: str = "topology",
    ) -> None:
        if heartbeat_interval < 1 or grace_period <= heartbeat_interval:
            raise StoreError("need heartbeat_interval >= 1 s and grace_period > heartbeat_interval")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.storage_spec = storage
        self.key = key
        self._heartbeats: dict[int, tuple[threading.Event, threading.Thread]] = {}
        # Workers starting together on a new database race to create its schema; the loser
        # finds it created on the next try.
        for attempt in range(5):
            try:
                self._storage, self.claims = _open_backend(
                    storage, study_name, heartbeat_interval, grace_period
                )
                self.study = optuna.create_study(
                    storage=self._storage,
                    study_name=study_name,
                    direction="maximize",
                    load_if_exists=True,
                    pruner=pruner,
                )
                break
            except Exception as error:  # optuna raises many kinds (SQLAlchemy, journal, version)
                if attempt == 4 or not _is_creation_race(error):
                    raise StoreError(f"cannot open trial store {storage}: {error}") from error
                time.sleep(0.2 * (attempt + 1))

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Record the search's settings in a new study, or check them against an existing one.

        Raises:
            StoreError: the store holds a search run with different settings.
        """
        stored = self.study.user_attrs
        for key, value in settings.items():
            if key not in stored:
                self.study.set_user_attr(key, value)
            elif stored[key] != value:
                raise StoreError(
                    f"trial store {self.storage_spec} holds a search with {key}={stored[key]!r}, "
                    f"not {value!r}; use another --storage or the same settings to resume"
                )

    def snapshot(self) -> Snapshot:
        trials = self.study.get_trials(deepcopy=False)
        return Snapshot(tuple(_record(trial, self.key) for trial in trials))

    def holds(self, number: int) -> bool:
        """Whether trial ``number`` still owns its topology (not released)."""
        trial = self._storage.get_trial(self._trial_id(number))
        return _record(trial, self.key).state != "released"

    def held(self, excluding: int) -> list[Code]:
        """The candidates of trials that hold one (not released), but trial ``excluding``."""
        return [
            record.code
            for record in self.snapshot().records
            if record.code is not None and record.state != "released" and record.number != excluding
        ]

    def fail_stale(self) -> None:
        """Fail running trials whose worker stopped sending heartbeats."""
        if isinstance(self._storage, RDBStorage):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            return
        now = time.time()
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            start = trial.datetime_start.timestamp() if trial.datetime_start else now
            last = float(trial.system_attrs.get(_JOURNAL_HEARTBEAT, start))
            if now - last > self.grace_period:
                try:
                    self._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                    logger.warning("trial %d: worker stopped, topology released", trial.number)
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass  # another worker failed it first

    def heartbeat_ages(self) -> dict[int, float]:
        """Seconds since the last heartbeat of each running trial that has one, by number.

        Measured by the database's clock for SQL storages (workers' clocks may differ).
        """
        if not isinstance(self._storage, RDBStorage):
            now = time.time()
            return {
                trial.number: now - float(trial.system_attrs[_JOURNAL_HEARTBEAT])
                for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if _JOURNAL_HEARTBEAT in trial.system_attrs
            }
        heartbeat = rdb_models.TrialHeartbeatModel
        trial_table = rdb_models.TrialModel
        query = (
            sqlalchemy.select(trial_table.number, heartbeat.heartbeat, sqlalchemy.func.now())
            .join(heartbeat, heartbeat.trial_id == trial_table.trial_id)
            .where(
                trial_table.study_id == self.study._study_id,
                trial_table.state == TrialState.RUNNING,
            )
        )
        with self._storage.engine.connect() as connection:
            rows = connection.execute(query).all()
        # PostgreSQL's now() carries a time zone, the stored heartbeat none (as in Optuna).
        return {
            int(number): (now.replace(tzinfo=None) - beat).total_seconds()
            for number, beat, now in rows
        }

    def ask(self) -> optuna.Trial:
        """A new RUNNING trial whose heartbeat runs in this process until it is told."""
        with warnings.catch_warnings():
            # Optuna suggests heartbeats with ``optimize``; we send them ourselves (below).
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            trial = self.study.ask()
        self._beat(trial)  # a trial is only detected as dead once it has a heartbeat
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.heartbeat_interval):
                try:
                    self._beat(trial)
                except Exception:  # a missed beat is retried; the grace period absorbs it
                    logger.exception("trial %d: heartbeat failed", trial.number)

        thread = threading.Thread(target=loop, name=f"heartbeat-{trial.number}", daemon=True)
        thread.start()
        self._heartbeats[trial.number] = (stop, thread)
        return trial

    def _beat(self, trial: optuna.Trial) -> None:
        # Optuna exposes no public trial id on ``Trial``; storages are keyed by it.
        trial_id = trial._trial_id
        if isinstance(self._storage, RDBStorage):
            self._storage.record_heartbeat(trial_id)
        else:
            self._storage.set_trial_system_attr(trial_id, _JOURNAL_HEARTBEAT, time.time())

    def close(self) -> None:
        """Stop the heartbeats of this process's unfinished trials (they then go stale as a
        stopped worker's do) and close the database connections."""
        for number in list(self._heartbeats):
            stop, thread = self._heartbeats.pop(number)
            stop.set()
            thread.join()
        if isinstance(self._storage, RDBStorage):
            self._storage.engine.dispose()

    def _stop_heartbeat(self, trial: optuna.Trial) -> None:
        stop, thread = self._heartbeats.pop(trial.number, (None, None))
        if stop is not None and thread is not None:
            stop.set()
            thread.join()

    def claim(
        self, trial: optuna.Trial, code: Code, attrs: dict[str, Any], budget: int
    ) -> ClaimResult:
        """Atomically make ``trial`` the only holder of ``code`` within a budget of ``budget``
        candidates; records ``code`` and ``attrs`` on the trial when ``claimed``."""
        return self.claims.claim(self, trial, code, attrs, budget)

    def record(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def complete(self, trial: optuna.Trial, score: float, attrs: dict[str, Any]) -> bool:
        return self._tell(trial, attrs, TrialState.COMPLETE, score)

    def fail(self, trial: optuna.Trial, reason: str, kind: str, attrs: dict[str, Any]) -> bool:
        attrs = {**attrs, "failure": reason, "failure_kind": kind}
        return self._tell(trial, attrs, TrialState.FAIL)

    def prune(self, trial: optuna.Trial, attrs: dict[str, Any]) -> bool:
        return self._tell(trial, attrs, TrialState.PRUNED)

    def _tell(
        self,
        trial: optuna.Trial,
        attrs: dict[str, Any],
        state: TrialState,
        score: float | None = None,
    ) -> bool:
        """Finish ``trial``; False when another worker already failed it as dead."""
        self._stop_heartbeat(trial)
        try:
            self.record(trial, attrs)
            self.study.tell(trial, score, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            logger.warning(
                "trial %d was failed as dead (no heartbeat for %d s) before it finished; "
                "its result is dropped. Raise the grace period if workers stall this long.",
                trial.number,
                self.grace_period,
            )
            return False
        return True

    def _trial_id(self, number: int) -> int:
        return self._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)


def _record(trial: FrozenTrial, key: str) -> Record:
    attrs = trial.user_attrs
    code = tuple(attrs[key]) if key in attrs else None
    if trial.state == TrialState.COMPLETE:
        state = "finished"
    elif trial.state == TrialState.PRUNED:
        state = "pruned"
    elif trial.state == TrialState.RUNNING:
        state = "running"
    elif trial.state == TrialState.FAIL and attrs.get("failure_kind") == EVALUATION:
        state = "failed"
    else:
        state = "released"
    failure = str(attrs.get("failure", ""))
    if trial.state == TrialState.FAIL and not failure:
        failure = "worker stopped (no heartbeat)"
    return Record(
        number=trial.number,
        state=state,
        code=code,
        score=trial.value if trial.state == TrialState.COMPLETE else None,
        cluster=attrs.get("cluster"),
        worker=str(attrs.get("worker", "")),
        seconds=attrs.get("seconds"),
        iterations=attrs.get("iterations"),
        failure=failure,
        completed_at=trial.datetime_complete,
    )


def _is_creation_race(error: Exception) -> bool:
    return isinstance(error, sqlalchemy.exc.DatabaseError) or isinstance(
        error.__cause__, sqlalchemy.exc.DatabaseError
    )


def _open_backend(
    storage: str, study_name: str, heartbeat_interval: int, grace_period: int
) -> tuple[BaseStorage, Claims]:
    if is_database_url(storage):
        engine_kwargs: dict[str, Any] = {}
        if storage.startswith("sqlite"):
            # Many workers write one file: wait for its lock rather than fail at once.
            engine_kwargs["connect_args"] = {"timeout": 60}
            if storage.startswith("sqlite:///"):
                Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            backend = RDBStorage(
                storage,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
            )
        return backend, SqlClaims(backend.engine, study_name)
    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path))), LockedClaims(path)
