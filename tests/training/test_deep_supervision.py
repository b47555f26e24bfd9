import pytest
import torch
from safetensors.torch import load_file

from c2fnas.files.model_folder import read_model
from c2fnas.nn import C2FNet, Supernet
from c2fnas.nn.network import decoder_nodes
from c2fnas.space import Architecture
from c2fnas.training.config import load_config
from c2fnas.training.deep_supervision import (
    DeepSupervision,
    DeepSupervisionLoss,
    downsample_label,
    output_weights,
)
from c2fnas.training.loop import fit
from tests.training.synthetic import TINY, batches, validation

PANC = Architecture.coarse([0, 1, 2, 3, 2, 1, 0, 0, 0, 0, 0, 0], 0.25)


def test_heads_sit_on_the_last_cell_of_each_decoder_level_above_the_deepest():
    assert decoder_nodes(PANC) == [(5, 2), (6, 1)]
    late = Architecture.coarse([0, 0, 0, 0, 0, 0, 1, 2, 3, 2, 1, 0], 0.25)
    assert decoder_nodes(late) == [(10, 2), (11, 1)]
    # A level visited again later: its last visit is the decoder's.
    twice = Architecture.coarse([1, 1, 2, 2, 3, 2, 1, 0, 0, 0, 0, 0], 0.25)
    assert decoder_nodes(twice) == [(6, 2), (7, 1)]


def test_outputs_come_at_each_scale_and_the_first_is_the_networks_own():
    torch.manual_seed(0)
    network = C2FNet(PANC, 1, 3).eval()
    supervised = DeepSupervision(network).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        outputs = supervised(x)
        own = network(x)
    assert [tuple(out.shape) for out in outputs] == [(1, 3, 32, 32, 32), (1, 3, 4, 4, 4),
                                                     (1, 3, 8, 8, 8)]  # fmt: skip
    torch.testing.assert_close(outputs[0], own)


def test_a_supernet_is_supervised_on_the_path_it_is_given():
    torch.manual_seed(0)
    supernet = Supernet(PANC, 1, 2).eval()
    supervised = DeepSupervision(supernet).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        flat = supervised(x, ("2d",) * 12)
        full = supervised(x, ("3d",) * 12)
        torch.testing.assert_close(flat[0], supernet(x, ("2d",) * 12))
    assert len(flat) == 3 and not torch.allclose(flat[1], full[1])


def test_weights_follow_the_resolution_and_sum_to_one():
    weights = output_weights([2, 1])
    assert sum(weights) == pytest.approx(1.0)
    assert weights[0] / weights[1] == pytest.approx(8.0)  # level 2 is 1/8 of the input
    assert weights[0] / weights[2] == pytest.approx(4.0)


def test_labels_go_down_by_the_nearest_voxel_and_stay_labels():
    label = torch.randint(0, 3, (2, 1, 16, 16, 16))
    small = downsample_label(label, (4, 4, 4))
    assert small.shape == (2, 1, 4, 4, 4) and small.dtype == label.dtype
    assert set(small.unique().tolist()) <= set(label.unique().tolist())
    # Blocks of 2 voxels of one label along X keep their labels, in order, at half the size.
    blocks = torch.arange(4).repeat_interleave(2).view(1, 1, 8, 1, 1).expand(1, 1, 8, 2, 2)
    assert downsample_label(blocks, (4, 1, 1)).flatten().tolist() == [0, 1, 2, 3]
    constant = torch.ones(1, 1, 8, 8, 8, dtype=torch.int64)
    assert torch.equal(downsample_label(constant * 2, (2, 2, 2)), constant[..., :2, :2, :2] * 2)


def test_the_loss_is_the_weighted_sum_of_the_scales_losses():
    def per_scale(logits, label):  # a loss that tells the scales apart
        return logits.new_tensor(float(logits.shape[-1]))

    loss = DeepSupervisionLoss(per_scale, [0.5, 0.25, 0.25])
    outputs = [torch.zeros(1, 2, 8, 8, 8), torch.zeros(1, 2, 2, 2, 2), torch.zeros(1, 2, 4, 4, 4)]
    label = torch.zeros(1, 1, 8, 8, 8, dtype=torch.int64)
    assert float(loss(outputs, label)) == pytest.approx(0.5 * 8 + 0.25 * 2 + 0.25 * 4)
    with pytest.raises(ValueError, match="2 outputs for 3"):
        loss(outputs[:2], label)


def smoke(**training):
    config = load_config("smoke")
    return config.model_copy(update={"training": config.training.model_copy(update=training)})


def test_training_with_deep_supervision_saves_the_network_alone_and_resumes_its_heads(tmp_path):
    config = smoke(deep_supervision=True)
    torch.manual_seed(0)
    fit(C2FNet(TINY, 1, 3), TINY, batches(0), validation(), config, tmp_path / "straight")
    torch.manual_seed(0)
    first = smoke(deep_supervision=True, iterations=3)
    fit(C2FNet(TINY, 1, 3), TINY, batches(0), validation(), first, tmp_path / "resumed")
    checkpoint = tmp_path / "resumed" / "checkpoints" / "iter_0000003"
    heads = load_file(str(checkpoint / "heads.safetensors"))
    assert len(heads) == 4  # two 1x1x1 convolutions, weight and bias each
    torch.manual_seed(7)
    fit(C2FNet(TINY, 1, 3), TINY, batches(0), validation(), config, tmp_path / "resumed",
        resume=True)  # fmt: skip
    straight = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "last" / "model.safetensors"))
    assert straight.keys() == C2FNet(TINY, 1, 3).state_dict().keys()  # no heads in the model
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6)
    architecture, weights, _ = read_model(tmp_path / "straight" / "best")
    C2FNet(architecture, 1, 3).load_state_dict(weights)  # loads as a plain network


def test_deep_supervision_changes_what_the_network_learns(tmp_path):
    runs = {}
    for supervised in (False, True):
        torch.manual_seed(0)
        fit(C2FNet(TINY, 1, 3), TINY, batches(0), validation(),
            smoke(deep_supervision=supervised), tmp_path / str(supervised))  # fmt: skip
        runs[supervised] = load_file(str(tmp_path / str(supervised) / "last" / "model.safetensors"))
    assert any(not torch.equal(runs[False][key], runs[True][key]) for key in runs[False])
