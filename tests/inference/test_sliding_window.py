import pytest
import torch

from c2fnas.inference.sliding_window import overlap_for_stride, predict_probabilities


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
