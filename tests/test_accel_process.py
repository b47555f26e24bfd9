import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from c2fnas.accel.process import default_threads, keep_freed_memory, usable_cores
from c2fnas.cli import app


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_glibc_allocator_accepts_the_settings():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # a second call is a no-op (cached)


def _fresh_python(code, **environment):
    """Run ``code`` in a new interpreter (torch not loaded yet); its last line as JSON."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(environment)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


WAIT = """
import json, os, sys
from c2fnas.accel.process import wait_passively
first = wait_passively()
print(json.dumps([first, os.environ.get("OMP_WAIT_POLICY")]))
"""


def test_openmp_waits_passively_unless_the_environment_chooses():
    assert _fresh_python(WAIT) == [True, "PASSIVE"]
    assert _fresh_python(WAIT, OMP_WAIT_POLICY="ACTIVE") == [False, "ACTIVE"]  # the user's
    after_torch = "import torch\n" + WAIT  # too late: the runtime has read its settings
    assert _fresh_python(after_torch) == [False, None]


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
    assert _fresh_python(THREADS.format(threads=None)) == [cores, cores]
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
