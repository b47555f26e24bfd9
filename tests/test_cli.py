import json

from typer.testing import CliRunner

from c2fnas.cli import app

runner = CliRunner()


def test_profile_json(panc_path):
    result = runner.invoke(
        app, ["profile", str(panc_path), "--patch", "32", "32", "32", "--width", "0.25", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["patch"] == [32, 32, 32]
    assert report["architecture"]["width"] == 0.25
    assert report["params"] > 0 and report["macs"] > 0 and report["train_step_seconds"] > 0


def test_profile_table_and_default_patch(panc_path):
    result = runner.invoke(app, ["profile", str(panc_path), "--no-timing"])
    assert result.exit_code == 0, result.output
    assert "17.02 M" in result.stdout and "150.02 G" in result.stdout


def test_profile_bad_input_is_a_clear_error(panc_path, tmp_path):
    result = runner.invoke(app, ["profile", str(panc_path), "--patch", "30", "32", "32"])
    assert result.exit_code == 2 and "divisible by 16" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = runner.invoke(app, ["profile", str(bad)])
    assert result.exit_code == 2 and str(bad) in result.stderr.replace("\n", "")
