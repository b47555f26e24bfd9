import json

import pytest
import torch

from c2fnas.accel.precision import cpu_supports_bf16, memory_format, resolve_precision

CPU = torch.device("cpu")


def test_auto_picks_bf16_exactly_when_the_cpu_has_it():
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_supports_bf16() else "fp32")


def test_explicit_choices_and_errors():
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", CPU)
    assert memory_format(CPU) == torch.channels_last_3d
    assert memory_format(torch.device("cuda")) == torch.contiguous_format


@pytest.mark.slow
def test_bf16_training_runs_and_learns(tmp_path):
    # the same task and schedule as test_loop's fp32 test, under bf16 autocast
    from c2fnas.training.loop import fit
    from tests.training.synthetic import TINY, batches, validation
    from tests.training.test_loop import network, smoke

    config = smoke(
        precision="bf16", iterations=60, validate_every=60, checkpoint_every=60, milestones=(60,),
        learning_rate=0.05, warmup_iterations=5,
    )  # fmt: skip
    result = fit(network(), TINY, batches(0), validation(), config, tmp_path)
    losses = [entry[1] for entry in result.history["loss"]]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert result.best_dice[0] > 0.7  # the organ, as in fp32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_with_grad_scaler_on_gpu_resumes_to_the_uninterrupted_weights(tmp_path):
    from safetensors.torch import load_file

    from c2fnas.training.loop import fit
    from tests.training.synthetic import TINY, batches, validation
    from tests.training.test_loop import network, smoke

    def config(iterations):
        return smoke(precision="fp16", iterations=iterations, validate_every=6, checkpoint_every=3)

    straight = fit(network(), TINY, batches(0), validation(), config(6), tmp_path / "straight")
    assert len(straight.history["loss"]) == 6
    fit(network(), TINY, batches(0), validation(), config(3), tmp_path / "resumed")
    scale = json.loads((tmp_path / "resumed/checkpoints/iter_0000003/state.json").read_text())
    assert "scaler" in scale  # the gradient scaler's state travels in the checkpoint
    # a "killed" run: started again with the full schedule and another initialisation
    fit(network(seed=7), TINY, batches(0), validation(), config(6), tmp_path / "resumed",
        resume=True)  # fmt: skip
    expected = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "last" / "model.safetensors"))
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-4, atol=1e-5, msg=key)
