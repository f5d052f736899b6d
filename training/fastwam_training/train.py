"""CLI: python -m fastwam_training.train --config training/configs/X.yaml [--prepare] [section.key=value ...]

Single process, or under `accelerate launch --config_file training/accelerate/<ddp|fsdp|zero2|zero3>.yaml`
for multi-GPU / multi-node runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fastwam_training.config import load_config
from fastwam_training.trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML (training/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, values parsed as YAML")
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="check the data and build the text / VAE latent caches, then exit without training "
        "(before starting several runs that share cache.dir)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config, args.overrides)
    trainer = Trainer(config)
    if args.prepare:
        print(f"prepared: {len(trainer.train_data)} training windows, caches under {trainer.cache_dir}")
        return 0
    history = trainer.train()
    if trainer.accelerator.is_main_process and history:
        last = history[-1]
        print(
            f"done: step {last['step']} loss {last['loss']:.4f} action {last['action_loss']:.4f} "
            f"video {last['video_loss']:.4f} -> {config.output_dir}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
