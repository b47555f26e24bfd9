"""Plans for real and synthetic datasets: near-isotropic, anisotropic, Hippocampus.

Each plan measures one training step of a small network on the CPU (seconds).
"""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.costs import memory
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.files.run_folder import RunFolder
from c2fnas.planning import PlanError, plan_run, recipe
from c2fnas.planning.plan import PREDICTION_SECONDS_PER_CASE
from c2fnas.space import Architecture
from c2fnas.training.config import load_config

CPU = torch.device("cpu")
GIB = 2**30


def _anisotropic_dataset(root, cases=6, shape=(96, 96, 20), spacing=(0.8, 0.8, 3.5)):
    """An MSD folder of thick-slice volumes (3.5 mm slices), written with nibabel."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for index in range(cases):
        image = rng.normal(100, 10, size=shape).astype(np.float32)
        label = np.zeros(shape, dtype=np.uint8)
        label[30:60, 30:60, 5:15] = 1
        affine = np.diag([*spacing, 1.0])
        name = f"case_{index:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    description = {
        "name": "thick slices",
        "modality": {"0": "MR"},
        "labels": {"0": "background", "1": "organ"},
        "numTraining": cases,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(description))
    return root


@pytest.fixture
def isotropic(tmp_path):
    return make_synthetic_dataset(tmp_path / "iso", cases=5, shape=(32, 32, 16))


def _check_written(plan, run_dir):
    path = plan.write(run_dir)
    assert path == RunFolder(run_dir).plan_config
    assert load_config("paper", path) == plan.config  # strict: RunConfig fields only
    assert load_config("cpu", path) == plan.config  # complete: no preset value shows through
    assert all(side % 16 == 0 and side > 16 for side in plan.config.data.patch)
    assert (run_dir / "fingerprint.json").is_file()


def test_near_isotropic_plan_within_a_budget(isotropic, tmp_path):
    run_dir = tmp_path / "run"
    # whether a search pays depends on the measured step (tested on given costs in
    # tests/costs/test_solve.py): forced here, so the plan must fit both stages into the budget
    plan = plan_run(isotropic, run_dir, budget=3 * 3600, device=CPU, memory_bytes=8 * GIB,
                    search="coarse")  # fmt: skip
    # median 0.9 x 0.9 x 1.8 mm (2 x): near-isotropic, 1 mm where finer, the median where coarser
    assert plan.spacing == pytest.approx((1.0, 1.0, 1.8), rel=0.05)
    assert plan.config.data.patch == (32, 32, 32)  # the whole (small) volume
    assert plan.config.data.batch_size == 2
    assert sum(plan.seconds.values()) <= 0.9 * 3 * 3600
    assert plan.seconds["coarse"] > 0 and plan.seconds["fine"] > 0  # a search is planned
    search = plan.config.search
    assert search.coarse_networks >= 4 and search.iterations >= 100
    assert {c.setting for c in plan.choices} >= {"spacing", "patch", "batch", "width", "search"}
    assert all(c.reason for c in plan.choices)
    assert [c.value for c in plan.choices if c.setting == "compile"] == ["off"]  # a CPU
    _check_written(plan, run_dir)


def test_anisotropic_plan_keeps_the_thick_slices(tmp_path):
    dataset = _anisotropic_dataset(tmp_path / "thick")
    plan = plan_run(
        dataset,
        tmp_path / "run",
        budget=3600,
        device=CPU,
        memory_bytes=8 * GIB,
        architecture=Architecture.coarse((0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0)),
    )
    assert plan.spacing == pytest.approx((1.0, 1.0, 3.5))
    assert plan.config.data.spacing == pytest.approx(plan.spacing)  # c2fnas run resamples so
    patch = plan.config.data.patch
    assert patch == (80, 80, 32)  # 76.8 x 76.8 x 20 voxels at that spacing
    assert plan.stride == (16, 16, 6) and plan.config.training.stride == (16, 16, 6)
    assert plan.seconds["coarse"] == plan.seconds["fine"] == 0  # --arch: no search
    assert plan.config.search.coarse_networks == load_config("paper").search.coarse_networks
    _check_written(plan, tmp_path / "run")


def test_a_budget_that_fits_more_than_the_papers_iterations_says_the_run_ends_early(
    isotropic, tmp_path
):
    """One fold of a tiny network in 3 hours: the paper's 40,000 iterations cap it, and the
    plan says so rather than that they fill the budget."""
    reference = Architecture.coarse((0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0))
    plan = plan_run(isotropic, tmp_path / "run", budget=3 * 3600, device=CPU,
                    memory_bytes=8 * GIB, architecture=reference, folds=[0])  # fmt: skip
    row = next(choice for choice in plan.choices if choice.setting == "iterations")
    assert plan.config.training.iterations == 40000 and row.value == "40000"
    assert row.reason.startswith("the paper's most: the budget fits more, so the run ends early")
    short = plan_run(isotropic, tmp_path / "short", budget=600, device=CPU,
                     memory_bytes=8 * GIB, architecture=reference, folds=[0])  # fmt: skip
    row = next(choice for choice in short.choices if choice.setting == "iterations")
    assert short.config.training.iterations < 40000 and row.reason.startswith("fits 90%")


def test_without_a_budget_the_papers_schedule(isotropic, tmp_path):
    plan = plan_run(isotropic, tmp_path / "run", device=CPU, memory_bytes=64 * GIB)
    paper = load_config("paper")
    assert plan.config.training.iterations == paper.training.iterations
    assert plan.config.training.milestones == paper.training.milestones
    assert plan.config.search.iterations == paper.search.iterations
    assert plan.config.search.width == 1.0  # memory allows the paper's width


def test_a_plan_sets_every_measured_lever_and_says_why(isotropic, tmp_path):
    """Every lever of ``planning.recipe`` is in the plan's configuration, in the written
    ``plan.yaml`` and in its table with the measurement behind it; the paper preset keeps the
    paper's recipe."""
    run_dir = tmp_path / "run"
    plan = plan_run(isotropic, run_dir, device=CPU, memory_bytes=64 * GIB)
    written = load_config("paper", plan.write(run_dir))
    paper = load_config("paper")
    rows = {choice.setting: choice for choice in plan.choices}
    for lever in recipe.LEVERS:
        assert getattr(getattr(plan.config, lever.section), lever.field) == lever.value
        assert getattr(getattr(written, lever.section), lever.field) == lever.value
        assert rows[lever.setting].value == lever.shown
        assert "levers" in rows[lever.setting].reason
    assert paper.training.lr_decay == "step" and paper.training.deep_supervision is False
    assert paper.data.augmentation == "paper"


def test_the_planned_batch_fits_a_small_memory(isotropic, tmp_path):
    memory_bytes = GIB // 4
    plan = plan_run(isotropic, tmp_path / "run", device=CPU, memory_bytes=memory_bytes)
    width, batch, patch = (
        plan.config.search.width,
        plan.config.data.batch_size,
        plan.config.data.patch,
    )
    needed = memory.network_memory(
        Architecture.coarse((0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0), width), 1, 3, patch
    )
    assert needed.training_bytes(batch) <= memory.USABLE_MEMORY * memory_bytes
    assert width < 1.0
    with pytest.raises(PlanError, match="GiB"):
        plan_run(isotropic, tmp_path / "run", device=CPU, memory_bytes=2**20)


def test_plan_command_writes_plan_yaml_and_the_table(isotropic, tmp_path, panc_path):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["plan", str(isotropic), "--run", str(run_dir), "--time-budget", "45m",
         "--arch", str(panc_path), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "reason" in result.output and "training" in result.output
    load_config("paper", RunFolder(run_dir).plan_config)
    refused = CliRunner().invoke(app, ["plan", str(isotropic), "--run", str(run_dir),
                                       "--time-budget", "soon"])  # fmt: skip
    assert refused.exit_code == 2 and "45m" in refused.output


@pytest.mark.realdata
def test_hippocampus_plan(hippocampus, tmp_path, panc_path):
    plan = plan_run(hippocampus, tmp_path / "run", budget=3600, device=CPU, memory_bytes=16 * GIB,
                    architecture=Architecture.load(panc_path))  # fmt: skip
    assert plan.spacing == (1.0, 1.0, 1.0)
    assert plan.config.data.patch == (48, 64, 48)  # median 35 x 50 x 36: the whole volume
    assert plan.config.search.width == 0.25  # an hour on a CPU: iterations before width
    # two folds would each get fewer than the paper's 40,000 iterations in an hour on 2 cores:
    # one model gets the hour
    assert plan.folds == (0,) and plan.config.training.folds == plan.folds
    assert "one model" in next(c.reason for c in plan.choices if c.setting == "folds")
    assert sum(plan.seconds.values()) <= 0.9 * 3600
    # calibrated: each case costs its windows and PREDICTION_SECONDS_PER_CASE (reading, writing)
    out_of_fold = 40 * len(plan.folds)
    assert plan.seconds["prediction"] >= out_of_fold * PREDICTION_SECONDS_PER_CASE
    _check_written(plan, tmp_path / "run")


def test_the_plan_records_what_it_searches_and_why(isotropic, tmp_path):
    plan = plan_run(isotropic, tmp_path / "run", budget=3 * 3600, device=CPU,
                    memory_bytes=8 * GIB, search="fine")  # fmt: skip
    assert plan.config.search.mode == "fine"
    assert plan.seconds["coarse"] == 0 and plan.seconds["fine"] > 0
    row = next(c for c in plan.choices if c.setting == "search")
    assert row.value.startswith("fine stage on C2FNAS-Panc's topology")
    assert row.reason.startswith("forced (--search fine)")
    none = plan_run(isotropic, tmp_path / "none", budget=3 * 3600, device=CPU,
                    memory_bytes=8 * GIB, search="none")  # fmt: skip
    assert none.config.search.mode == "none" and none.seconds["fine"] == 0
    assert none.seconds["training"] > plan.seconds["training"]  # the search's time trains folds
    with pytest.raises(PlanError, match="--search coarse with an architecture"):
        plan_run(isotropic, tmp_path / "arch", budget=3600, device=CPU, memory_bytes=8 * GIB,
                 architecture=Architecture.coarse((0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0)),
                 search="coarse")  # fmt: skip
