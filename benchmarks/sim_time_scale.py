"""Scripted recording at several time scales: wall time per demo, camera frames missed, dataset frames.

Records --demos scripted demos (seeds --seed ..) through the recorder node at each --scales value
(the simulated robot's `time_scale`), converts the bags as the simulation experiment does, and
prints per scale: wall seconds per demo, head camera frames per episode, frames missing from the
15 Hz stamp grid (gaps), late frames (stamp spacing off the grid by more than a quarter period),
recorder drops (episode.json), where frames went missing (s after the first), and dataset frames per episode. Loss-free means 0 missing, 0 late,
0 dropped and the same dataset frames as at 1x.

    source scripts/env.sh && python benchmarks/sim_time_scale.py --scales 1 2 3 4 --demos 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "ros2_ws/src/fastwam_policy/config/r1_lite_sim.yaml"


def head_stamps(bag: Path, config) -> np.ndarray:
    from fastwam.data.bag import read_episode_streams

    return read_episode_streams(bag, config, "header").cameras["head"].stamps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--demos", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--camera-hz", type=float, default=15.0)
    args = parser.parse_args()

    from fastwam.data.bag import convert_bags, find_bags
    from fastwam.data.episode_bag import read_episode_json
    from fastwam.data.lerobot import LeRobotDataset
    from fastwam.robot_config import load_robot_config
    from fastwam_bringup.sim_episodes import record_scripted_episodes

    config = load_robot_config(CONFIG)
    period_ns = 1e9 / args.camera_hz
    with tempfile.TemporaryDirectory(prefix="sim_time_scale_") as tmp:
        for scale in args.scales:
            out = Path(tmp) / f"x{scale:g}"
            started = time.monotonic()
            results = record_scripted_episodes(
                CONFIG, out / "bags", seed=args.seed, episodes=args.demos, time_scale=scale
            )
            wall = time.monotonic() - started
            rows = []
            bags = find_bags([out / "bags"])
            for bag in bags:
                stamps = head_stamps(bag, config)
                gaps = np.diff(stamps) / period_ns  # in camera periods; 1.0 on the grid
                missing = int(np.sum(np.maximum(np.round(gaps) - 1, 0)))
                late = int(np.sum(np.abs(gaps - np.round(gaps)) > 0.25))
                info = read_episode_json(bag) or {}
                dropped = sum(t.get("dropped", 0) for t in info.get("topics", {}).values())
                where = np.nonzero(np.round(gaps) > 1)[0]
                rows.append(
                    (len(stamps), missing, late, dropped, [round(i / args.camera_hz, 1) for i in where])
                )
            convert_bags(
                bags, out / "dataset", config, resize_to_layout=True, update_stats=False, log=lambda _: None
            )
            data = LeRobotDataset(out / "dataset")
            frames = [data.episodes[i].length for i in data.episode_indices]
            print(
                json.dumps(
                    {
                        "time_scale": scale,
                        "wall_s_per_demo": round(wall / args.demos, 2),
                        "sim_s_per_demo": round(float(np.mean([r.duration_s for r in results])), 2),
                        "success": [r.success for r in results],
                        "head_frames": [r[0] for r in rows],
                        "missing": [r[1] for r in rows],
                        "late": [r[2] for r in rows],
                        "recorder_dropped": [r[3] for r in rows],
                        "missing_at_s": [r[4] for r in rows],
                        "dataset_frames": frames,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
