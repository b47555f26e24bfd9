import pytest

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
        return f"sqlite:///{tmp_path / 'coarse' / 'trials.db'}"
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return str(tmp_path / "coarse" / "trials.journal")
