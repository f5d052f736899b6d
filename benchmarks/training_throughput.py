"""Training throughput (samples/s) on a synthetic LeRobot dataset, per preset.

    python benchmarks/training_throughput.py                      # tiny and small on CPU
    python benchmarks/training_throughput.py --presets small --camera-size 128 --steps 10

Prints, per preset: window loading (video decode + composite), VAE encoding, and whole training
steps end to end (decode + VAE + text cache + forward/backward/AdamW) and from cached latents.
Figures on a shared machine are noisy: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fastwam_training.config import from_dict
from fastwam_training.synthetic import cameras_dict, experiment_dict, make_v21_dataset
from fastwam_training.trainer import Trainer


def measure(preset: str, root: Path, size: int, batch: int, steps: int, stride: int) -> dict[str, float]:
    dataset = root / f"ds_{size}"
    if not dataset.exists():
        make_v21_dataset(dataset, (48, 48), codec="h264", size=size)
    results = {}
    for cached in (False, True):
        config = from_dict(
            experiment_dict(
                dataset,
                root / f"run_{preset}_{size}_{cached}",
                preset=preset,
                cameras=cameras_dict(size),
                data={"video_stride": stride},
                cache={"text": True, "latents": cached},
                train={"max_steps": steps + 2, "batch_size": batch, "warmup_steps": 1},
                logging={"every": 10**9, "tensorboard": False, "progress": False},
            )
        )
        trainer = Trainer(config)
        if not cached:
            loader = iter(trainer.train_loader(0))
            start = time.perf_counter()
            batches = [next(loader) for _ in range(steps)]
            results["load windows"] = steps * batch / (time.perf_counter() - start)
            start = time.perf_counter()
            for b in batches:
                trainer.model_inputs(b, None)
            results["VAE encode"] = steps * batch / (time.perf_counter() - start)
        trainer.config.train.run_steps = 2  # warm-up steps (allocator, first-call overheads)
        trainer.train()
        trainer.config.train.run_steps = steps
        start = time.perf_counter()
        trainer.train()
        key = "train step (cached latents)" if cached else "train step (end to end)"
        results[key] = steps * batch / (time.perf_counter() - start)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--camera-size", type=int, default=None, help="pixels per camera side (2 cameras in a row)"
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch_size}, {args.steps} steps"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            # tiny: 5 frames over a 4-step chunk; small: the paper's 9 frames at stride 4 over 32 steps.
            size = args.camera_size or (32 if preset == "tiny" else 64)
            stride = 1 if preset == "tiny" else 4
            results = measure(preset, Path(tmp), size, args.batch_size, args.steps, stride)
            print(f"{preset:>5} (composite {size}x{2 * size}):")
            for name, value in results.items():
                print(f"    {name:<28} {value:8.1f} samples/s")


if __name__ == "__main__":
    main()
