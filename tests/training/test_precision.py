import pytest
import torch

from c2fnas.training.precision import cpu_supports_bf16, memory_format, resolve_precision

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


def test_bf16_training_runs_and_learns(tmp_path):
    from c2fnas.training.loop import fit
    from tests.training.synthetic import TINY, batches, validation
    from tests.training.test_loop import network, smoke

    config = smoke(precision="bf16", iterations=4, validate_every=4, checkpoint_every=4)
    result = fit(network(), TINY, batches(0), validation(), config, tmp_path)
    losses = [entry[1] for entry in result.history["loss"]]
    assert all(torch.isfinite(torch.tensor(losses))) and len(result.best_dice) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_with_grad_scaler_on_gpu(tmp_path):
    from c2fnas.training.loop import fit
    from tests.training.synthetic import TINY, batches, validation
    from tests.training.test_loop import network, smoke

    config = smoke(precision="fp16", iterations=4, validate_every=4, checkpoint_every=2)
    result = fit(network(), TINY, batches(0), validation(), config, tmp_path)
    assert len(result.history["loss"]) == 4
    resumed = fit(network(), TINY, batches(0), validation(), smoke(precision="fp16", iterations=6,
                  validate_every=4, checkpoint_every=2), tmp_path, resume=True)  # fmt: skip
    assert resumed.iterations == 6
