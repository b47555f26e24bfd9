"""``c2fnas search coarse`` end to end on a tiny synthetic dataset with the smoke preset."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.space import Architecture

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


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
  width: 0.125
"""


@pytest.mark.slow
def test_coarse_search_end_to_end(run_dir, tmp_path):
    override = tmp_path / "fast.yaml"
    override.write_text(FAST)
    arguments = ["search", "coarse", str(run_dir), "--preset", "smoke", "--config", str(override)]
    # no --width: the candidates take search.width from the configuration, as in `c2fnas run`
    result = runner.invoke(app, [*arguments, "--workers", "1"])
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
        candidate = coarse / "candidates" / row["topology"]
        assert "iterations: 2" in (candidate / "config.yaml").read_text()
        assert Architecture.load(candidate / "last" / "architecture.json").width == 0.125
    # the same search at another width would rank candidates trained two ways together
    wider = runner.invoke(app, [*arguments, "--workers", "1", "--width", "0.25"])
    assert wider.exit_code == 2 and "width 0.125 -> 0.25" in stderr(wider)


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


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A database shared by "machines": PostgreSQL where a server is given (CI), else SQLite."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.mark.slow
def test_two_machines_with_their_own_run_folders_share_one_search(run_dir, database, tmp_path):
    """Two ``c2fnas search coarse`` processes, separate run folders (the same data), one store."""
    override = tmp_path / "fast.yaml"
    override.write_text(FAST.replace("coarse_networks: 2", "coarse_networks: 4"))
    folders = [tmp_path / name for name in ("machine_a", "machine_b")]
    for folder in folders:
        shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("coarse"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    commands = [
        [sys.executable, "-m", "c2fnas", "search", "coarse", str(folder), "--preset", "smoke"]
        + ["--config", str(override), "--width", "0.125", "--workers", "1"]
        + ["--storage", database]
        for folder in folders
    ]
    machines = [
        subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for command in commands
    ]
    outputs = [machine.communicate(timeout=600)[0].decode() for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], outputs

    tables = [_rows(folder) for folder in folders]
    finished = [row for row in tables[-1] if row["state"] == "finished"]
    assert len(finished) == 4
    topologies = [row["topology"] for row in tables[-1] if row["state"] != "released"]
    assert len(topologies) == len(set(topologies))  # no topology trained twice
    workers = {row["worker"] for row in finished}
    for folder in folders:  # each machine's worker trained some of them
        names = {path.stem for path in (folder / "coarse" / "logs").glob("*.log")}
        assert workers & names, (workers, names)
    study = {json.loads((f / "coarse" / "study.json").read_text())["study"] for f in folders}
    assert len(study) == 1


def _rows(run_dir):
    with open(run_dir / "coarse" / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_estimate_prints_the_measured_device_hours_and_starts_no_search(run_dir):
    before = sorted(run_dir.rglob("*"))
    result = runner.invoke(
        app, ["search", "coarse", str(run_dir), "--preset", "smoke", "--estimate"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # rich wraps lines at spaces
    assert "compute estimate: 3 networks x 4 iterations x batch 2" in text  # the smoke preset
    assert "validations x" in text and "a training step" in text
    assert "device-hours with validation" in text and "1 worker(s)" in text
    # No trial store, study or candidate; only the run's folds may be recorded (splits.json),
    # as the first of any stage records them.
    after = [path for path in sorted(run_dir.rglob("*")) if path.name != "splits.json"]
    assert after == [path for path in before if path.name != "splits.json"]
