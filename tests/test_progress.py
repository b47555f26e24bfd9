"""Progress in a log: plain lines about every 30 s and when a task ends, never a silent hour."""

import io

from rich.console import Console
from typer.testing import CliRunner

from c2fnas.progress import LogProgress, bar_with, duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _log() -> tuple[LogProgress, io.StringIO, Clock]:
    stream, clock = io.StringIO(), Clock()
    return LogProgress(Console(file=stream, width=80), clock=clock), stream, clock


def test_a_log_gets_a_line_every_interval_with_count_rate_eta_and_info():
    progress, stream, clock = _log()
    with progress:
        task = progress.add_task("training", total=600, info="")
        for done in range(1, 200):
            clock.now += 0.5  # 2 iterations per second
            info = f"loss {1 / done:.4f}  lr 2.00e-02  val Dice 0.812  (fold 0, hippocampus_367)"
            progress.update(task, completed=done, info=info)
    lines = stream.getvalue().splitlines()
    # 99.5 s of work: a line at 30, 60 and 90 s, then the last state when the display closes
    assert len(lines) == 4, lines
    first = lines[0]
    assert first.startswith("training: 60/600 (10%)") and "2/s" in first
    assert "ETA 4m30s" in first and "elapsed 30s" in first and "lr 2.00e-02" in first
    assert lines[-1].startswith("training: 199/600") and "loss 0.0050" in lines[-1]
    # longer than the console's 80 columns, and never cut or wrapped
    assert all(len(line) > 80 and line.endswith("hippocampus_367)") for line in lines)


def test_a_resumed_task_counts_its_rate_from_where_it_resumed():
    progress, stream, clock = _log()
    with progress:
        task = progress.add_task("fold 2", total=14226, info="")
        for done in range(713, 800):  # resumed at iteration 712, 2 iterations per second
            clock.now += 0.5
            progress.update(task, completed=done, info="")
    first = stream.getvalue().splitlines()[0]
    # 60 iterations in 30 s of this start; counting the 712 before it would read 25/s, ETA 9m
    assert first.startswith("fold 2: 772/14226") and "  2/s  " in first, first
    assert "ETA 1h52m" in first and "elapsed 30s" in first


def test_a_finished_task_prints_at_once_and_only_once():
    progress, stream, clock = _log()
    with progress:
        task = progress.add_task("predict", total=3, info="")
        for done in (1, 2, 3):
            clock.now += 1
            progress.update(task, completed=done, info=f"case_{done}")
    lines = stream.getvalue().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("predict: 3/3 (100%)")
    assert "ETA" not in lines[0] and "case_3" in lines[0]


def test_the_bar_is_plain_lines_without_a_terminal_and_rich_in_one():
    assert isinstance(bar_with(Console(file=io.StringIO())), LogProgress)
    assert not isinstance(bar_with(Console(file=io.StringIO(), force_terminal=True)), LogProgress)
    assert [duration(s) for s in (42, 185, 7620)] == ["42s", "3m05s", "2h07m"]


def test_train_without_a_terminal_prints_plain_progress(tmp_path):
    from c2fnas.cli import app
    from c2fnas.data.pipeline import preprocess_dataset
    from c2fnas.data.synth import make_synthetic_dataset
    from tests.training.synthetic import TINY

    dataset = make_synthetic_dataset(tmp_path / "data", cases=5, shape=(32, 32, 24))
    preprocess_dataset(dataset, tmp_path / "run")
    TINY.save(tmp_path / "tiny.json")
    result = CliRunner().invoke(
        app, ["train", str(tmp_path / "run"), "--arch", str(tmp_path / "tiny.json"),
              "--fold", "0", "--preset", "smoke"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stderr.splitlines() if line.startswith("training: 6/6"))
    assert "loss " in line and "lr " in line and "val Dice 0." in line
