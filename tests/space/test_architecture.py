import json
import subprocess
import sys

import pytest

from c2fnas.space import OPS, Architecture, ArchitectureError

PANC_LEVELS = [0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0]
PANC_OPS = ["2d", "p3d", "3d", "3d", "3d", "2d", "3d", "3d", "p3d", "3d", "2d", "3d"]


def test_published_file_is_c2fnas_panc(panc_path):
    architecture = Architecture.load(panc_path)
    assert architecture.levels == tuple(PANC_LEVELS)
    assert architecture.ops == tuple(PANC_OPS)
    assert architecture.width == 1.0
    assert [architecture.channels(level) for level in range(4)] == [64, 128, 256, 512]


def test_json_round_trip_and_hash(tmp_path):
    architecture = Architecture(tuple(PANC_LEVELS), tuple(PANC_OPS), 0.5, name="x")
    path = tmp_path / "a.json"
    architecture.save(path)
    loaded = Architecture.load(path)
    assert loaded == architecture and hash(loaded) == hash(architecture)
    assert json.loads(path.read_text())["schema_version"] == 1
    assert len({architecture, loaded, architecture.with_width(1.0)}) == 2
    assert loaded.filters == 16


def test_coarse_candidate_is_all_3d():
    assert Architecture.coarse(PANC_LEVELS).ops == ("3d",) * 12
    assert set(OPS) == {"3d", "2d", "p3d"}


def _dump(**changes):
    data = {"schema_version": 1, "levels": PANC_LEVELS, "ops": PANC_OPS, "width": 1.0}
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_dump(extra=1), r"unknown keys \['extra'\]"),
        (_dump(schema_version=2), "schema_version"),
        (_dump(levels=None), "levels: missing"),
        (_dump(levels=[0, 2] + [0] * 10), "levels: cell 2 jumps"),
        (_dump(ops=["3d"] * 11), "ops: expected 12"),
        (_dump(ops=["3d"] * 11 + ["5d"]), "ops: cell 12 has unknown op '5d'"),
        (_dump(width=0), "width"),
        (_dump(width="wide"), "width: expected a number"),
        ("[1, 2]", "expected a JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ArchitectureError, match=message) as error:
        Architecture.load(path)
    assert str(path) in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ArchitectureError, match="cannot read"):
        Architecture.load(tmp_path / "nope.json")


def test_space_does_not_import_torch():
    code = "import sys, c2fnas.space; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
