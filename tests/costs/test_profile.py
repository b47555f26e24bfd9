import pytest

from c2fnas.costs.profile import estimate_cost
from c2fnas.nn import C2FNet
from c2fnas.nn.unet3d import UNet3D
from c2fnas.space import Architecture


def test_c2fnas_panc_matches_paper_table_2(panc_path):
    cost = estimate_cost(C2FNet(Architecture.load(panc_path), 1, 3), (1, 1, 96, 96, 96))
    assert cost.params == pytest.approx(17.02e6, rel=1e-3)
    assert 149.5e9 <= cost.macs <= 151.0e9


def test_reference_unet_counted_by_the_same_code_matches_paper_table_2():
    cost = estimate_cost(UNet3D(1, 3), (1, 1, 96, 96, 96))
    assert round(cost.params / 1e6, 2) == 19.07
    assert cost.macs == pytest.approx(825e9, abs=2e9)


def test_macs_scale_with_volume_and_memory_with_batch(panc_path):
    model = C2FNet(Architecture.load(panc_path).with_width(0.25), 1, 3)
    small = estimate_cost(model, (1, 1, 32, 32, 32))
    big = estimate_cost(model, (2, 1, 64, 64, 64))
    assert big.macs == 8 * small.macs
    assert big.activation_bytes == 16 * small.activation_bytes
    assert next(model.parameters()).device.type == "cpu"  # the original stays where it was
