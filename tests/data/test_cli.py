import json
import shutil

import numpy as np
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.data.preprocess import Plan

from .test_check import SHAPE, make_case

runner = CliRunner()


def test_synth_check_preprocess(tmp_path):
    data = tmp_path / "data"
    result = runner.invoke(
        app, ["data", "synth", str(data), "--cases", "5", "--shape", "20", "20", "10"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data", "check", str(data)])
    assert result.exit_code == 0, result.output
    assert "synth_000" in result.stdout and "all 7 case(s) ok" in result.stdout
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["preprocess", str(data), "--run", str(run), "--spacing", "1", "1", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "5 case(s) written" in result.stdout and Plan.load(run).spacing == (1, 1, 2)
    result = runner.invoke(app, ["preprocess", "--spacing", "auto", str(data), "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert Plan.load(run).spacing != (1, 1, 2)
    result = runner.invoke(app, ["preprocess", str(data), "--run", str(run), "--spacing", "1,1"])
    assert result.exit_code != 0 and "--spacing" in result.stderr


def test_check_exit_code_and_json(synthetic, tmp_path):
    data = shutil.copytree(synthetic, tmp_path / "data")
    (data / "labelsTr" / "synth_002.nii.gz").write_bytes(b"garbage")
    (data / "imagesTr" / "synth_004.nii.gz").unlink()
    result = runner.invoke(app, ["data", "check", str(data)])
    assert result.exit_code == 1
    assert "2 bad case(s)" in result.stderr and "synth_002, synth_004" in result.stderr
    result = runner.invoke(app, ["data", "check", str(data), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [c["case_id"] for c in report["cases"] if not c["ok"]] == ["synth_002", "synth_004"]


def test_clear_errors(tmp_path):
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "not a folder" in result.stderr
    result = runner.invoke(app, ["preprocess", str(tmp_path), "--run", str(tmp_path / "r")])
    assert result.exit_code == 1 and "dataset.json" in result.stderr


def test_check_in_an_80_column_log_keeps_every_case_id_whole(tmp_path):
    ids = [f"hippocampus_{index:03d}" for index in (1, 2, 3)]
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, 0] = 7
    entries = [make_case(tmp_path, ids[0]), make_case(tmp_path, ids[1])]
    entries.append(make_case(tmp_path, ids[2], label=label))
    entries.append({"image": "../../etc/passwd", "label": "./labelsTr/x.nii.gz"})
    description = {"modality": {"0": "MR"}, "labels": {"0": "background", "1": "a"}}
    (tmp_path / "dataset.json").write_text(json.dumps({**description, "training": entries}))
    result = runner.invoke(app, ["data", "check", str(tmp_path)], env={"COLUMNS": "80"})
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    for case_id in ids:
        assert any(line.startswith(case_id) for line in lines), result.stdout
    assert "…" not in result.stdout and "passwd " not in result.stdout
    assert any(line.startswith("training[3]") and "leaves" in line for line in lines)
    assert "label values [7] are not declared in 'labels'" in result.stdout
