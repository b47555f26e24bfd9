"""``training.compile``: the training loop's compiled step (``c2fnas.accel.compile``)."""

import logging

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from c2fnas.accel import compile as compiling
from c2fnas.nn import C2FNet
from c2fnas.space import Architecture
from c2fnas.training.config import ConfigError, RunConfig
from c2fnas.training.loop import fit
from tests.training.synthetic import TINY, batches, validation
from tests.training.test_loop import network, smoke

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
SHALLOW = Architecture.coarse([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0], width=0.125)


def aot_eager(model, device):
    """The compiler's tracing and AOT autograd, without code generation (a minute on 2 CPU
    cores; Inductor's code is tested on a GPU: tests/gpu)."""
    return torch.compile(model, backend="aot_eager", dynamic=False)


def losses(run):
    return [entry[1] for entry in run.history["loss"]]


def weights(folder):
    return load_file(str(folder / "last" / "model.safetensors"))


def test_a_compiled_training_step_matches_the_eager_one_and_saves_plain_weights(
    tmp_path, monkeypatch
):
    """The loop's compiled path, traced and differentiated by the compiler (AOT autograd) but
    run without code generation, which costs a minute on 2 CPU cores (Inductor's code is
    tested on a GPU: tests/gpu): a step updates the network's own weights as an eager step
    does, and they are saved without the compiled wrapper's ``_orig_mod.`` prefix, loadable
    into a plain network."""

    def shallow():  # levels 0 and 1 only: instance norms over hundreds of voxels
        torch.manual_seed(0)
        return C2FNet(SHALLOW, 1, 3)

    monkeypatch.setattr(compiling, "compiled", aot_eager)
    torch._dynamo.utils.counters.clear()
    config = smoke(iterations=1, validate_every=1, checkpoint_every=1)
    eager = fit(shallow(), SHALLOW, batches(0), validation(), config, tmp_path / "eager")
    compiled_config = config.with_fields("training", compile=True)
    fast = fit(shallow(), SHALLOW, batches(0), validation(), compiled_config, tmp_path / "compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    assert losses(fast) == pytest.approx(losses(eager), rel=1e-5)
    expected, saved = weights(tmp_path / "eager"), weights(tmp_path / "compiled")
    assert saved.keys() == expected.keys()
    initial = shallow().state_dict()
    for key, value in expected.items():
        # Instance norm's backward subtracts nearly equal sums, so the compiler's order of
        # summation moves a gradient by up to about 1% (0.5% was the most seen): each update
        # is compared with its own size.
        update = (value - initial[key]).abs().max().item()
        assert (saved[key] - value).abs().max().item() <= 0.02 * update + 1e-7, key
    moved = [key for key, value in saved.items() if not torch.equal(value, initial[key])]
    assert len(moved) > 0.9 * len(saved)  # the compiled step trained the network's weights
    shallow().load_state_dict(saved)


class _BrokenCompiler(nn.Module):
    """What a compiled model whose compilation fails does on its first call."""

    def forward(self, *args):
        raise RuntimeError("backend compiler failed\nwith a long traceback")


def test_a_failing_compiler_falls_back_to_eager_training_with_a_warning(
    tmp_path, monkeypatch, caplog
):
    config = smoke(iterations=3, validate_every=3, checkpoint_every=3)
    fit(network(), TINY, batches(0), validation(), config, tmp_path / "eager")
    monkeypatch.setattr(compiling, "compiled", lambda model, device: _BrokenCompiler())
    with caplog.at_level(logging.WARNING):
        fit(
            network(), TINY, batches(0), validation(), config.with_fields("training", compile=True),
            tmp_path / "fallback",
        )  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected_warning = "torch.compile failed (RuntimeError: backend compiler failed)"
    assert any(expected_warning in warning for warning in warnings)
    expected, saved = weights(tmp_path / "eager"), weights(tmp_path / "fallback")
    assert all(torch.equal(saved[key], value) for key, value in expected.items())


def test_a_compiled_step_that_runs_out_of_memory_is_not_taken_for_a_compiler_failure(
    tmp_path, monkeypatch
):
    """Out of memory must reach ``with_smaller_micro_batches``, not the eager fallback."""

    class _OutOfMemory(nn.Module):
        def forward(self, *args):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(compiling, "compiled", lambda model, device: _OutOfMemory())
    config = smoke(iterations=3).with_fields("training", compile=True)
    with pytest.raises(RuntimeError, match="out of memory at iteration 1 with micro-batch 2"):
        fit(network(), TINY, batches(0), validation(), config, tmp_path)


LONG, SHORT = compiling.MIN_ITERATIONS, compiling.MIN_ITERATIONS - 1


@pytest.mark.parametrize(
    ("setting", "device", "supernet", "iterations", "expected"),
    [
        ("auto", CUDA, False, LONG, True),
        ("auto", CUDA, False, SHORT, False),  # compiling would not pay back
        ("auto", CPU, False, LONG, False),
        (True, CPU, False, SHORT, True),
        (False, CUDA, False, LONG, False),
        ("auto", CUDA, True, LONG, False),
        (True, CUDA, True, LONG, False),
    ],
)
def test_compile_auto_means_long_gpu_runs_and_a_supernet_never_compiles(
    setting, device, supernet, iterations, expected
):
    assert compiling.wanted(setting, device, supernet, iterations) is expected


def test_the_compile_setting_takes_yaml_booleans_and_auto_only():
    config = RunConfig()
    assert config.training.compile == "auto"
    assert config.with_fields("training", compile=False).training.compile is False
    with pytest.raises(ConfigError, match="training.compile"):
        config.with_fields("training", compile="sometimes")
