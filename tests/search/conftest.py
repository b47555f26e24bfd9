import pytest

from tests.search.toy_worker import toy_run_folder


@pytest.fixture
def run_dir(tmp_path):
    """A run folder with the files a search reads before any training (plan, case list)."""
    return toy_run_folder(tmp_path / "run")
