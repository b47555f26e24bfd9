import os
import subprocess
import sys

import matplotlib.image
from matplotlib.figure import Figure
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
    monkeypatch.setattr(Figure, "savefig", lambda figure, *_, **__: figures.append(figure))
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


def test_library_figures_leave_the_backend_to_the_caller(panc_path, tmp_path):
    # figures are plain matplotlib Figures: no module chooses a backend, so a notebook or an
    # application embedding c2fnas keeps its own (here the one MPLBACKEND names)
    script = (
        "import matplotlib\n"
        "import c2fnas.report, c2fnas.training.report, c2fnas.search.report, c2fnas.search.scale\n"
        "from c2fnas.plots import plot_architecture\n"
        "from c2fnas.space import Architecture\n"
        f"plot_architecture(Architecture.load({str(panc_path)!r}), {str(tmp_path / 'a.png')!r})\n"
        "print(matplotlib.get_backend())\n"
    )
    environment = {**os.environ, "MPLBACKEND": "svg"}
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "svg"
    assert (tmp_path / "a.png").stat().st_size > 0
