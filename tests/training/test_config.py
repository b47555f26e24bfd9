import pytest

from c2fnas.training.config import PRESETS, ConfigError, load_config, read_config


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_round_trip(preset, tmp_path):
    config = load_config(preset)
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert read_config(path) == config


def test_paper_preset_values():
    config = load_config("paper")
    training = config.training
    assert (training.learning_rate, training.momentum, training.weight_decay) == (0.02, 0.9, 4e-5)
    assert (training.warmup_start_lr, training.warmup_iterations, training.stride) == (
        0.0025,
        1000,
        16,
    )
    assert config.data.patch == (96, 96, 96) and config.data.batch_size == 8
    search = config.search
    assert (search.coarse_networks, search.clusters, search.fine_candidates) == (50, 8, 2000)
    assert search.random_cluster_probability == 0.2 and search.fine_stride == 48


def test_override_file_changes_only_its_fields(tmp_path):
    override = tmp_path / "mine.yaml"
    override.write_text("training:\n  iterations: 7\ndata:\n  patch: [32, 48, 64]\n")
    config = load_config("cpu", override)
    assert config.training.iterations == 7 and config.data.patch == (32, 48, 64)
    assert config.training.validate_every == load_config("cpu").training.validate_every


def test_per_axis_stride_and_test_time_mirroring_by_preset(tmp_path):
    override = tmp_path / "prostate.yaml"
    override.write_text("training:\n  stride: [16, 16, 4]\n")
    assert load_config("cpu", override).training.stride == (16, 16, 4)
    assert load_config("paper").training.tta and not load_config("cpu").training.tta


def test_fields_from_the_command_line_are_validated():
    config = load_config("cpu").with_fields("search", width=0.5)
    assert config.search.width == 0.5 and config.search.iterations == 120
    with pytest.raises(ConfigError, match="search.width"):
        load_config("cpu").with_fields("search", width=-1)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("training:\n  iteratoins: 7\n", "training.iteratoins"),
        ("data:\n  patch: [30, 32, 32]\n", "multiple of 16"),
        ("training:\n  precision: fp8\n", "training.precision"),
        ("training:\n  milestones: [20, 10]\n", "increasing"),
        ("training:\n  stride: [16, 0, 4]\n", ">= 1 voxel"),
        ("training:\n  stride: [16, 16]\n", "training.stride"),
        ("- just a list\n", "mapping"),
        ("training: [unclosed\n", "YAML"),
    ],
)
def test_bad_override_is_a_clear_error_naming_the_file(tmp_path, text, fragment):
    override = tmp_path / "bad.yaml"
    override.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config("paper", override)
    assert str(override) in str(error.value) and fragment in str(error.value)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("fast")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("paper", tmp_path / "absent.yaml")
