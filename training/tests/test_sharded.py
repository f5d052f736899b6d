"""Sharded (FSDP2) training on two CPU processes (gloo), against the single-process run.

The sharded run is the README's launch command (torchrun + ``fastwam_training.train`` +
``train.sharding=fsdp``), here with 2 CPU processes. Two processes with batch 2 and grad_accum 1
see the same samples and noise as one process with batch 2 and grad_accum 2 (the sampler's global
batch order and the trainer's per-slot noise), and the logged loss is the global batch's, so the
sharded run's losses and final weights must equal the single-process run's up to float summation
order. Measured: losses within rel 5e-8, weights within 1.2e-7 after 4 AdamW steps at lr 1e-3.
Tolerances: losses rel 1e-5, weights abs 1e-5 (a rounding flip in an update's sign would move a
weight by ~2 lr = 2e-3, far above that).
"""

from __future__ import annotations

import json
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
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=480, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]


def exported(path: Path) -> torch.Tensor:
    """The exported model, loaded strictly (as the policy node loads it)."""
    return flat(load_checkpoint(path).model)


@pytest.mark.slow
def test_fsdp_two_processes_shard_match_single_process_resume_and_export(tmp_path):
    dataset = make_v21_dataset(tmp_path / "ds", (10, 9, 8, 8))
    base = experiment_dict(
        dataset,
        tmp_path / "unused",
        data={"val_episodes": [3]},
        train={
            "max_steps": STEPS,
            "batch_size": 2,
            "grad_accum": 1,
            "lr": 1e-3,
            "warmup_steps": 1,
            "cpu": True,
        },
        logging={"every": 1, "tensorboard": False, "progress": False},
        validation={"every": 2, "batches": 1, "batch_size": 2},
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

    # The launch command of the README, on 2 CPU processes.
    run_dir = tmp_path / "run"
    run([*TORCHRUN, "-m", "fastwam_training.train", "--config", str(config_file), "train.sharding=fsdp",
         "train.cpu=true", "train.gradient_checkpointing=true", f"output_dir={run_dir}", "checkpoint.every=2"])  # fmt: skip
    rows = [json.loads(line) for line in (run_dir / "logs/metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert [r["step"] for r in rows if "val/action_loss" in r] == [2, 4]  # validation ran, weights gathered
    assert (run_dir / "checkpoints/step_0000002/training_state/sharded/.metadata").is_file()

    # Matches the single-process run; the exported model is whole and loads strictly.
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    final = exported(run_dir / f"checkpoints/step_{STEPS:07d}/model")
    torch.testing.assert_close(final, ref_final, rtol=0, atol=1e-5)

    run([*TORCHRUN, str(WORKER), str(config_file), str(tmp_path)])
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))

    # Really sharded: each process holds about half, the two halves make the model.
    p0, p1 = r0["probe"], r1["probe"]
    total = p0["total_numel"]
    assert total == sum(p.numel() for p in reference.model.parameters())
    assert p0["local_numel"] + p1["local_numel"] == total
    for p in (p0, p1):
        assert 0.4 < p["local_numel"] / total < 0.6, p["local_numel"] / total
        assert p["block_is_dtensor"] and p["expert_is_dtensor"]
        assert p["optimizer_local_numel"] == 2 * p["local_numel"]  # AdamW states sharded alike
        # Layer 1 runs with its weights gathered while layer 0 is already sharded again, in the
        # forward and in the recomputation under activation checkpointing.
        assert len(p["seen"]) == 2 and all(first and not second for first, second in p["seen"])

    # Resumed from the step-2 checkpoint: steps 3-4 bit for bit, the same exported weights.
    assert r0["B"]["losses"] == r1["B"]["losses"] == losses[2:]
    assert torch.equal(exported(tmp_path / f"resumed/checkpoints/step_{STEPS:07d}/model"), final)

    # bf16: fp32 sharded master weights and AdamW states, bf16 compute copies.
    c0 = r0["C"]
    assert c0["master_dtypes"] == ["torch.float32"]
    assert c0["optimizer_state_dtypes"] == ["torch.float32"]
    assert c0["compute_dtypes"] == ["torch.bfloat16"]
    assert all(torch.isfinite(torch.tensor(c0["losses"])))


def test_sharding_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="train.sharding must be none or fsdp"):
        from_dict(experiment_dict(tmp_path, tmp_path, train={"sharding": "zero3"}))
    dataset = make_v21_dataset(tmp_path / "ds", (10, 9))

    def config(**train):
        return from_dict(experiment_dict(dataset, tmp_path / "run", train={"sharding": "fsdp", **train}))

    with pytest.raises(ValueError, match="fp16 needs a loss scaler"):
        Trainer(config(mixed_precision="fp16"))
    with pytest.raises(ValueError, match="EMA needs whole local weights"):
        Trainer(config(ema_decay=0.99))
    with pytest.raises(RuntimeError, match="needs a distributed launch"):
        Trainer(config())  # one plain process: nothing to shard across
