"""Two-process data-parallel training on CPU (gloo): both processes end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastwam.checkpoint import load_checkpoint
from fastwam_training.synthetic import make_v21_dataset

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_two_processes_stay_in_sync(tmp_path):
    dataset = make_v21_dataset(tmp_path / "ds", (10, 9, 8))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(dataset),
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["initial"], r1["initial"])  # same seeded initialisation
    assert not torch.equal(r0["initial"], r0["final"])  # training moved the weights ...
    assert torch.equal(r0["final"], r1["final"])  # ... identically on both processes (all-reduced grads)
    assert set(r0["first_batch"]).isdisjoint(r1["first_batch"])  # each process its own samples
    assert r0["losses"] == r1["losses"]  # and both log the whole global batch's mean loss
    saved = load_checkpoint(tmp_path / "run/checkpoints/step_0000004/model").model
    assert torch.equal(torch.cat([p.flatten() for p in saved.parameters()]), r0["final"])
