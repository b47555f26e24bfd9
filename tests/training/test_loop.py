import json
import math

import pytest
import torch
from safetensors.torch import load_file

from c2fnas.files.model_folder import read_model
from c2fnas.nn import C2FNet, Supernet
from c2fnas.training.config import load_config
from c2fnas.training.loop import TrainingDiverged, fit
from tests.training.synthetic import TINY, batches, validation


def smoke(**training):
    config = load_config("smoke")
    return config.model_copy(update={"training": config.training.model_copy(update=training)})


def network(seed=0):
    torch.manual_seed(seed)
    return C2FNet(TINY, 1, 3)


def test_fit_writes_models_checkpoint_and_reports(tmp_path):
    calls = []
    result = fit(
        network(), TINY, batches(0), validation(), smoke(tensorboard=True), tmp_path,
        progress=lambda done, total, metrics: calls.append((done, total, metrics["loss"])),
    )  # fmt: skip
    assert result.iterations == 6 and [c[0] for c in calls] == list(range(1, 7))
    assert all(math.isfinite(c[2]) for c in calls)
    assert len(result.best_dice) == 2 and result.best_iteration in (3, 6)
    assert [entry[0] for entry in result.history["dice"]] == [3, 6]
    for name in ("config.yaml", "progress.png", "best/model.safetensors", "last/model.json"):
        assert (tmp_path / name).is_file(), name
    assert any(path.name.startswith("events.out.tfevents") for path in (tmp_path / "tb").iterdir())
    architecture, weights, info = read_model(tmp_path / "last")
    assert architecture == TINY and info["iteration"] == 6 and info["num_classes"] == 3
    rebuilt = C2FNet(architecture, 1, 3)
    rebuilt.load_state_dict(weights)
    checkpoint = tmp_path / "checkpoints" / "iter_0000006"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "architecture.json", "model.json", "model.safetensors", "optimizer.safetensors",
        "rng.safetensors", "state.json",
    ]  # fmt: skip
    momentum = load_file(str(checkpoint / "optimizer.safetensors"))
    assert any(key.endswith("momentum_buffer") for key in momentum)
    assert json.loads((checkpoint / "state.json").read_text())["iteration"] == 6
    with pytest.raises(FileExistsError, match="resume"):
        fit(network(), TINY, batches(0), validation(), smoke(), tmp_path)


def test_fit_ticks_the_governor_its_caller_started(tmp_path):
    class Governor:  # a ThreadGovernor that counts, and changes no threads
        ticks = 0

        def tick(self):
            self.ticks += 1

    governor = Governor()
    fit(network(), TINY, batches(0), validation(), smoke(), tmp_path, governor=governor)
    assert governor.ticks == 6  # once before every step of the smoke preset's 6


def test_training_learns_the_synthetic_task(tmp_path):
    config = smoke(
        iterations=60, validate_every=60, checkpoint_every=60, milestones=(60,),
        learning_rate=0.05, warmup_iterations=5,
    )  # fmt: skip
    result = fit(network(), TINY, batches(0), validation(), config, tmp_path)
    losses = [entry[1] for entry in result.history["loss"]]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    # The organ (label 1) is learned within 60 iterations; the small lesion (label 2) only by
    # some seeds, so it is not asserted here.
    assert result.best_dice[0] > 0.7


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    fit(network(), TINY, batches(0), validation(), smoke(), tmp_path / "straight")
    first = smoke(iterations=3)
    fit(network(), TINY, batches(0), validation(), first, tmp_path / "resumed")
    # A "killed" run: started again with the full schedule and another initialisation.
    fit(network(seed=7), TINY, batches(0), validation(), smoke(), tmp_path / "resumed", resume=True)
    straight = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "last" / "model.safetensors"))
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6)
    untrained = network(seed=7).state_dict()
    assert any(not torch.equal(untrained[key], value) for key, value in straight.items())


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    def poisoned(start):
        stream = batches(0)(start)
        while True:
            batch = next(stream)
            batch["image"][0, 0, 0, 0, 0] = math.nan
            yield batch

    with pytest.raises(TrainingDiverged, match="iteration 1"):
        fit(network(), TINY, poisoned, validation(), smoke(), tmp_path)


def test_supernet_trains_only_the_sampled_path(tmp_path):
    torch.manual_seed(0)
    supernet = Supernet(TINY, 1, 3)
    before = {key: value.clone() for key, value in supernet.state_dict().items()}
    drawn = []

    def sample_ops(rng):
        ops = tuple(rng.choice(["2d", "p3d"]) for _ in range(12))
        drawn.append(ops)
        return ops

    result = fit(supernet, TINY, batches(0), validation(), smoke(), tmp_path, sample_ops=sample_ops)
    assert len(drawn) == 6 and len(set(drawn)) > 1 and len(result.best_dice) == 2
    after = supernet.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key].cpu())}
    assert not any(".3d." in key for key in changed)
    assert any(".2d." in key for key in changed) and any(".p3d." in key for key in changed)
    assert read_model(tmp_path / "last")[2]["kind"] == "supernet"


def test_progress_plot_names_the_classes_and_marks_a_single_validation(tmp_path):
    import matplotlib.pyplot as plt

    from c2fnas.training.report import RunLog

    run_log = RunLog(tmp_path, None, enabled=True, tensorboard=False,
                     class_names=["anterior", "posterior"])  # fmt: skip
    for iteration in range(1, 11):
        run_log.loss(iteration, 1.0 / iteration, 0.01)
    run_log.dice(10, [0.8, 0.6], cases=2)
    figure = run_log.figure()
    dice_axis = figure.axes[1]
    assert [text.get_text() for text in dice_axis.get_legend().get_texts()] == [
        "anterior", "posterior", "mean",
    ]  # fmt: skip
    assert all(line.get_marker() == "o" and len(line.get_xdata()) == 1 for line in dice_axis.lines)
    plt.close(figure)
    run_log.plot()
    assert (tmp_path / "progress.png").is_file()


def test_class_names_come_from_the_plan_in_the_model_info():
    from c2fnas.training.loop import _class_names

    info = {"plan": {"labels": {"0": "background", "2": "posterior", "1": "anterior"}}}
    assert _class_names(info) == ["anterior", "posterior"]
    assert _class_names({}) is None


def test_a_reschedule_replaces_the_schedule_once_after_timing_steps_and_a_validation(tmp_path):
    """Asked at each checkpoint once 20 iterations and a validation are timed (here from 25 on);
    None keeps the schedule, a configuration replaces it from the next iteration, after which
    it is not asked again; the fold's config.yaml is the new one."""
    config = smoke(iterations=35, validate_every=5, checkpoint_every=5, milestones=(30,))
    longer = config.with_fields(
        "training", iterations=45, validate_every=15, checkpoint_every=15, milestones=[40]
    )
    asked = []

    def reschedule(done, timings):
        asked.append((done, timings))
        return None if done < 30 else longer

    rates = []
    result = fit(
        network(), TINY, batches(0), validation(), config, tmp_path, reschedule=reschedule,
        progress=lambda done, total, metrics: rates.append((done, total, metrics["lr"])),
    )  # fmt: skip
    assert [done for done, _ in asked] == [25, 30]
    assert all(t.step > 0 and t.validation > 0 for _, t in asked)
    assert [t.iterations for _, t in asked] == [5, 10]  # timed from iteration 20 on
    assert result.iterations == 45
    assert [entry[0] for entry in result.history["dice"]] == [5, 10, 15, 20, 25, 30, 45]
    assert rates[29][1] == 35 and rates[30][1] == 45  # the progress's total changes after 30
    rate = longer.training.learning_rate
    assert rates[35][2] == pytest.approx(rate) and rates[-1][2] == pytest.approx(rate / 2)
    assert load_config("paper", tmp_path / "config.yaml").training.iterations == 45
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").glob("iter_*"))
    assert checkpoints[-1] == "iter_0000045"
