"""Sharded (FSDP2) training on two CPU processes (gloo), against the single-process run.

Two processes with batch 2 and grad_accum 1 see the same samples and noise as one process with
batch 2 and grad_accum 2 (the sampler's global batch order and the trainer's per-slot noise), so the
sharded run's per-step loss (mean over processes) and final weights must equal the single-process
run's up to float summation order. Tolerances: losses rel 1e-5; weights abs 1e-5 after 4 AdamW
steps at lr 1e-3 (each step moves a weight by at most ~lr, a rounding flip in the update's sign
moves it by ~2 lr = 2e-3, far above what we allow).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fastwam.checkpoint import load_checkpoint
from fastwam_training.config import from_dict
from fastwam_training.synthetic import experiment_dict, make_v21_dataset
from fastwam_training.trainer import Trainer

WORKER = Path(__file__).with_name("sharded_worker.py")
STEPS = 4


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_fsdp_two_processes_shard_match_single_process_resume_and_export(tmp_path):
    dataset = make_v21_dataset(tmp_path / "ds", (10, 9, 8))
    base = experiment_dict(
        dataset,
        tmp_path / "unused",
        train={
            "max_steps": STEPS,
            "batch_size": 2,
            "grad_accum": 1,
            "lr": 1e-3,
            "warmup_steps": 1,
            "cpu": True,
        },
        logging={"every": 1, "tensorboard": False, "progress": False},
    )
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(base))

    # The single-process reference: the same global batch as grad_accum 2.
    single = from_dict(
        {**base, "output_dir": str(tmp_path / "single"), "train": {**base["train"], "grad_accum": 2}}
    )
    reference = Trainer(single)
    n = len(reference.train_data)
    assert n // 4 >= STEPS, f"{n} windows: the comparison must stay in the first epoch (4 per step)"
    torch.set_num_threads(1)
    ref_losses = [row["loss"] for row in reference.train()]
    ref_final = flat(reference.model)

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(WORKER), str(config_file), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=480, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    a0, a1 = r0["A"], r1["A"]

    # Really sharded: each process holds about half of every unit, the two halves make the model.
    total = a0["total_numel"]
    assert total == sum(p.numel() for p in reference.model.parameters())
    assert a0["local_numel"] + a1["local_numel"] == total
    for a in (a0, a1):
        assert 0.4 < a["local_numel"] / total < 0.6, a["local_numel"] / total
        assert a["block_is_dtensor"] and a["expert_is_dtensor"]
        # Layer 1 runs with its weights gathered while layer 0 is already sharded again
        # (forward and the recomputation under activation checkpointing).
        assert a["seen"] and all(
            first_sharded and not second_sharded for first_sharded, second_sharded in a["seen"]
        )

    # Matches the single-process run.
    assert a0["losses"] == a1["losses"]  # both processes report the same global mean
    assert a0["losses"] == pytest.approx(ref_losses, rel=1e-5)
    assert torch.equal(a0["final"], a1["final"])
    torch.testing.assert_close(a0["final"], ref_final, rtol=0, atol=1e-5)

    # Resumed from the step-2 checkpoint: steps 3-4 bit for bit.
    b0 = r0["B"]
    assert b0["losses"] == a0["losses"][2:]
    assert torch.equal(b0["final"], a0["final"])

    # The exported model is the whole, unsharded one and loads strictly as the policy loads it.
    for run in ("run", "resumed"):
        loaded = load_checkpoint(tmp_path / run / "checkpoints" / f"step_{STEPS:07d}" / "model")
        assert torch.equal(flat(loaded.model), a0["final"])
    assert (tmp_path / "run/checkpoints/step_0000004/training_state/sharded/.metadata").is_file()

    # bf16: fp32 sharded master weights and AdamW states, bf16 compute copies.
    c0 = r0["C"]
    assert c0["master_dtypes"] == ["torch.float32"]
    assert c0["optimizer_state_dtypes"] == ["torch.float32"]
    assert c0["compute_dtypes"] == ["torch.bfloat16"]
    assert all(torch.isfinite(torch.tensor(c0["losses"])))
