"""Atomic claims: two workers never train the same topology.

Reading the trial list, choosing a topology and writing it on one's trial are three steps; two
workers interleaving them would both pick the same topology. Checking again after writing does not
help either (both may write, then both see the other). So the decision is made by one atomic
operation of the storage itself:

- SQL storages (SQLite, PostgreSQL, MySQL): a table ``c2fnas_claims`` in the same database with
  primary key (study, topology). A claim is one ``INSERT``; the database lets exactly one of two
  concurrent inserts of the same key succeed (SQLite serialises writers; PostgreSQL and MySQL
  enforce the unique index across transactions). A claim whose trial was released (its worker
  died) is removed by a ``DELETE`` conditioned on that trial's number, so two workers reclaiming
  it cannot both win: only one delete removes the row and only one insert succeeds.
- Journal files: the whole read-check-write runs under an exclusive lock file created with
  ``O_CREAT | O_EXCL`` (Optuna's ``JournalFileOpenLock``, safe on local disks and NFSv3+). The
  topology is written to the journal before the lock is released, so the next holder sees it.
  A worker killed while holding the lock blocks others for at most the lock's grace period.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import optuna
import sqlalchemy
from optuna.storages.journal import JournalFileOpenLock

from c2fnas.search.strategies import Code

if TYPE_CHECKING:
    from c2fnas.search.store import TrialStore

_LOCK_GRACE_SECONDS = 30


class Claims(Protocol):
    def claim(
        self, store: TrialStore, trial: optuna.Trial, code: Code, attrs: dict[str, Any]
    ) -> bool:
        """Make ``trial`` the holder of ``code`` unless a live trial holds it already."""
        ...


def _key(code: Code) -> str:
    return ",".join(str(level) for level in code)


def _record_claim(
    store: TrialStore, trial: optuna.Trial, code: Code, attrs: dict[str, Any]
) -> bool:
    try:
        store.record(trial, {"topology": list(code), **attrs})
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # our own trial was failed as dead meanwhile: the claim lapses with it
    return True


class SqlClaims:
    """Claims as rows of a table with a primary key on (study, topology)."""

    def __init__(self, engine: sqlalchemy.engine.Engine, study_name: str) -> None:
        self.engine = engine
        self.study_name = study_name
        metadata = sqlalchemy.MetaData()
        self.table = sqlalchemy.Table(
            "c2fnas_claims",
            metadata,
            sqlalchemy.Column("study", sqlalchemy.String(256), primary_key=True),
            sqlalchemy.Column("topology", sqlalchemy.String(64), primary_key=True),
            sqlalchemy.Column("trial_number", sqlalchemy.Integer, nullable=False),
        )
        try:
            metadata.create_all(engine, checkfirst=True)
        except sqlalchemy.exc.DatabaseError:
            # Another worker created the table between the check and the create.
            if not sqlalchemy.inspect(engine).has_table("c2fnas_claims"):
                raise

    def claim(
        self, store: TrialStore, trial: optuna.Trial, code: Code, attrs: dict[str, Any]
    ) -> bool:
        key = _key(code)
        for _ in range(3):
            if self._insert(key, trial.number):
                return _record_claim(store, trial, code, attrs)
            holder = self._holder(key)
            if holder is not None:
                if store.holds(holder):
                    return False
                self._release(key, holder)
        return False

    def _insert(self, key: str, number: int) -> bool:
        row = {"study": self.study_name, "topology": key, "trial_number": number}
        try:
            with self.engine.begin() as connection:
                connection.execute(self.table.insert().values(**row))
        except sqlalchemy.exc.IntegrityError:
            return False
        return True

    def _holder(self, key: str) -> int | None:
        query = sqlalchemy.select(self.table.c.trial_number).where(
            self.table.c.study == self.study_name, self.table.c.topology == key
        )
        with self.engine.connect() as connection:
            number = connection.execute(query).scalar()
        return None if number is None else int(number)

    def _release(self, key: str, number: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                self.table.delete().where(
                    self.table.c.study == self.study_name,
                    self.table.c.topology == key,
                    self.table.c.trial_number == number,
                )
            )


class LockedClaims:
    """Claims decided under an exclusive lock file next to a journal file."""

    def __init__(self, journal_path: Path) -> None:
        self.lock = JournalFileOpenLock(f"{journal_path}.claims", _LOCK_GRACE_SECONDS)

    def claim(
        self, store: TrialStore, trial: optuna.Trial, code: Code, attrs: dict[str, Any]
    ) -> bool:
        self.lock.acquire()
        try:
            for record in store.snapshot().records:
                if record.code == code and record.state != "released":
                    return False
            return _record_claim(store, trial, code, attrs)
        finally:
            self.lock.release()
