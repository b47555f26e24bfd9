"""``c2fnas run`` stopped by SIGTERM or Ctrl-C: two lines (what was kept, how to resume), exit
code 128 + the signal, no process left behind, and the same command resumes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from c2fnas.data.synth import make_synthetic_dataset

CONFIG = """
training:
  iterations: 40
  milestones: [20]
  validate_every: 40
  checkpoint_every: 2
  stride: 16
search:
  coarse_networks: 2
  iterations: 400
  milestones: []
  width: 0.125
"""


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], list[str], Path]:
    data = make_synthetic_dataset(tmp_path / "data", cases=5, shape=(32, 32, 24))
    (tmp_path / "config.yaml").write_text(CONFIG)
    arguments = [sys.executable, "-m", "c2fnas", "run", str(data), "--run",
                 str(tmp_path / "run"), "--preset", "smoke", "--config",
                 str(tmp_path / "config.yaml"), *extra]  # fmt: skip
    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            arguments, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True
        )
    return process, arguments, stderr


def _wait_for(process: subprocess.Popen[bytes], found: object, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not found():  # type: ignore[operator]
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run ended or took too long (exit code {process.poll()})")
        time.sleep(0.2)


def _session_processes(session: int) -> list[int]:
    """The processes still alive in the run's session (the run, its workers, their helpers)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == session:
                    alive.append(int(entry.name))
            except OSError:  # gone meanwhile
                pass
    return alive


def _check_stopped(process, stderr: Path, code: int, name: str) -> str:
    """The run's exit code and stderr; no process of its session is left (killed if one is)."""
    try:
        exit_code = process.wait(timeout=120)
        for _ in range(50):  # the last helpers see their pipes close and leave
            if not _session_processes(process.pid):
                break
            time.sleep(0.1)
    finally:
        left = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                for pid in _session_processes(process.pid)]  # fmt: skip
        if left:
            os.killpg(process.pid, signal.SIGKILL)
    text = stderr.read_text()
    assert exit_code == code, text
    assert left == [], f"processes left behind: {left}"
    assert "Traceback" not in text, text
    tail = text[text.index(f"stopped by {name}") :].splitlines()
    assert len(tail) == 2 and tail[1].startswith("resume with: c2fnas run "), text
    return text


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists processes in /proc")
def test_sigterm_during_training_stops_in_two_lines_and_the_rerun_resumes(tmp_path):
    process, arguments, stderr = _start(tmp_path, "--search", "none", "--folds", "0")
    latest = tmp_path / "run" / "train" / "fold_0" / "checkpoints" / "latest.json"
    _wait_for(process, latest.is_file)
    process.send_signal(signal.SIGTERM)
    text = _check_stopped(process, stderr, 143, "SIGTERM")
    assert "keeps the finished stages (check, preprocess) and what train had saved" in text
    stages = ["--stages", "check", "--stages", "preprocess", "--stages", "train"]
    again = subprocess.run([*arguments, *stages], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "preprocess: done before, skipped" in again.stderr
    assert "resuming" in again.stderr and "from iteration" in again.stderr


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists processes in /proc")
def test_ctrl_c_to_the_whole_terminal_stops_the_search_and_its_workers_quietly(tmp_path):
    """Ctrl-C reaches every process of the terminal's group, the search workers included."""
    process, _, stderr = _start(tmp_path, "--folds", "0")
    logs = tmp_path / "run" / "coarse"
    _wait_for(process, lambda: any("claims" in log.read_text() for log in logs.rglob("*.log")))
    os.killpg(process.pid, signal.SIGINT)
    text = _check_stopped(process, stderr, 130, "Ctrl-C")
    assert "what coarse had saved" in text
