"""One process of the two-process CPU (gloo) training test; launched by torchrun from test_distributed.py.

argv: dataset_dir output_dir. Trains a few steps, then writes this rank's flattened parameters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from fastwam_training.config import from_dict
from fastwam_training.synthetic import experiment_dict
from fastwam_training.trainer import Trainer


def main() -> None:
    dataset, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    config = from_dict(
        experiment_dict(
            dataset,
            out / "run",
            train={"max_steps": 4, "batch_size": 2, "grad_accum": 2, "lr": 1e-3, "warmup_steps": 1},
            checkpoint={"every": 4},
        )
    )
    trainer = Trainer(config)
    acc = trainer.accelerator
    assert acc.num_processes == 2, f"expected 2 processes, got {acc.num_processes}"
    initial = torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).clone()
    first_batch = next(iter(trainer.train_loader(start=0).batch_sampler))  # this process's samples
    history = trainer.train()
    final = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    torch.save(
        {
            "initial": initial,
            "final": final,
            "losses": [r["loss"] for r in history],
            "first_batch": first_batch,
            "device": str(acc.device),
        },
        out / f"rank{acc.process_index}.pt",
    )


if __name__ == "__main__":
    main()
