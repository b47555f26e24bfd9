"""Resume through the real path: a training process killed with SIGKILL mid-run and resumed ends
with the weights of a run that was never interrupted (real cache, real loader, own processes)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.synth import make_synthetic_dataset
from tests.training.synthetic import TINY

ITERATIONS = 40
SCHEDULE = f"""\
data:
  batch_size: 2
training:
  iterations: {ITERATIONS}
  milestones: [30]
  warmup_iterations: 5
  checkpoint_every: 5
  validate_every: 20
"""
# The supernet variant of `c2fnas train`: what the fine stage runs, one colouring per iteration.
SUPERNET = """\
import sys
from pathlib import Path
import torch
from c2fnas.nn import Supernet
from c2fnas.search.colourings import uniform_colouring
from c2fnas.space import Architecture
from c2fnas.training.config import load_config
from c2fnas.training.run import train

run_dir, arch, schedule, out, resume = sys.argv[1:]
architecture = Architecture.load(arch)
config = load_config("smoke", Path(schedule))
torch.manual_seed(config.training.seed)  # as the fine stage does
supernet = Supernet(architecture, 1, 3)
train(architecture, run_dir, 0, config, out, resume=resume == "1", network=supernet,
      sample_ops=uniform_colouring)
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    dataset = make_synthetic_dataset(root / "data", cases=5, shape=(32, 32, 24), test_cases=0)
    preprocess_dataset(dataset, root / "run")
    TINY.save(root / "tiny.json")
    (root / "schedule.yaml").write_text(SCHEDULE)
    (root / "supernet.py").write_text(SUPERNET)
    return root


def _command(root: Path, kind: str, out: Path, resume: bool) -> list[str]:
    if kind == "network":
        command = [sys.executable, "-m", "c2fnas", "train", str(root / "run"),
                   "--arch", str(root / "tiny.json"), "--fold", "0", "--preset", "smoke",
                   "--config", str(root / "schedule.yaml"), "--out", str(out)]  # fmt: skip
        return [*command, "--resume"] if resume else command
    return [sys.executable, str(root / "supernet.py"), str(root / "run"),
            str(root / "tiny.json"), str(root / "schedule.yaml"), str(out),
            "1" if resume else "0"]  # fmt: skip


def _environment() -> dict[str, str]:
    # every run on one thread, so that all three round alike
    repository = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": repository}


def _latest_iteration(out: Path) -> int:
    try:
        return int(json.loads((out / "checkpoints" / "latest.json").read_text())["iteration"])
    except (OSError, ValueError, KeyError):
        return 0


def _kill_after_first_checkpoints(command: list[str], out: Path) -> int:
    """Start ``command``, SIGKILL it once it has checkpointed twice; the iteration it had saved."""
    process = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while _latest_iteration(out) < 10:
            assert process.poll() is None, f"training stopped early: exit {process.returncode}"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return _latest_iteration(out)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["network", "supernet"])
def test_sigkilled_training_resumes_to_the_uninterrupted_weights(prepared, kind):
    straight, killed = prepared / f"{kind}-straight", prepared / f"{kind}-killed"
    subprocess.run(_command(prepared, kind, straight, False), env=_environment(), check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    saved = _kill_after_first_checkpoints(_command(prepared, kind, killed, False), killed)
    assert 10 <= saved < ITERATIONS, "the kill came too late to test anything"
    assert not (killed / "last").is_dir() or saved >= 20  # nothing validated past the kill
    subprocess.run(_command(prepared, kind, killed, True), env=_environment(), check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    expected = load_file(str(straight / "last" / "model.safetensors"))
    resumed = load_file(str(killed / "last" / "model.safetensors"))
    assert resumed.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)
    history = json.loads((killed / "last" / "model.json").read_text())
    assert history["iteration"] == ITERATIONS
