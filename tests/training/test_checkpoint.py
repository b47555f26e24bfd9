import json
import logging
import random

import numpy as np
import pytest
import torch

from c2fnas.files.model_folder import CheckpointError, load_weights, read_model
from c2fnas.nn import C2FNet
from c2fnas.training.checkpoint import (
    latest_checkpoint,
    load_optimizer_state,
    optimizer_state,
    read_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from tests.training.synthetic import TINY


def test_rng_states_round_trip_without_pickle():
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    tensors, info = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    set_rng_state(tensors, info)
    again = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(again[0], expected[0])
    np.testing.assert_array_equal(again[1], expected[1])
    assert again[2] == expected[2]


def test_optimizer_momentum_round_trips():
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=1e-3)
    weight.grad = torch.arange(4.0)
    optimizer.step()
    tensors, groups = optimizer_state(optimizer)
    assert list(tensors) == ["state.0.momentum_buffer"]
    fresh = torch.optim.SGD([torch.nn.Parameter(torch.ones(4))], lr=0.5, momentum=0.0)
    load_optimizer_state(fresh, tensors, groups)
    assert fresh.param_groups[0]["momentum"] == 0.9 and fresh.param_groups[0]["lr"] == 0.1
    torch.testing.assert_close(
        fresh.state[fresh.param_groups[0]["params"][0]]["momentum_buffer"],
        optimizer.state[weight]["momentum_buffer"],
    )


def trained_checkpoint(folder):
    """A checkpoint of the tiny network after one SGD step, as training writes it."""
    torch.manual_seed(0)
    network = C2FNet(TINY, 1, 3)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    for parameter in network.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer.step()
    info = {"kind": "network", "in_channels": 1, "num_classes": 3, "patch": [16, 16, 16]}
    write_checkpoint(folder, 1, network, TINY, info, optimizer, {"history": {}})
    return folder / "iter_0000001", network


def fresh():
    network = C2FNet(TINY, 1, 3)
    return network, torch.optim.SGD(network.parameters(), lr=0.5, momentum=0.9)


def flip_last_byte(path):
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 0x01  # inside the last tensor's data: the file still parses
    path.write_bytes(bytes(payload))


def test_checkpoint_round_trips_with_checksums(tmp_path):
    folder, network = trained_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path) == folder
    restored, optimizer = fresh()
    state = read_checkpoint(folder, restored, optimizer)
    assert state["iteration"] == 1 and set(state["sha256"]) == {
        "optimizer.safetensors", "rng.safetensors",
    }  # fmt: skip
    for key, value in network.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "rng.safetensors"])
def test_a_flipped_bit_is_an_error_naming_the_file(tmp_path, name):
    folder, _ = trained_checkpoint(tmp_path)
    flip_last_byte(folder / name)
    with pytest.raises(CheckpointError, match=rf"{name}: damaged"):
        read_checkpoint(folder, *fresh())


def test_a_truncated_file_is_an_error_naming_the_file(tmp_path):
    folder, _ = trained_checkpoint(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors: damaged"):
        read_model(folder)
    strip_checksums(folder)  # without a recorded checksum, the parser's error names the file
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors"):
        read_model(folder)


def strip_checksums(folder):
    """Make ``folder`` look as code before the checksums wrote it."""
    for name in ("model.json", "state.json"):
        data = json.loads((folder / name).read_text())
        del data["sha256"]
        (folder / name).write_text(json.dumps(data))


def test_a_checkpoint_written_before_checksums_still_loads(tmp_path):
    folder, network = trained_checkpoint(tmp_path)
    strip_checksums(folder)
    restored, optimizer = fresh()
    assert read_checkpoint(folder, restored, optimizer)["iteration"] == 1
    architecture, weights, _ = read_model(folder)
    assert architecture == TINY
    for key, value in network.state_dict().items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=0)


def test_weights_without_a_checksum_are_loaded_with_one_warning_naming_the_folder(tmp_path, caplog):
    folder, _ = trained_checkpoint(tmp_path)
    read_model(folder)
    assert not caplog.records  # verified: nothing to say
    strip_checksums(folder)
    with caplog.at_level(logging.WARNING, logger="c2fnas.files.model_folder"):
        read_model(folder)
        read_checkpoint(folder, *fresh())
        read_model(folder)
    assert len(caplog.records) == 1, caplog.records
    assert str(folder.resolve()) in caplog.text and "unverified" in caplog.text


@pytest.mark.parametrize(
    ("name", "key"), [("state.json", "param_groups"), ("latest.json", "checkpoint")]
)
def test_a_missing_entry_names_the_file_and_the_key(tmp_path, name, key):
    folder, _ = trained_checkpoint(tmp_path)
    path = folder / name if name == "state.json" else tmp_path / name
    data = json.loads(path.read_text())
    del data[key]
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=rf"{name}: no '{key}' entry"):
        read_checkpoint(latest_checkpoint(tmp_path) or folder, *fresh())


def test_a_checkpoint_of_another_width_is_named_in_one_line(tmp_path):
    """Not PyTorch's 155 lines of size mismatches: the width, once."""
    folder, _ = trained_checkpoint(tmp_path)  # TINY: width 0.125
    wider = C2FNet(TINY.with_width(0.25), 1, 3)
    optimizer = torch.optim.SGD(wider.parameters(), lr=0.5, momentum=0.9)
    with pytest.raises(CheckpointError, match=r"width 0.25 expected, 0.125 found") as error:
        read_checkpoint(folder, wider, optimizer)
    assert "\n" not in str(error.value)
    # without the architecture they were saved with (an edited architecture.json): one line too
    _, weights, _ = read_model(folder)
    with pytest.raises(CheckpointError, match=r"tensor\(s\) of another shape.*first stem") as error:
        load_weights(wider, weights, folder)
    assert "\n" not in str(error.value)
