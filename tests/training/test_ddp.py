"""Two CPU processes with the gloo backend train exactly what one process does with their batch."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from c2fnas.nn import C2FNet, Supernet
from c2fnas.training.loop import fit
from tests.training.synthetic import TINY, batches, validation
from tests.training.test_loop import smoke

SEEDS = (1000, 1001)


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)  # two processes on a small CPU; the reference run matches it
        # oneDNN picks batch-size-dependent kernels; the reference kernels make 2 x 1 == 1 x 2.
        torch.backends.mkldnn.enabled = False
        torch.manual_seed(0)
        network = C2FNet(TINY, 1, 3)
        share = validation(SEEDS[rank::world])
        fit(network, TINY, batches(0, 2, rank, world), share, smoke(), out_dir / "network")
        weights = {key: value.contiguous() for key, value in network.state_dict().items()}
        save_file(weights, str(out_dir / f"rank{rank}.safetensors"))
        torch.manual_seed(0)
        supernet = Supernet(TINY, 1, 3)
        fit(
            supernet, TINY, batches(0, 2, rank, world), share, smoke(iterations=2),
            out_dir / "supernet", sample_ops=lambda rng: [rng.choice(["2d", "3d"])] * 12,
        )  # fmt: skip
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, tmp_path / "init", tmp_path), nprocs=2, join=True)
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    torch.manual_seed(0)
    single = C2FNet(TINY, 1, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.backends.mkldnn.flags(enabled=False):
            result = fit(
                single, TINY, batches(0, 2), validation(SEEDS), smoke(), tmp_path / "single"
            )
    finally:
        torch.set_num_threads(threads)
    for key, value in single.state_dict().items():
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)
        torch.testing.assert_close(rank0[key], value, rtol=1e-4, atol=1e-5)
    distributed = load_file(str(tmp_path / "network" / "last" / "model.safetensors"))
    assert distributed.keys() == rank0.keys()
    dice = [entry[1] for entry in result.history["dice"]]
    assert len(dice) == 2
    assert (tmp_path / "supernet" / "last" / "model.json").is_file()
