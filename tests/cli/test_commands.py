import json
import subprocess
import sys

from typer.testing import CliRunner

from c2fnas.cli import app

runner = CliRunner()


def test_the_command_line_starts_without_the_heavy_libraries():
    # `c2fnas --help` and every mistyped option wait for what the command line imports
    code = (
        "import sys, c2fnas.cli; "
        "print(sorted({'torch', 'monai', 'matplotlib', 'optuna'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_profile_json(panc_path):
    result = runner.invoke(
        app, ["profile", str(panc_path), "--patch", "32", "32", "32", "--width", "0.25", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["patch"] == [32, 32, 32]
    assert report["architecture"]["width"] == 0.25
    assert report["params"] > 0 and report["macs"] > 0 and report["step_seconds"] > 0
    assert report["window_seconds"] > 0 and report["precision"] in ("fp32", "bf16")


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
