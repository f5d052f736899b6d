"""Two training runs one after the other (each on every core) against side by side (a core each,
the finished run's core handed over), on this machine's CPUs.

    python benchmarks/side_by_side_training.py                       # sim preset, 200 steps of 16
    python benchmarks/side_by_side_training.py --steps 400 --variants fast_wam no_cotrain

The runs are real trainer processes (``python -m fastwam_training.train``) on a synthetic dataset
whose composite (two 128x128 cameras) gives the sim preset about the token count of the simulation
experiment's 192x160 composite, from a latent cache built first (``--prepare``). Prints each way's
wall time and their ratio, measured in one run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from fastwam_training.side_by_side import Run, available_cpus, run_side_by_side
from fastwam_training.synthetic import cameras_dict, experiment_dict, make_v21_dataset


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sim")
    ap.add_argument("--variants", nargs="+", default=["fast_wam", "no_cotrain"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--camera-size", type=int, default=128)
    args = ap.parse_args(argv)
    cpus = available_cpus()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = make_v21_dataset(root / "ds", (48, 48, 48), codec="h264", size=args.camera_size)

        def command(variant: str, out: Path, *extra: str) -> list[str]:
            config = experiment_dict(
                dataset,
                out,
                preset=args.preset,
                model={"preset": args.preset, "variant": variant},
                cameras=cameras_dict(args.camera_size),
                data={"video_stride": 4},
                cache={"text": True, "latents": True, "dir": str(root / "cache")},
                train={
                    "max_steps": args.steps,
                    "batch_size": args.batch_size,
                    "warmup_steps": 10,
                    "cpu": True,
                },
                logging={"every": 10, "tensorboard": False, "progress": False},
            )
            path = out.with_suffix(".yaml")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(config))
            return [sys.executable, "-m", "fastwam_training.train", "--config", str(path), *extra]

        subprocess.run(
            command(args.variants[0], root / "prepare", "--prepare"), check=True, capture_output=True
        )

        sequential = {}
        for variant in args.variants:
            start = time.perf_counter()
            subprocess.run(
                command(variant, root / "seq" / variant, f"train.cpu_threads={cpus}"),
                check=True,
                capture_output=True,
            )
            sequential[variant] = time.perf_counter() - start
        runs = [
            Run(
                variant,
                command(variant, root / "sbs" / variant),
                root / "sbs" / f"{variant}.log",
                root / "sbs" / variant / "logs" / "metrics.jsonl",
                args.steps,
            )
            for variant in args.variants
        ]
        start = time.perf_counter()
        run_side_by_side(runs, cpus=cpus)
        side = time.perf_counter() - start

    print(f"{args.preset} preset, {args.steps} steps of {args.batch_size} per run, {cpus} CPUs")
    for variant, seconds in sequential.items():
        print(f"  one after the other: {variant} {seconds:.1f} s on {cpus} threads")
    print(f"  one after the other, total: {sum(sequential.values()):.1f} s")
    for run in runs:
        print(f"  side by side: {run.name} {run.seconds:.1f} s")
    print(f"  side by side, total: {side:.1f} s")
    print(f"  ratio one after the other / side by side: {sum(sequential.values()) / side:.2f}")


if __name__ == "__main__":
    main()
