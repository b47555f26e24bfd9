"""Micro-batches with gradient accumulation: the same step in less memory, and out-of-memory
errors that say which micro-batch ran out."""

import json

import pytest
import torch

from c2fnas.nn import C2FNet
from c2fnas.training.config import load_config
from c2fnas.training.loop import (
    OutOfMemory,
    _make_trainer,
    fit,
    is_out_of_memory,
    with_smaller_micro_batches,
)
from tests.training.out_of_memory import RunsOutOfMemory
from tests.training.synthetic import TINY, batches, validation


def smoke(**training):
    config = load_config("smoke")
    return config.model_copy(update={"training": config.training.model_copy(update=training)})


@pytest.mark.parametrize("micro_batch", [1, 2, 3])
def test_accumulated_step_has_the_loss_and_gradients_of_the_whole_batch(micro_batch):
    """float64, batch 4 in passes of ``micro_batch`` (3: passes of 3 and 1) against one pass."""
    batch = next(batches(0, batch_size=4)(0))
    batch = {"image": batch["image"].double(), "label": batch["label"]}
    steps = {}
    for micro in (None, micro_batch):
        torch.manual_seed(0)
        trainer = _make_trainer(C2FNet(TINY, 1, 3).double(), smoke(), torch.device("cpu"), None)
        trainer.micro_batch = micro
        loss = trainer.run_step(0, batch)
        steps[micro] = loss, [p.grad.clone() for p in trainer.network.parameters()]
    (whole_loss, whole), (loss, accumulated) = steps[None], steps[micro_batch]
    assert abs(loss - whole_loss) < 1e-10
    assert len(whole) == len(accumulated) and any(grad.abs().max() > 1e-3 for grad in whole)
    for expected, grad in zip(whole, accumulated, strict=True):
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8"), True),
        (RuntimeError("could not allocate 17179869184 bytes"), True),
        (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), True),
        (RuntimeError("Given groups=1, weight of size [8, 1, 3, 3, 3]"), False),
        (ValueError("cannot allocate"), False),
    ],
)
def test_out_of_memory_is_told_apart_from_other_errors(error, expected):
    assert is_out_of_memory(error) is expected


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError])
def test_a_step_that_runs_out_of_memory_names_its_micro_batch(tmp_path, error):
    with pytest.raises(OutOfMemory, match="iteration 1 with micro-batch 4: [CD]") as caught:
        fit(RunsOutOfMemory(2, error), TINY, batches(0, 4), validation(), smoke(), tmp_path / "a")
    assert caught.value.micro_batch == 4 and "more advice" not in str(caught.value)
    result = fit(
        RunsOutOfMemory(2, error), TINY, batches(0, 4), validation(), smoke(), tmp_path / "b",
        micro_batch=2,
    )  # fmt: skip
    assert result.iterations == 6


def test_a_resumed_run_keeps_the_recorded_micro_batch(tmp_path):
    """Resumed without ``micro_batch``, a run that needed micro-batch 2 does not run out of
    memory again, and ends with the weights of an uninterrupted run."""
    out = tmp_path / "resumed"
    fit(RunsOutOfMemory(2), TINY, batches(0, 4), validation(), smoke(iterations=3), out,
        micro_batch=2)  # fmt: skip
    state = json.loads((out / "checkpoints" / "iter_0000003" / "state.json").read_text())
    assert state["micro_batch"] == 2
    resumed = RunsOutOfMemory(2, seed=7)
    fit(resumed, TINY, batches(0, 4), validation(), smoke(), out, resume=True)
    straight = RunsOutOfMemory(2)
    fit(straight, TINY, batches(0, 4), validation(), smoke(), tmp_path / "straight", micro_batch=2)
    for (name, expected), value in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_smaller_micro_batches_are_tried_until_one_fits():
    tried = []

    def attempt(micro_batch):
        tried.append(micro_batch)
        used = micro_batch or 8
        if used > 3:
            raise OutOfMemory(used, 1, RuntimeError("can't allocate memory"))
        return used

    assert with_smaller_micro_batches(attempt) == 2 and tried == [None, 4, 2]

    def never_fits(micro_batch):
        tried.append(micro_batch)
        raise OutOfMemory(micro_batch or 3, 1, RuntimeError("can't allocate memory"))

    tried.clear()
    with pytest.raises(OutOfMemory, match="micro-batch 1"):
        with_smaller_micro_batches(never_fits)
    assert tried == [None, 1]
