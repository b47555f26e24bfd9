import pytest

from c2fnas.search.store import TrialStore
from tests.search.toy_worker import toy_run_folder


@pytest.fixture
def run_dir(tmp_path):
    """A run folder with the files a search reads before any training (plan, case list)."""
    return toy_run_folder(tmp_path / "run")


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage(request, tmp_path):
    """Every backend of the trial store, outside any run folder made under ``tmp_path`` by a
    test (as a database server shared by machines); PostgreSQL only where a server is given
    (CI)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'coarse' / 'trials.db'}"
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = str(tmp_path / "coarse" / "trials.journal")
    request.getfixturevalue("closing_stores")  # after the database: closed before it is dropped
    return url


@pytest.fixture
def closing_stores(monkeypatch):
    """Close every ``TrialStore`` a test opens, so heartbeats of trials it left running (as a
    killed worker's) stop with the test rather than beat on against a dropped database."""
    opened = []
    open_store = TrialStore.__init__

    def tracked(self, *args, **kwargs):
        open_store(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(TrialStore, "__init__", tracked)
    yield
    for store in opened:
        store.close()
