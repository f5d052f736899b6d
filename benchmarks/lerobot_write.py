"""Seconds per episode to append R1 Lite-sized episodes to a LeRobot dataset, v3.0 and v2.1.

Three cameras at the layout sizes the converter stores with --resize-to-layout (head 256x320,
wrists 128x160), 14-D state and action, H.264; prints the time of each append (video encoding,
plus for v3.0 rewriting the shared data file and remuxing the shared video files) and the size.

    python benchmarks/lerobot_write.py --episodes 4 --frames 450
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from fastwam.data.lerobot import open_writer

CAMERAS = {"observation.images.head": (256, 320), "observation.images.left": (128, 160)}
CAMERAS["observation.images.right"] = (128, 160)
NAMES = [f"joint{i}" for i in range(14)]


def episode(seed: int, frames: int) -> dict:
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None, None, None]
    clips = {}
    for key, (h, w) in CAMERAS.items():
        x = np.arange(w)[None, None, :, None]
        y = np.arange(h)[None, :, None, None]
        clips[key] = ((np.sin(0.05 * t + 0.03 * x + 0.02 * y + np.arange(3)) + 1) * 127).astype(np.uint8)
    state = np.cumsum(rng.normal(scale=0.01, size=(frames, 14)), axis=0).astype(np.float32)
    return {"frames": clips, "state": state, "action": state, "timestamps": 1e9 + np.arange(frames) / 15}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=450, help="frames per episode (15 fps)")
    args = parser.parse_args()
    for version in ("v3.0", "v2.1"):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "ds"
            writer = open_writer(root, 15, "r1_lite", list(CAMERAS), NAMES, NAMES, version=version)
            times = []
            for e in range(args.episodes):
                ep = episode(e, args.frames)
                start = time.perf_counter()
                writer.add_episode(
                    ep["frames"], ep["state"], ep["action"], ep["timestamps"], "fold the towel"
                )
                times.append(time.perf_counter() - start)
            size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
            print(
                f"{version}: {args.episodes} episodes x {args.frames} frames, s/episode "
                + " ".join(f"{t:.2f}" for t in times)
                + f" (dataset {size:.1f} MB)"
            )


if __name__ == "__main__":
    main()
