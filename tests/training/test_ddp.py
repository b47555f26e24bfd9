"""Two CPU processes with the gloo backend train exactly what one process does with their batch.

The comparison runs in float64 with a small learning rate. In float32 it cannot be made exact: a
batch of 2 and two batches of 1 round differently, instance norm's backward over the tiny
test volumes amplifies that rounding a millionfold, and at the smoke schedule's learning rate the
training trajectory amplifies it further. Whether the rounding of the two came out bit-identical
depended on the CPU's vector width (it did on AVX-512 machines, not on AVX2-only ones). In float64
with a learning rate of 2e-4 the two runs agree to ~1e-9 while the weights move by ~1e-2, so a
wrong gradient average, batch share or learning rate shows as a difference of the update's size.
"""

import contextlib
import json
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from c2fnas.accel import compile as compiling
from c2fnas.nn import C2FNet, Supernet
from c2fnas.training.loop import BatchSource, ValidationSource, fit
from tests.training.synthetic import TINY, batches, validation
from tests.training.test_compile import aot_eager
from tests.training.test_loop import smoke

SEEDS = (1000, 1001)


def config(iterations: int = 6):
    return smoke(iterations=iterations, learning_rate=2e-4, warmup_start_lr=2.5e-5)


def float64(source: BatchSource) -> BatchSource:
    def converted(start):
        for batch in source(start):
            yield {**batch, "image": batch["image"].double()}

    return converted


def float64_cases(source: ValidationSource) -> ValidationSource:
    return lambda: ((case, image.double(), label) for case, image, label in source())


def two_paths(rng) -> list[str]:
    return [rng.choice(["2d", "3d"])] * 12


def _save(model: torch.nn.Module, path) -> None:
    """``model``'s weights as they are in memory (channels_last ones made contiguous)."""
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))


def _train_both(out_dir, batch_source: BatchSource, cases: ValidationSource) -> dict:
    """Train a network and a supernet from seed 0; return the network's validation Dice."""
    torch.manual_seed(0)
    network = C2FNet(TINY, 1, 3).double()
    result = fit(network, TINY, batch_source, cases, config(), out_dir / "network")
    torch.manual_seed(0)
    supernet = Supernet(TINY, 1, 3).double()
    fit(
        supernet, TINY, batch_source, cases, config(iterations=3), out_dir / "supernet",
        sample_ops=two_paths,
    )  # fmt: skip
    for name, model in (("network", network), ("supernet", supernet)):
        _save(model, out_dir / f"{name}.safetensors")
    return result.history


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)  # two processes on a small CPU; the reference run matches it
        rank_dir = out_dir / f"rank{rank}"
        rank_dir.mkdir()
        history = _train_both(
            rank_dir,
            float64(batches(0, 2, rank, world)),
            float64_cases(validation(SEEDS[rank::world])),
        )
        (rank_dir / "dice.json").write_text(json.dumps(history["dice"]))
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """The single-process reference runs with one thread, as each gloo process does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _untrained(build: Callable[..., torch.nn.Module]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build(TINY, 1, 3).double().state_dict()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, tmp_path / "init", tmp_path), nprocs=2, join=True)
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    with _one_thread():
        history = _train_both(single_dir, float64(batches(0, 2)), float64_cases(validation(SEEDS)))
    for name, build in (("network", C2FNet), ("supernet", Supernet)):
        rank0 = load_file(str(tmp_path / "rank0" / f"{name}.safetensors"))
        rank1 = load_file(str(tmp_path / "rank1" / f"{name}.safetensors"))
        single = load_file(str(single_dir / f"{name}.safetensors"))
        untrained = _untrained(build)
        assert rank0.keys() == single.keys() == untrained.keys()
        moved = max((single[key] - untrained[key]).abs().max().item() for key in single)
        assert moved > 1e-3, f"the {name} barely trained; the comparison would mean nothing"
        for key, value in single.items():
            torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)
            torch.testing.assert_close(rank0[key], value, rtol=0, atol=1e-7, msg=f"{name} {key}")
        # the model folder written by rank 0 holds the trained weights
        written = load_file(str(tmp_path / "rank0" / name / "last" / "model.safetensors"))
        for key, value in written.items():
            torch.testing.assert_close(value, rank0[key].to(value.dtype), rtol=0, atol=0)
    # validation Dice is summed over both processes' cases: the same as one process scoring all
    distributed_dice = json.loads((tmp_path / "rank0" / "dice.json").read_text())
    assert len(distributed_dice) == len(history["dice"]) == 2
    for (iteration, dice, *_), (expected_iteration, expected, *_) in zip(
        distributed_dice, history["dice"], strict=True
    ):
        assert iteration == expected_iteration
        assert dice == pytest.approx(expected, abs=1e-9)


def _compiled_worker(rank, world, init_file, out_dir):
    """A compiled DDP step, its share of the batch (2 samples) in micro-batches of 1."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        compiling.compiled = aot_eager  # this process imported the module afresh
        torch._dynamo.utils.counters.clear()
        torch.manual_seed(0)
        network = C2FNet(TINY, 1, 3).double()
        fit(
            network, TINY, float64(batches(0, 4, rank, world)),
            float64_cases(validation(SEEDS[rank::world])),
            config(iterations=3).with_fields("training", compile=True), out_dir / f"rank{rank}",
            micro_batch=1,
        )  # fmt: skip
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        (out_dir / f"rank{rank}" / "graphs.json").write_text(json.dumps(graphs))
        _save(network, out_dir / f"rank{rank}" / "network.safetensors")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_compiled_ddp_steps_in_micro_batches_match_one_eager_process(tmp_path):
    """Compiling wraps the DDP model, and the step runs each process's share in micro-batches:
    the compiled passes still reach DDP's gradient averaging, each micro-batch's loss is
    weighted by its share, and the compiled step trains the network's own weights, so two
    processes of two micro-batches each take the steps of one eager process on the batch of 4.
    (Whether the first micro-batch skips the all-reduce, ``no_sync``, does not change the sum
    of averages, so it is not what this checks.)"""
    mp.spawn(_compiled_worker, args=(2, tmp_path / "init", tmp_path), nprocs=2, join=True)
    torch.manual_seed(0)
    single = C2FNet(TINY, 1, 3).double()
    with _one_thread():
        fit(
            single, TINY, float64(batches(0, 4)), float64_cases(validation(SEEDS)),
            config(iterations=3), tmp_path / "single",
        )  # fmt: skip
    expected = single.state_dict()
    untrained = _untrained(C2FNet)
    moved = max((expected[key] - untrained[key]).abs().max().item() for key in expected)
    assert moved > 1e-3, "the network barely trained; the comparison would mean nothing"
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}" / "graphs.json").read_text()) > 0  # compiled
        trained = load_file(str(tmp_path / f"rank{rank}" / "network.safetensors"))
        assert trained.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(trained[key], value, rtol=0, atol=1e-7, msg=key)
    rank0 = load_file(str(tmp_path / "rank0" / "network.safetensors"))
    written = load_file(str(tmp_path / "rank0" / "last" / "model.safetensors"))
    assert written.keys() == rank0.keys()  # rank 0's model folder: plain keys, trained weights
    for key, value in written.items():
        torch.testing.assert_close(value, rank0[key].to(value.dtype), rtol=0, atol=0)
