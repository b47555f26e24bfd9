"""Folder locks: a second writer is refused with the holder's name; a killed holder frees it."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from c2fnas.cli import app
from c2fnas.files.lock import FolderBusy, folder_lock
from c2fnas.files.run_folder import RunFolder
from c2fnas.search.stages import fine_stage
from c2fnas.space import Architecture, u_shaped_topologies
from c2fnas.training.config import load_config
from tests.search.toy_worker import toy_run_folder

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
runner = CliRunner()


def take(lock, shared=False):
    with folder_lock(lock, shared):
        pass


@pytest.fixture
def holder():
    """Start a process that holds a lock file (``holder(path, shared)``); killed at the end."""
    started = []

    def start(path, shared=False):
        script = (
            "import sys, time; from pathlib import Path; from c2fnas.files.lock import *\n"
            "with folder_lock(Path(sys.argv[1]), shared=sys.argv[2] == 'shared'):\n"
            "    print('held', flush=True); time.sleep(600)\n"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", script, str(path), "shared" if shared else "exclusive"],
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_second_process_is_refused_until_the_holder_is_killed(tmp_path, holder):
    lock = RunFolder(tmp_path / "run").lock
    process = holder(lock)
    with pytest.raises(FolderBusy, match=rf"pid {process.pid} on {socket.gethostname()} \("):
        take(lock)
    with pytest.raises(FolderBusy, match=r"run is in use by "):
        take(lock, shared=True)  # nor is a shared lock granted beside an exclusive holder
    process.kill()  # SIGKILL: no clean-up ran, the operating system released the lock
    process.wait()
    take(lock)


def test_shared_holders_run_side_by_side_and_keep_exclusive_ones_out(tmp_path, holder):
    lock = RunFolder(tmp_path / "run").lock
    lock.parent.mkdir()  # the folder a search reads
    process = holder(lock, shared=True)
    take(lock, shared=True)
    with pytest.raises(FolderBusy, match=rf"pid {process.pid} "):
        take(lock)
    take(RunFolder(tmp_path / "typo").lock, shared=True)  # a reader makes no folder
    assert not (tmp_path / "typo").exists()


def test_a_process_reenters_the_lock_it_holds(tmp_path, holder):
    """The pipeline's stages run inside ``c2fnas run``'s lock and take it again."""
    lock = RunFolder(tmp_path / "run").lock
    with folder_lock(lock), folder_lock(lock), folder_lock(lock, shared=True):
        take(lock)
        script = (
            "import sys; from pathlib import Path; from c2fnas.files.lock import folder_lock\n"
            "with folder_lock(Path(sys.argv[1])): pass"
        )
        other = subprocess.run(
            [sys.executable, "-c", script, str(lock)], capture_output=True, text=True, env=ENV
        )
        assert other.returncode != 0 and f"pid {os.getpid()} " in other.stderr
    holder(lock).kill()  # released by the outermost block: another process takes it


def test_run_and_train_refuse_a_run_folder_another_run_holds(tmp_path, holder):
    run_dir = tmp_path / "run"
    process = holder(RunFolder(run_dir).lock)
    arguments = ["run", str(tmp_path / "dataset"), "--run", str(run_dir), "--preset", "smoke"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 1, result.output
    assert f"pid {process.pid} on {socket.gethostname()}" in " ".join(result.output.split())
    arch = REPO / "architectures" / "c2fnas-panc.json"
    result = runner.invoke(app, ["train", str(run_dir), "--arch", str(arch), "--fold", "0"])
    assert result.exit_code == 1 and f"pid {process.pid}" in " ".join(result.output.split())


def test_one_command_trains_the_supernet_of_a_run_folder(tmp_path, holder):
    """Scorers on other machines may join the fine search; its supernet trains only once."""
    run_dir = toy_run_folder(tmp_path / "run")
    process = holder(RunFolder(run_dir).fine.supernet.lock)
    topology = Architecture.coarse(u_shaped_topologies()[0], width=0.125)
    with pytest.raises(FolderBusy, match=rf"supernet is in use by pid {process.pid} "):
        fine_stage(run_dir, load_config("smoke"), topology=topology)
