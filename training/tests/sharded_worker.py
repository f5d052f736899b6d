"""One process of the two-process sharded (FSDP2, gloo on CPU) checks; launched by test_sharded.py as
``python -m torch.distributed.run --standalone --nproc_per_node 2`` (what ``torchrun`` runs), after the
test's CLI run of ``fastwam_training.train`` wrote <output_dir>/run. The configs come from
``load_config(yaml, overrides)``, as the CLI builds them.

argv: config.yaml output_dir. Phases, in one process group:
  probe  one sharded step with activation checkpointing: how much of the model each process holds,
         and whether a layer pair is gathered only while it runs;
  B      a new Trainer resumes from the CLI run's step-2 checkpoint into <output_dir>/resumed and
         trains steps 3-4;
  C      two bf16 steps (FSDP2 mixed precision: fp32 shards, bf16 compute).
Writes rank<r>.pt with what the test checks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.distributed.tensor import DTensor

from fastwam_training import sharding
from fastwam_training.config import load_config
from fastwam_training.sharding import local_numel
from fastwam_training.trainer import Trainer

SHARDED = ["train.sharding=fsdp", "train.cpu=true", "validation.every=0"]


def keep_process_group(accelerator: Accelerator) -> None:
    """Trainer.train() ends with accelerate's end_training(), which destroys the process group (a
    re-initialised one hangs under torchrun's store): the phases share one, so only the trackers end."""

    def end_training() -> None:
        for tracker in accelerator.trackers:
            tracker.finish()

    accelerator.end_training = end_training


def phase_trainer(yaml_path: str, output_dir: Path, *overrides: str) -> Trainer:
    """One phase's Trainer: the config as the CLI builds it from the YAML, sharded on CPU, writing to
    `output_dir`, with the phase's `overrides`; it keeps the process group the phases share."""
    trainer = Trainer(load_config(yaml_path, [*SHARDED, f"output_dir={output_dir}", *overrides]))
    keep_process_group(trainer.accelerator)
    return trainer


@contextmanager
def layer_probe(probe: Callable[[list], None]):
    """Call ``probe(blocks)`` as each MoT layer starts. The layer computes the Wan block
    functionally over the blocks' tensors (``fastwam.model.block``: no submodule is called, so a
    module hook never fires); the probe sits in the layer function that the FSDP unit's registered
    forward method calls, after FSDP has gathered (and cast) the pair's weights."""
    layer_fn = sharding.shared_layer

    def probed(blocks, streams, mask):
        probe(blocks)
        return layer_fn(blocks, streams, mask)

    sharding.shared_layer = probed
    try:
        yield
    finally:
        sharding.shared_layer = layer_fn


def main() -> None:
    yaml_path, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)

    # -- probe: one step ----------------------------------------------------------------------------
    trainer = phase_trainer(
        yaml_path,
        out / "probe",
        "train.gradient_checkpointing=true",
        "train.max_steps=1",
        "checkpoint.every=0",
    )
    acc = trainer.accelerator
    assert acc.num_processes == 2, f"expected 2 processes, got {acc.num_processes}"
    local, total = local_numel(trainer.model)
    model = trainer.model
    # While layer 1 runs, layer 0 is sharded again (freed after its forward) and layer 1 is whole.
    seen: list[tuple[bool, bool]] = []

    def probe(blocks):
        if blocks[0] is model.video.blocks[1] and torch.is_grad_enabled():
            seen.append(
                (
                    isinstance(model.video.blocks[0].attn1.to_q.weight, DTensor),
                    isinstance(model.video.blocks[1].attn1.to_q.weight, DTensor),
                )
            )

    with layer_probe(probe):
        trainer.train()
    probe_result = {
        "local_numel": local,
        "total_numel": total,
        "block_is_dtensor": isinstance(model.video.blocks[0].attn1.to_q.weight, DTensor),
        "expert_is_dtensor": isinstance(model.expert.blocks[0].ffn.net[0].proj.weight, DTensor),
        "seen": seen,
        # AdamW's two moments, as this process holds them after the step.
        "optimizer_local_numel": sum(
            (v.to_local() if isinstance(v, DTensor) else v).numel()
            for state in trainer.optimizer.state.values()
            for k, v in state.items()
            if k in ("exp_avg", "exp_avg_sq")
        ),
    }

    # -- B: resume the CLI run from step 2 into another folder -----------------------------------------
    step2 = out / "run" / "checkpoints" / "step_0000002"
    resumed = phase_trainer(
        yaml_path,
        out / "resumed",
        "train.gradient_checkpointing=true",
        "checkpoint.every=2",
        f"checkpoint.resume={step2}",
    )
    assert resumed.step == 2, resumed.step
    run_b = {"losses": [row["loss"] for row in resumed.train()]}

    # -- C: bf16 mixed precision -------------------------------------------------------------------------
    bf16 = phase_trainer(
        yaml_path, out / "bf16", "train.mixed_precision=bf16", "train.max_steps=2", "checkpoint.every=0"
    )
    compute: list[torch.dtype] = []
    first_block = bf16.model.video.blocks[0]
    with layer_probe(
        lambda blocks: (
            compute.append(first_block.attn1.to_q.weight.dtype) if blocks[0] is first_block else None
        )
    ):
        history_c = bf16.train()
    run_c = {
        "losses": [row["loss"] for row in history_c],
        "master_dtypes": sorted({str(p.dtype) for p in bf16.model.parameters()}),
        "compute_dtypes": sorted({str(d) for d in compute}),
        "optimizer_state_dtypes": sorted(
            {str(v.dtype) for s in bf16.optimizer.state.values() for k, v in s.items() if k != "step"}
        ),
    }
    torch.save({"probe": probe_result, "B": run_b, "C": run_c}, out / f"rank{acc.process_index}.pt")


if __name__ == "__main__":
    main()
