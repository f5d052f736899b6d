"""One process of the two-process sharded (FSDP2, gloo on CPU) training test; launched by
test_sharded.py as ``python -m torch.distributed.run --standalone --nproc_per_node 2`` (what
``torchrun`` runs), with the experiment config built by ``load_config(yaml, overrides)`` as
``fastwam_training.train`` builds it.

argv: config.yaml output_dir. Phases, in one process group:
  A  train steps 1-4 sharded, with activation checkpointing, checkpoints at steps 2 and 4;
  B  a new Trainer resumes from A's step-2 checkpoint into another run folder and trains steps 3-4;
  C  two bf16 steps (FSDP2 mixed precision: fp32 shards, bf16 compute).
Writes rank<r>.pt with what the test checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch.distributed.tensor import DTensor

from fastwam_training.config import load_config
from fastwam_training.sharding import local_numel
from fastwam_training.trainer import Trainer


def keep_process_group(accelerator: Accelerator) -> None:
    """Trainer.train() ends with accelerate's end_training(), which destroys the process group (a
    re-initialised one hangs under torchrun's store): the phases share one, so only the trackers end."""

    def end_training() -> None:
        for tracker in accelerator.trackers:
            tracker.finish()

    accelerator.end_training = end_training


def global_losses(history: list[dict[str, float]]) -> list[float]:
    """Per step, the mean over processes of each process's loss: the whole batch's loss."""
    local = torch.tensor([row["loss"] for row in history], dtype=torch.float64)
    dist.all_reduce(local)
    return (local / dist.get_world_size()).tolist()


def full_flat(trainer: Trainer) -> torch.Tensor:
    """The whole model's weights, flattened in parameter order (gathered from the shards)."""
    parts = []
    for p in trainer.model.parameters():
        parts.append((p.full_tensor() if isinstance(p, DTensor) else p).detach().flatten())
    return torch.cat(parts)


def main() -> None:
    yaml_path, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    common = ["train.sharding=fsdp", "train.cpu=true"]

    # -- A: sharded training with activation checkpointing, checkpoints at steps 2 and 4 ----------
    config = load_config(
        yaml_path,
        [*common, f"output_dir={out / 'run'}", "train.gradient_checkpointing=true", "checkpoint.every=2"],
    )
    trainer = Trainer(config)
    acc = trainer.accelerator
    keep_process_group(acc)
    assert acc.num_processes == 2, f"expected 2 processes, got {acc.num_processes}"
    local, total = local_numel(trainer.model)
    model = trainer.model
    # While layer 1 runs, layer 0 is sharded again (freed after its forward) and layer 1 is whole.
    seen: list[tuple[bool, bool]] = []

    def probe(module, args):
        if torch.is_grad_enabled():
            seen.append(
                (
                    isinstance(model.video.blocks[0].attn1.to_q.weight, DTensor),
                    isinstance(model.video.blocks[1].attn1.to_q.weight, DTensor),
                )
            )

    handle = model.video.blocks[1].attn1.to_q.register_forward_pre_hook(probe)
    history = trainer.train()
    handle.remove()
    run_a = {
        "local_numel": local,
        "total_numel": total,
        "block_is_dtensor": isinstance(model.video.blocks[0].attn1.to_q.weight, DTensor),
        "expert_is_dtensor": isinstance(model.expert.blocks[0].ffn.net[0].proj.weight, DTensor),
        "seen": seen,
        "losses": global_losses(history),
        "final": full_flat(trainer),
    }

    # -- B: resume from step 2 into another folder ------------------------------------------------
    step2 = out / "run" / "checkpoints" / "step_0000002"
    config_b = load_config(
        yaml_path,
        [
            *common,
            f"output_dir={out / 'resumed'}",
            "train.gradient_checkpointing=true",
            "checkpoint.every=2",
            f"checkpoint.resume={step2}",
        ],
    )
    resumed = Trainer(config_b)
    assert resumed.step == 2, resumed.step
    keep_process_group(resumed.accelerator)
    history_b = resumed.train()
    run_b = {"losses": global_losses(history_b), "final": full_flat(resumed)}

    # -- C: bf16 mixed precision -------------------------------------------------------------------
    config_c = load_config(
        yaml_path,
        [*common, f"output_dir={out / 'bf16'}", "train.mixed_precision=bf16", "train.max_steps=2"],
    )
    bf16 = Trainer(config_c)
    keep_process_group(bf16.accelerator)
    compute: list[torch.dtype] = []
    hook = bf16.model.video.blocks[0].attn1.to_q.register_forward_pre_hook(
        lambda m, a: compute.append(m.weight.dtype)
    )
    history_c = bf16.train()
    hook.remove()
    run_c = {
        "losses": global_losses(history_c),
        "master_dtypes": sorted({str(p.dtype) for p in bf16.model.parameters()}),
        "compute_dtypes": sorted({str(d) for d in compute}),
        "optimizer_state_dtypes": sorted(
            {str(v.dtype) for s in bf16.optimizer.state.values() for k, v in s.items() if k != "step"}
        ),
    }
    torch.save({"A": run_a, "B": run_b, "C": run_c}, out / f"rank{acc.process_index}.pt")


if __name__ == "__main__":
    main()
