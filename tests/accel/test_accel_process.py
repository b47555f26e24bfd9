import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from c2fnas.accel.process import (
    ThreadGovernor,
    default_threads,
    keep_freed_memory,
    start_governor,
    usable_cores,
)
from c2fnas.cli import app


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_glibc_allocator_accepts_the_settings():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # a second call is a no-op (cached)


def _fresh_python(code, **environment):
    """Run ``code`` in a new interpreter (torch not loaded yet); its last line as JSON."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(environment)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


THREADS = """
import json
from c2fnas.accel.process import use_threads
chosen = use_threads({threads})
import torch
print(json.dumps([chosen, torch.get_num_threads()]))
"""


def test_threads_default_to_the_usable_cores_and_reach_torch():
    cores = len(os.sched_getaffinity(0))
    assert usable_cores() == cores
    assert _fresh_python(THREADS.format(threads=None)) == [cores, cores]  # OpenMP's default
    assert _fresh_python(THREADS.format(threads=1)) == [1, 1]
    assert _fresh_python(THREADS.format(threads=None), OMP_NUM_THREADS="1") == [1, 1]


def test_the_threads_option_sets_torchs_threads(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))  # restored after the test
    try:
        synth = ["data", "synth", str(tmp_path / "data"), "--cases", "1", "--test-cases", "0"]
        result = CliRunner().invoke(app, ["--threads", "1", *synth])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1 and default_threads() == 1
        refused = CliRunner().invoke(app, ["--threads", "0", *synth])
        assert refused.exit_code == 2
    finally:
        torch.set_num_threads(before)


class _Machine:
    """A fake clock and CPU counters: ``run(seconds, mine, others)`` advances them as if this
    process used ``mine`` cores and other jobs ``others`` for that long."""

    def __init__(self):
        self.now, self.busy, self.own = 0.0, 0.0, 0.0

    def run(self, seconds, mine, others):
        self.now += seconds
        self.own += mine * seconds
        self.busy += (mine + others) * seconds

    def governor(self, every=10.0):
        return ThreadGovernor(every, lambda: self.now, lambda: self.busy, lambda: self.own)


def test_the_governor_gives_other_jobs_cores_and_takes_them_back():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        machine = _Machine()
        governor = machine.governor()
        machine.run(5, mine=4, others=0)
        assert governor.tick() is None  # not yet time to look
        machine.run(6, mine=4, others=0)
        assert governor.tick() is None and torch.get_num_threads() == 4  # alone: all four
        machine.run(11, mine=2.9, others=1.1)  # one busy job beside it
        assert governor.tick() == 3 and torch.get_num_threads() == 3
        machine.run(11, mine=1.2, others=2.8)
        assert governor.tick() == 1  # at least one
        machine.run(11, mine=1.0, others=0.1)  # they finished
        assert governor.tick() == 4 and torch.get_num_threads() == 4  # never above the start
    finally:
        torch.set_num_threads(before)


def test_the_governor_does_nothing_without_cpu_counters():
    before = torch.get_num_threads()
    machine = _Machine()
    governor = ThreadGovernor(1.0, lambda: machine.now, lambda: None, lambda: machine.own)
    machine.run(5, mine=1, others=3)
    assert governor.tick() is None and torch.get_num_threads() == before


def test_the_governor_reads_this_machines_counters():
    governor = ThreadGovernor(every=0.0)
    sample = governor._sample()
    if sys.platform == "linux":
        assert sample[1] is not None and sample[1] > 0
    threads = governor.tick()
    assert threads is None or 1 <= threads <= governor.limit
    torch.set_num_threads(governor.limit)


def test_training_adapts_its_threads_unless_they_were_fixed(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("C2FNAS_ADAPT_THREADS", "1")
    assert ThreadGovernor.wanted(cpu) and not ThreadGovernor.wanted(cuda)
    assert isinstance(start_governor(cpu), ThreadGovernor) and start_governor(cuda) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # fixed by the user or `c2fnas --threads`
    assert not ThreadGovernor.wanted(cpu) and start_governor(cpu) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("C2FNAS_ADAPT_THREADS", "0")
    assert not ThreadGovernor.wanted(cpu) and start_governor(cpu) is None
