"""CUDA code paths: the channels-last ops, mixed precision and prediction on a GPU.

Skipped without a CUDA device; run on one with ``pytest -m gpu``.
"""

import pytest
import torch

from c2fnas.accel.layers import FastInstanceNorm as InstanceNorm
from c2fnas.accel.layers import PointwiseConv
from c2fnas.inference.sliding_window import predict_probabilities
from c2fnas.nn import C2FNet, Supernet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CL = torch.channels_last_3d
CUDA = torch.device("cuda")


@pytest.fixture
def exact_fp32(monkeypatch):
    """TF32 off (cuDNN convolutions use it by default), to compare fp32 results closely."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def test_channels_last_ops_match_pytorch_on_cuda(exact_fp32):
    torch.manual_seed(0)
    reference = torch.nn.InstanceNorm3d(8, affine=True).to(CUDA)
    with torch.no_grad():
        reference.weight.normal_()
        reference.bias.normal_()
    ours = InstanceNorm(8).to(CUDA)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(3, 8, 12, 10, 8, device=CUDA) * 2 + 1
    x_ref, x_ours = x.clone().requires_grad_(), x.to(memory_format=CL).requires_grad_()
    y_ref, y_ours = reference(x_ref), ours(x_ours)
    y_ref.square().sum().backward()
    y_ours.square().sum().backward()
    assert y_ours.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y_ours, y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-3, atol=1e-3)

    with torch.autocast("cuda", dtype=torch.bfloat16):
        y_bf16 = ours(x.bfloat16().to(memory_format=CL))
    assert y_bf16.dtype == torch.bfloat16 and y_bf16.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y_bf16.float(), y_ref.detach(), rtol=0.02, atol=0.05)

    pointwise = PointwiseConv(8, 4, bias=True).to(CUDA)
    conv = torch.nn.Conv3d(8, 4, 1, bias=True).to(CUDA)
    conv.load_state_dict(pointwise.state_dict())
    torch.testing.assert_close(pointwise(x.to(memory_format=CL)), conv(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_network_trains_in_mixed_precision_on_cuda(precision, mixed_architecture):
    from c2fnas.accel.precision import autocast, memory_format

    torch.manual_seed(0)
    network = C2FNet(mixed_architecture, 1, 3).to(CUDA, memory_format=memory_format(CUDA))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    x = torch.randn(2, 1, 32, 32, 32, device=CUDA).to(memory_format=memory_format(CUDA))
    target = (x[:, 0] > 0.5).long() + (x[:, 0] > 1.5).long()
    losses = []
    for _ in range(20):
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, CUDA):
            loss = torch.nn.functional.cross_entropy(network(x).float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses


def test_supernet_path_and_prediction_agree_between_cuda_and_cpu(exact_fp32, mixed_architecture):
    torch.manual_seed(0)
    supernet = Supernet(mixed_architecture, 1, 3).eval()
    ops = ["2d", "p3d", "3d", "3d", "2d", "p3d", "p3d", "3d", "2d", "3d", "2d", "p3d"]
    network = supernet.extract(ops).eval()
    x = torch.randn(1, 1, 40, 36, 20)
    cpu = predict_probabilities(network, x, (32, 32, 16), stride=16)
    gpu_net = network.to(CUDA)
    gpu = predict_probabilities(gpu_net, x.to(CUDA), (32, 32, 16), stride=16)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)
    gpu_bf16 = predict_probabilities(gpu_net, x.to(CUDA), (32, 32, 16), 16, "bf16")
    # An untrained network's classes are near ties, so compare probabilities, not labels; the
    # bound is the one bf16 meets on the CPU (tests/inference/test_sliding_window.py).
    assert (gpu_bf16.cpu() - cpu).abs().mean() < 0.05
    supernet.to(CUDA)
    with torch.no_grad():
        path = supernet(x[..., :32, :32, :16].to(CUDA), ops)
        torch.testing.assert_close(gpu_net(x[..., :32, :32, :16].to(CUDA)), path)


def test_compiled_and_eager_training_steps_agree_in_bf16(mixed_architecture):
    """The compiled step (Inductor + CUDA graphs) computes what the eager step does, within
    bf16 rounding, over a few SGD steps."""
    from c2fnas.accel.compile import compiled, step_begins
    from c2fnas.accel.swap import accelerate

    torch.manual_seed(0)
    eager = accelerate(C2FNet(mixed_architecture, 1, 3)).to(CUDA)
    other = accelerate(C2FNet(mixed_architecture, 1, 3)).to(CUDA)
    other.load_state_dict(eager.state_dict())
    fast = compiled(other, CUDA)
    x = torch.randn(2, 1, 32, 32, 32, device=CUDA)
    target = torch.randint(0, 3, (2, 32, 32, 32), device=CUDA)
    losses = {}
    for name, model in (("eager", eager), ("compiled", fast)):
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
        losses[name] = []
        for _ in range(3):
            step_begins()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x).float(), target)
            loss.backward()
            optimizer.step()
            losses[name].append(loss.item())
    assert losses["eager"] == pytest.approx(losses["compiled"], rel=2e-2)
    for (name, a), b in zip(eager.state_dict().items(), other.state_dict().values(), strict=True):
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=5e-2, atol=5e-3), name


def test_compiled_training_on_cuda_follows_eager_training(tmp_path, mixed_architecture, caplog):
    """``training.compile: true`` on a GPU (Inductor + CUDA graphs) compiles, also through
    micro-batches (two passes per step), with no fallback to eager, and its first steps'
    losses are the eager run's within bf16 rounding."""
    import logging

    from c2fnas.accel.swap import accelerate
    from c2fnas.training.loop import fit
    from tests.training.synthetic import batches, validation
    from tests.training.test_loop import smoke

    config = smoke(iterations=6, precision="bf16")
    runs = {}
    for name, setting in (("eager", False), ("compiled", True)):
        torch.manual_seed(0)
        network = accelerate(C2FNet(mixed_architecture, 1, 3))
        with caplog.at_level(logging.INFO):
            runs[name] = fit(
                network, mixed_architecture, batches(0), validation(),
                config.with_fields("training", compile=setting), tmp_path / name,
                device=CUDA, micro_batch=1,
            )  # fmt: skip
    messages = [record.getMessage() for record in caplog.records]
    assert any("compiling the training step on cuda" in message for message in messages)
    assert not any("torch.compile failed" in message for message in messages)
    eager = [loss for _, loss, *_ in runs["eager"].history["loss"]]
    fast = [loss for _, loss, *_ in runs["compiled"].history["loss"]]
    # Later steps drift apart: the deepest instance norms see 2 x 2 x 1 voxels at this patch.
    assert fast[:2] == pytest.approx(eager[:2], rel=3e-2)
    assert all(torch.isfinite(torch.tensor(fast)))
