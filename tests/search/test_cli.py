"""``c2fnas search coarse`` end to end on a tiny synthetic dataset with the smoke preset."""

import csv

import pytest
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.space import Architecture

runner = CliRunner()


def stderr(result):
    """Rich wraps long lines at the terminal width; join them back."""
    return result.stderr.replace("\n", "")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    dataset = make_synthetic_dataset(root / "data", cases=5, shape=(32, 32, 24))
    preprocess_dataset(dataset, root / "run")
    return root / "run"


FAST = """
training:
  stride: 16
search:
  coarse_networks: 2
  iterations: 2
  milestones: [1]
"""


@pytest.mark.slow
def test_coarse_search_end_to_end(run_dir, tmp_path):
    override = tmp_path / "fast.yaml"
    override.write_text(FAST)
    arguments = ["search", "coarse", str(run_dir), "--preset", "smoke", "--config", str(override)]
    result = runner.invoke(app, [*arguments, "--width", "0.125", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "compute estimate: 2 networks x 2 iterations x batch 2" in result.stdout
    assert "best topology" in result.stdout

    coarse = run_dir / "coarse"
    with open(coarse / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    finished = [row for row in rows if row["state"] == "finished"]
    assert len(finished) == 2 and len({row["topology"] for row in rows}) == len(rows)
    assert all(0.0 <= float(row["dice"]) <= 1.0 and row["iterations"] == "2" for row in finished)
    best = Architecture.load(coarse / "best_topology.json")
    best_row = max(finished, key=lambda row: float(row["dice"]))
    assert "-".join(map(str, best.levels)) == best_row["topology"]
    assert set(best.ops) == {"3d"} and (coarse / "search.png").is_file()
    for row in finished:  # each candidate trained in its own folder, at the search schedule
        config = (coarse / "candidates" / row["topology"] / "config.yaml").read_text()
        assert "iterations: 2" in config


def test_user_errors_are_one_red_line(run_dir, tmp_path):
    result = runner.invoke(app, ["search", "coarse", str(tmp_path), "--preset", "smoke"])
    assert result.exit_code == 2 and "plan.json" in stderr(result)
    result = runner.invoke(
        app, ["search", "coarse", str(run_dir), "--preset", "smoke", "--strategy", "annealing"]
    )
    assert result.exit_code == 2 and "unknown strategy 'annealing'" in stderr(result)
    result = runner.invoke(
        app, ["search", "coarse", str(run_dir), "--preset", "smoke", "--width", "-1"]
    )
    assert result.exit_code == 2 and "width" in stderr(result)
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  coarse_netwroks: 3\n")
    result = runner.invoke(
        app, ["search", "coarse", str(run_dir), "--preset", "smoke", "--config", str(bad)]
    )
    assert result.exit_code == 2 and "coarse_netwroks" in stderr(result)
