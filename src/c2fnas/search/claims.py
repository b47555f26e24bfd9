"""Atomic claims: two workers never train the same candidate, and no more than the budget runs.

Reading the trial list, choosing a topology and writing it on one's trial are three steps; two
workers interleaving them would both pick the same topology. Checking again after writing does not
help either (both may write, then both see the other). So the decision is made by one atomic
operation of the storage itself:

- SQL storages (SQLite, PostgreSQL, MySQL): a table ``c2fnas_claims`` in the same database with
  primary key (study, claim). Claiming a candidate is one ``INSERT`` of its key; the database lets
  exactly one of two concurrent inserts of the same key succeed (SQLite serialises writers;
  PostgreSQL and MySQL enforce the unique index across transactions). The budget works the same
  way: before its candidate, a trial claims one of the keys ``slot:0`` .. ``slot:{budget-1}``, so
  at most ``budget`` trials are ever evaluated or running. A claim whose trial was released (its
  worker died) is removed by a ``DELETE`` conditioned on that trial's number, so two workers
  taking it over cannot both win: only one delete removes the row and only one insert succeeds.
- Journal files: the whole read-check-write runs under an exclusive lock file created with
  ``O_CREAT | O_EXCL`` (Optuna's ``JournalFileOpenLock``, safe on local disks and NFSv3+). The
  candidate is written to the journal before the lock is released, so the next holder sees it.
  A worker killed while holding the lock blocks others for at most the lock's grace period.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import optuna
import sqlalchemy
from optuna.storages.journal import JournalFileOpenLock

from c2fnas.search.strategies import Code


class ClaimStore(Protocol):
    """What claiming needs of the trial store (``store.TrialStore``, which imports this module)."""

    key: str

    def record(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None: ...

    def holds(self, number: int) -> bool:
        """Whether trial ``number`` still owns its candidate (not released)."""
        ...

    def held(self, excluding: int) -> list[Code]:
        """The candidates of trials that hold one (not released), but trial ``excluding``."""
        ...


_LOCK_GRACE_SECONDS = 30


ClaimResult = Literal["claimed", "taken", "full"]
"""``taken``: a live trial holds the candidate; ``full``: the budget is held by other trials."""


class Claims(Protocol):
    def claim(
        self,
        store: ClaimStore,
        trial: optuna.Trial,
        code: Code,
        attrs: dict[str, Any],
        budget: int,
    ) -> ClaimResult:
        """Make ``trial`` the holder of ``code`` unless a live trial holds it or the budget is
        held by ``budget`` other trials (running, scored, failed or pruned)."""
        ...


def _key(code: Code) -> str:
    return ",".join(str(level) for level in code)


def _record_claim(
    store: ClaimStore, trial: optuna.Trial, code: Code, attrs: dict[str, Any]
) -> bool:
    try:
        store.record(trial, {store.key: list(code), **attrs})
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # our own trial was failed as dead meanwhile: the claim lapses with it
    return True


class SqlClaims:
    """Claims (candidates and budget slots) as rows of a table keyed by (study, claim)."""

    def __init__(self, engine: sqlalchemy.engine.Engine, study_name: str) -> None:
        self.engine = engine
        self.study_name = study_name
        self._slotted: set[int] = set()  # trials of this process that hold a budget slot
        metadata = sqlalchemy.MetaData()
        self.table = sqlalchemy.Table(
            "c2fnas_claims",
            metadata,
            sqlalchemy.Column("study", sqlalchemy.String(256), primary_key=True),
            sqlalchemy.Column("claim", sqlalchemy.String(128), primary_key=True),
            sqlalchemy.Column("trial_number", sqlalchemy.Integer, nullable=False),
        )
        try:
            metadata.create_all(engine, checkfirst=True)
        except sqlalchemy.exc.DatabaseError:
            # Another worker created the table between the check and the create.
            if not sqlalchemy.inspect(engine).has_table("c2fnas_claims"):
                raise

    def claim(
        self,
        store: ClaimStore,
        trial: optuna.Trial,
        code: Code,
        attrs: dict[str, Any],
        budget: int,
    ) -> ClaimResult:
        if trial.number not in self._slotted:
            if not self._take_slot(store, trial.number, budget):
                return "full"
            self._slotted.add(trial.number)
        if not self._take(store, _key(code), trial.number):
            return "taken"
        return "claimed" if _record_claim(store, trial, code, attrs) else "taken"

    def _take_slot(self, store: ClaimStore, number: int, budget: int) -> bool:
        query = sqlalchemy.select(self.table.c.claim).where(
            self.table.c.study == self.study_name, self.table.c.claim.like("slot:%")
        )
        with self.engine.connect() as connection:
            held = {str(name) for name in connection.execute(query).scalars()}
        slots = [f"slot:{index}" for index in range(budget)]
        free_first = [s for s in slots if s not in held] + [s for s in slots if s in held]
        return any(self._take(store, slot, number) for slot in free_first)

    def _take(self, store: ClaimStore, key: str, number: int) -> bool:
        """Insert ``key`` for trial ``number``, taking it over from a released trial."""
        for _ in range(3):
            if self._insert(key, number):
                return True
            holder = self._holder(key)
            if holder == number:
                return True
            if holder is not None:
                if store.holds(holder):
                    return False
                self._release(key, holder)
        return False

    def _insert(self, key: str, number: int) -> bool:
        row = {"study": self.study_name, "claim": key, "trial_number": number}
        try:
            with self.engine.begin() as connection:
                connection.execute(self.table.insert().values(**row))
        except sqlalchemy.exc.IntegrityError:
            return False
        return True

    def _holder(self, key: str) -> int | None:
        query = sqlalchemy.select(self.table.c.trial_number).where(
            self.table.c.study == self.study_name, self.table.c.claim == key
        )
        with self.engine.connect() as connection:
            number = connection.execute(query).scalar()
        return None if number is None else int(number)

    def _release(self, key: str, number: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                self.table.delete().where(
                    self.table.c.study == self.study_name,
                    self.table.c.claim == key,
                    self.table.c.trial_number == number,
                )
            )


class LockedClaims:
    """Claims decided under an exclusive lock file next to a journal file."""

    def __init__(self, journal_path: Path) -> None:
        self.lock = JournalFileOpenLock(f"{journal_path}.claims", _LOCK_GRACE_SECONDS)

    def claim(
        self,
        store: ClaimStore,
        trial: optuna.Trial,
        code: Code,
        attrs: dict[str, Any],
        budget: int,
    ) -> ClaimResult:
        self.lock.acquire()
        try:
            held = store.held(excluding=trial.number)
            if len(held) >= budget:
                return "full"
            if code in held:
                return "taken"
            return "claimed" if _record_claim(store, trial, code, attrs) else "taken"
        finally:
            self.lock.release()
