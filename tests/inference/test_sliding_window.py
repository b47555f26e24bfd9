import pytest
import torch

from c2fnas.inference.sliding_window import (
    overlap_for_stride,
    per_axis,
    predict_probabilities,
    window_count,
)


def test_overlap_from_stride():
    assert overlap_for_stride((96, 96, 96), 16) == pytest.approx((5 / 6,) * 3)
    assert overlap_for_stride((128, 128, 32), 48) == pytest.approx((0.625, 0.625, 0.0))
    with pytest.raises(ValueError, match="stride"):
        overlap_for_stride((16, 16, 16), 0)


@pytest.mark.parametrize("shape", [(1, 1, 23, 40, 9), (1, 1, 16, 16, 16)])
def test_probabilities_cover_any_image_size(shape):
    def voxelwise_model(x):
        # Logits that depend on the voxel's value only, so windows agree where they overlap.
        return torch.cat([x, -x], dim=1)

    image = torch.randn(shape)
    probabilities = predict_probabilities(voxelwise_model, image, (16, 16, 16), stride=8)
    assert probabilities.shape == (1, 2, *shape[2:])
    expected = torch.softmax(torch.cat([image, -image], dim=1), dim=1)
    torch.testing.assert_close(probabilities, expected, rtol=1e-5, atol=1e-5)


def test_bf16_probabilities_stay_close_to_fp32(mixed_architecture):
    from c2fnas.nn import C2FNet

    # an untrained network: classes are near ties, so compare probabilities (this measured
    # 0.028 on average here, 0.027 on an H200 in tests/gpu/test_cuda.py)
    torch.manual_seed(0)
    network = C2FNet(mixed_architecture, 1, 3).eval()
    image = torch.randn(1, 1, 40, 36, 20)
    fp32 = predict_probabilities(network, image, (32, 32, 16), stride=16)
    bf16 = predict_probabilities(network, image, (32, 32, 16), 16, "bf16")
    assert 0 < (bf16 - fp32).abs().mean() < 0.05


class CountingModel:
    """A voxel-wise model that records the windows it is given."""

    def __init__(self):
        self.windows = 0

    def __call__(self, x):
        self.windows += x.shape[0]
        return torch.cat([x, -x], dim=1)


@pytest.mark.parametrize(
    ("shape", "patch", "stride"),
    [((23, 40, 9), (16, 16, 16), (8, 8, 8)), ((96, 80, 33), (32, 32, 16), (16, 24, 5)),
     ((32, 32, 16), (32, 32, 16), (16, 16, 16)), ((50, 50, 50), (48, 48, 48), (48, 16, 7))],
)  # fmt: skip
def test_window_count_is_what_the_network_receives(shape, patch, stride):
    model = CountingModel()
    predict_probabilities(model, torch.randn(1, 1, *shape), patch, stride, window_batch=3)
    assert model.windows == window_count(shape, patch, stride)


def test_a_per_axis_stride_sets_each_axis_step():
    assert per_axis(16) == (16, 16, 16)
    assert per_axis([8, 16, 4]) == (8, 16, 4)
    assert overlap_for_stride((32, 32, 16), (8, 16, 16)) == pytest.approx((0.75, 0.5, 0.0))
    # one window along Z, three along X: (48 - 32) / 8 + 1
    assert window_count((48, 32, 16), (32, 32, 16), (8, 16, 16)) == 3
    with pytest.raises(ValueError, match="1 or 3 values"):
        per_axis([8, 8])


class SymmetricNetwork(torch.nn.Module):
    """A network equivariant to flips of every axis: convolutions with mirror-symmetric kernels
    (the sum of a kernel and all its flips) between voxel-wise non-linearities."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first = torch.nn.Conv3d(1, 4, 3, padding=1)
        self.last = torch.nn.Conv3d(4, 3, 3, padding=1)
        with torch.no_grad():
            for conv in (self.first, self.last):
                kernel = conv.weight
                for dims in ((2,), (3,), (4,)):
                    kernel = kernel + kernel.flip(dims)
                conv.weight.copy_(kernel)

    def forward(self, x):
        return self.last(torch.relu(self.first(x)))


def test_a_mirror_equivariant_network_predicts_the_same_with_and_without_mirroring():
    network = SymmetricNetwork().eval()
    image = torch.randn(1, 1, 40, 36, 20)
    flipped = network(image.flip((2, 4))).flip((2, 4))
    torch.testing.assert_close(flipped, network(image), rtol=1e-5, atol=1e-5)  # the premise
    plain = predict_probabilities(network, image, (32, 32, 16), 8)
    mirrored = predict_probabilities(network, image, (32, 32, 16), 8, mirror_axes=(0, 1, 2))
    torch.testing.assert_close(mirrored, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(mirrored.argmax(1), plain.argmax(1))


def test_mirroring_averages_the_flipped_predictions():
    # logits rising along X from -7.5 to 7.5: mirrored back, the X-flipped window's
    # probabilities are the plain ones reversed, so the average is 0.5 everywhere
    def ramp(x):
        position = torch.arange(x.shape[2], dtype=x.dtype) - (x.shape[2] - 1) / 2
        position = position.view(1, 1, -1, 1, 1).expand_as(x)
        return torch.cat([position, -position], dim=1)

    model = CountingModel()
    image = torch.zeros(1, 1, 16, 16, 16)
    averaged = predict_probabilities(ramp, image, (16, 16, 16), 16, mirror_axes=(0,))
    torch.testing.assert_close(averaged, torch.full_like(averaged, 0.5))
    predict_probabilities(model, image, (16, 16, 16), 16, mirror_axes=(0, 1, 2))
    assert model.windows == 8  # one window, every combination of three flips
