import os
import subprocess
import sys
from pathlib import Path

import pytest

from c2fnas.search.coarse import CoarseSettings, make_job
from c2fnas.search.report import code_text

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_torchrun_worker_trains_each_candidate_on_all_ranks(run_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--standalone", "-m", "tests.search.toy_distributed", str(run_dir)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]

    job = make_job(run_dir, CoarseSettings(budget=3, strategy="random"))
    snapshot = job.open_store().snapshot()
    assert snapshot.evaluated == 3
    expected = [f"{r.number} {code_text(r.code)} True" for r in snapshot.records]
    for rank in (0, 1):
        assert (run_dir / f"rank{rank}.txt").read_text().split("\n")[:-1] == expected
    assert (run_dir / "coarse" / "best_topology.json").is_file()
