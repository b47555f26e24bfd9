import matplotlib.image
import matplotlib.pyplot as plt
import pytest
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.plots import plot_architecture
from c2fnas.space import Architecture


def test_plot_arch_writes_a_figure(panc_path, tmp_path):
    output = tmp_path / "figures" / "panc.png"
    result = CliRunner().invoke(app, ["plot", "arch", str(panc_path), "-o", str(output)])
    assert result.exit_code == 0, result.output
    image = matplotlib.image.imread(output)
    assert image.shape[0] > 300 and image.shape[1] > 800


def test_figure_has_one_arc_per_second_input(panc_path, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    architecture = Architecture.load(panc_path)
    plot_architecture(architecture, tmp_path / "a.png", caption="x")
    arcs = [t for t in figures[0].axes[0].texts if t.arrow_patch is not None]
    second_inputs = sum(len(cell.inputs) - 1 for cell in architecture.wiring)
    assert len(arcs) == second_inputs == 5


def test_plot_arch_rejects_a_bad_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "levels": [0], "ops": []}')
    result = CliRunner().invoke(app, ["plot", "arch", str(bad), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert not (tmp_path / "x.png").exists()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")
