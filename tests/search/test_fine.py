"""The fine stage (supernet + random search over colourings) and the scaling stage."""

import csv
import random

import pytest
import torch
from typer.testing import CliRunner

from c2fnas.accel.swap import accelerate
from c2fnas.cli import app
from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.preprocess import Plan
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.files.model_folder import read_model
from c2fnas.search.colourings import (
    ColouringList,
    decode,
    encode,
    sample_colourings,
    uniform_colouring,
)
from c2fnas.search.fine import load_supernet, make_job, supernet_scorer
from c2fnas.search.worker import TrialContext
from c2fnas.space import OPS, Architecture
from c2fnas.training.config import load_config
from c2fnas.training.validation import validate

runner = CliRunner()
TOPOLOGY = (0, 1, 1, 2, 3, 2, 1, 0, 0, 0, 0, 0)
FAST = """
training:
  stride: 16
search:
  fine_candidates: 4
  iterations: 3
  milestones: [2]
"""


def test_colourings_are_distinct_seeded_and_round_trip():
    first = sample_colourings(200, seed=3)
    assert len(set(first)) == 200
    assert first == sample_colourings(200, seed=3) != sample_colourings(200, seed=4)
    assert all(len(code) == 12 and set(code) <= {0, 1, 2} for code in first)
    assert {index for code in first for index in code} == {0, 1, 2}
    ops = decode(first[0])
    assert encode(ops) == first[0] and set(ops) <= set(OPS)
    assert len(set(sample_colourings(3**12, seed=0))) == 3**12
    with pytest.raises(ValueError, match="1..531441"):
        sample_colourings(3**12 + 1, seed=0)


def test_colouring_list_never_proposes_a_taken_colouring():
    codes = sample_colourings(5, seed=0)
    strategy = ColouringList(codes)
    rng = random.Random(0)
    assert strategy.propose([], set(), rng) == codes[0]
    assert strategy.propose([(codes[0], 0.5)], {codes[1]}, rng) == codes[2]
    assert strategy.propose([(c, 0.1) for c in codes[:4]], {codes[4]}, rng) is None


def test_uniform_colouring_draws_every_op_in_every_cell():
    rng = random.Random(0)
    draws = [uniform_colouring(rng) for _ in range(300)]
    for cell in range(12):
        counts = [sum(draw[cell] == op for draw in draws) for op in OPS]
        assert all(60 <= count <= 140 for count in counts), counts


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fine")
    dataset = make_synthetic_dataset(root / "data", cases=5, shape=(32, 32, 24))
    preprocess_dataset(dataset, root / "run")
    Architecture.coarse(TOPOLOGY, width=0.125).save(root / "topology.json")
    (root / "fast.yaml").write_text(FAST)
    return root / "run"


@pytest.fixture(scope="module")
def fine_search(run_dir):
    """Run ``c2fnas search fine`` once; returns the command line and its result."""
    arguments = [
        "search", "fine", str(run_dir), "--topology", str(run_dir.parent / "topology.json"),
        "--preset", "smoke", "--config", str(run_dir.parent / "fast.yaml"),
    ]  # fmt: skip
    return arguments, runner.invoke(app, [*arguments, "--workers", "2"])


@pytest.mark.slow
def test_fine_search_end_to_end_and_resume(run_dir, fine_search):
    arguments, result = fine_search
    assert result.exit_code == 0, result.output
    fine = run_dir / "fine"
    architecture, _, info = read_model(fine / "supernet" / "last")
    assert info["kind"] == "supernet" and info["iteration"] == 6  # twice the search iterations
    with open(fine / "candidates.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    finished = [row for row in rows if row["state"] == "finished"]
    assert len(finished) == 4 and len({row["ops"] for row in finished}) == 4
    assert all(row["iterations"] == "" for row in finished)  # scored, not trained
    expected = {" ".join(decode(code)) for code in sample_colourings(4, seed=0)}
    assert {row["ops"] for row in finished} == expected
    best = Architecture.load(fine / "best_architecture.json")
    best_row = max(finished, key=lambda row: float(row["dice"]))
    assert " ".join(best.ops) == best_row["ops"] and best.levels == TOPOLOGY

    again = runner.invoke(app, arguments)
    assert again.exit_code == 0, again.output
    with open(fine / "candidates.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == rows  # nothing scored twice


@pytest.mark.slow
def test_supernet_score_is_the_standalone_network_score(run_dir, fine_search):
    assert fine_search[1].exit_code == 0, fine_search[1].output
    config = load_config("smoke", run_dir.parent / "fast.yaml")
    job = make_job(run_dir, Architecture.load(run_dir.parent / "topology.json"), config)
    # colourings are stored as such, not as topologies (a trial released before it claimed a
    # candidate, when none was left, holds neither)
    trials = job.open_store().study.get_trials()
    assert all("topology" not in trial.user_attrs for trial in trials)
    assert sum("colouring" in trial.user_attrs for trial in trials) >= 4
    ops = decode(sample_colourings(1, seed=9)[0])
    candidate = job.candidate(encode(ops))
    scorer = supernet_scorer(job, accelerate(load_supernet(job)))  # as the command scores
    score = scorer(candidate, TrialContext(0, encode(ops), "test", None))

    from c2fnas.data import loader, splits
    from c2fnas.data.pipeline import cached_case_ids
    from c2fnas.nn import Supernet

    _, weights, _ = read_model(job.folder.supernet.last)
    supernet = Supernet(job.topology, 1, 3)
    supernet.load_state_dict(weights)
    network = accelerate(supernet.extract(ops)).eval()  # as the scorer runs the supernet
    val = splits.load_or_create(run_dir, cached_case_ids(run_dir))[4].val
    total, count = validate(
        network, loader.validation_cases(run_dir, val), 3, config.data.patch, 48, "fp32",
        torch.device("cpu"), 2,
    )  # fmt: skip
    assert score == pytest.approx(float((total / count).mean()), abs=1e-6)


@pytest.mark.slow
def test_scaling_stage(run_dir, tmp_path):
    arch = run_dir.parent / "topology.json"
    arguments = ["search", "scale", str(run_dir), "--arch", str(arch), "--preset", "smoke"]
    result = runner.invoke(
        app, [*arguments, "--config", str(run_dir.parent / "fast.yaml"),
              "--widths", "0.125", "--widths", "0.25"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(run_dir / "scale" / "scaling.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["width"]) for row in rows] == [0.125, 0.25]
    assert int(rows[1]["params"]) > int(rows[0]["params"])
    assert int(rows[1]["macs"]) > int(rows[0]["macs"])
    assert all(0.0 <= float(row["dice_mean"]) <= 1.0 for row in rows)
    labels = Plan.load(run_dir).labels
    assert [key for key in rows[0] if key.startswith("dice_")] == [
        "dice_mean",
        *(f"dice_{labels[value]}" for value in sorted(labels)[1:]),
    ]
    assert (run_dir / "scale" / "scaling.png").is_file()
    bad = runner.invoke(app, [*arguments, "--widths", "-1"])
    assert bad.exit_code == 2 and "positive" in bad.stderr
