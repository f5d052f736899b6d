"""Small synthetic LeRobot datasets and matching configs, for tests, benchmarks and smoke runs.

Episodes follow a learnable rule: the state drifts along a per-episode direction, the action is the
next state, and the camera images encode the state as colours, so a model can fit them quickly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fastwam.data.lerobot import INDEX_FEATURES, LeRobotV21Writer
from fastwam.data.video import encode_video

CAMERAS = ("observation.images.front", "observation.images.wrist")
TASKS = ("pick up the cube", "fold the towel")


def robot_dict(joints: int = 3) -> dict[str, Any]:
    """A RobotSpec dict: one arm of `joints` joints plus a gripper (action = state = joints + 1)."""
    return {
        "name": "synthetic_arm",
        "groups": [
            {
                "name": "arm",
                "joints": [f"joint{i + 1}" for i in range(joints)],
                "lower": [-3.0] * joints,
                "upper": [3.0] * joints,
                "max_velocity": [1.0] * joints,
                "unit": "rad",
            },
            {
                "name": "gripper",
                "joints": ["gripper"],
                "lower": [0.0],
                "upper": [0.05],
                "max_velocity": [0.1],
                "unit": "m",
            },
        ],
        "action_groups": ["arm", "gripper"],
        "state_groups": ["arm", "gripper"],
    }


def cameras_dict(size: int = 32) -> dict[str, Any]:
    """Two cameras side by side, `size` x `size` each (keys front, wrist)."""
    return {
        "rows": [
            [{"key": "front", "height": size, "width": size}, {"key": "wrist", "height": size, "width": size}]
        ]
    }


def episode_arrays(episode: int, length: int, dim: int = 4, size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Frames (camera key -> uint8 [T, size, size, 3]), state [T, dim], action [T, dim], timestamps, task."""
    rng = np.random.default_rng(seed * 1000 + episode)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    start = rng.uniform(-1.0, 1.0, size=dim)
    steps = np.arange(length + 1, dtype=np.float64)[:, None]
    path = start + 0.05 * steps * direction
    state = path[:-1].astype(np.float32)
    action = path[1:].astype(np.float32)
    frames = {}
    ramp = np.linspace(0, 1, size, dtype=np.float32)[None, :, None]
    for c, key in enumerate(CAMERAS):
        colour = 0.5 + 0.45 * np.tanh(state[:, c : c + 3] if c + 3 <= dim else state[:, :3])  # [T, 3]
        image = colour[:, None, None, :] * (0.6 + 0.4 * ramp[None])  # [T, 1, size, 3] gradient
        image = np.broadcast_to(image, (length, size, size, 3))
        frames[key] = np.ascontiguousarray((image * 255).round().astype(np.uint8))
    return {
        "frames": frames,
        "state": state,
        "action": action,
        "timestamps": 1000.0 + np.arange(length) / 15.0,
        "task": TASKS[episode % len(TASKS)],
    }


def make_v21_dataset(
    root: str | Path,
    lengths: Sequence[int],
    codec: str = "h264_lossless",
    joints: int = 3,
    size: int = 32,
    seed: int = 0,
) -> Path:
    robot = robot_dict(joints)
    names = [j for g in robot["groups"] for j in g["joints"]]
    writer = LeRobotV21Writer(root, 15, "synthetic_arm", CAMERAS, names, names, video_codec=codec)
    for episode, length in enumerate(lengths):
        arrays = episode_arrays(episode, length, len(names), size, seed)
        writer.add_episode(
            arrays["frames"], arrays["state"], arrays["action"], arrays["timestamps"], arrays["task"]
        )
    return Path(root)


def make_v30_dataset(
    root: str | Path,
    lengths: Sequence[int],
    codec: str = "h264_lossless",
    joints: int = 3,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """The same episodes in the v3.0 layout: one data file, one video file per camera (episodes
    concatenated), meta/episodes/chunk-000/file-000.parquet and meta/tasks.parquet."""
    root = Path(root)
    fps = 15
    robot = robot_dict(joints)
    names = [j for g in robot["groups"] for j in g["joints"]]
    episodes = [episode_arrays(e, n, len(names), size, seed) for e, n in enumerate(lengths)]
    task_index = {t: i for i, t in enumerate(dict.fromkeys(ep["task"] for ep in episodes))}
    rows: dict[str, list] = {
        k: []
        for k in (
            "observation.state",
            "action",
            "timestamp",
            "frame_index",
            "episode_index",
            "index",
            "task_index",
        )
    }
    meta: dict[str, list] = {
        "episode_index": [],
        "tasks": [],
        "length": [],
        "data/chunk_index": [],
        "data/file_index": [],
        "dataset_from_index": [],
        "dataset_to_index": [],
        "meta/episodes/chunk_index": [],
        "meta/episodes/file_index": [],
    }
    for key in CAMERAS:
        for field in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"):
            meta[f"videos/{key}/{field}"] = []
    offset = 0
    for e, ep in enumerate(episodes):
        n = len(ep["state"])
        rows["observation.state"] += ep["state"].tolist()
        rows["action"] += ep["action"].tolist()
        rows["timestamp"] += (np.arange(n, dtype=np.float32) / fps).tolist()
        rows["frame_index"] += list(range(n))
        rows["episode_index"] += [e] * n
        rows["index"] += list(range(offset, offset + n))
        rows["task_index"] += [task_index[ep["task"]]] * n
        for k, v in (
            ("episode_index", e),
            ("tasks", [ep["task"]]),
            ("length", n),
            ("data/chunk_index", 0),
            ("data/file_index", 0),
            ("dataset_from_index", offset),
            ("dataset_to_index", offset + n),
            ("meta/episodes/chunk_index", 0),
            ("meta/episodes/file_index", 0),
        ):
            meta[k].append(v)
        for key in CAMERAS:
            meta[f"videos/{key}/chunk_index"].append(0)
            meta[f"videos/{key}/file_index"].append(0)
            meta[f"videos/{key}/from_timestamp"].append(offset / fps)
            meta[f"videos/{key}/to_timestamp"].append((offset + n) / fps)
        offset += n
    (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
    (root / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "observation.state": pa.array(rows["observation.state"], pa.list_(pa.float32())),
            "action": pa.array(rows["action"], pa.list_(pa.float32())),
            "timestamp": pa.array(rows["timestamp"], pa.float32()),
            **{
                k: pa.array(rows[k], pa.int64())
                for k in ("frame_index", "episode_index", "index", "task_index")
            },
        }
    )
    pq.write_table(table, root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.table(meta), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(
        pa.table({"task": list(task_index), "task_index": pa.array(list(task_index.values()), pa.int64())}),
        root / "meta/tasks.parquet",
    )
    for key in CAMERAS:
        clip = np.concatenate([ep["frames"][key] for ep in episodes])
        encode_video(root / f"videos/{key}/chunk-000/file-000.mp4", clip, fps, codec)
    features = {
        "observation.state": {"dtype": "float32", "shape": [len(names)], "names": names},
        "action": {"dtype": "float32", "shape": [len(names)], "names": names},
        **{
            key: {
                "dtype": "video",
                "shape": [size, size, 3],
                "names": ["height", "width", "channels"],
                "info": {"video.fps": fps, "video.codec": "h264"},
            }
            for key in CAMERAS
        },
        **INDEX_FEATURES,
    }
    info = {
        "codebase_version": "v3.0",
        "robot_type": "synthetic_arm",
        "total_episodes": len(lengths),
        "total_frames": offset,
        "total_tasks": len(task_index),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": features,
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return root


def experiment_dict(
    dataset: str | Path, output_dir: str | Path, preset: str = "tiny", **sections: Any
) -> dict[str, Any]:
    """An experiment config (dict form) for a synthetic dataset; `sections` update the defaults."""
    config: dict[str, Any] = {
        "name": "synthetic",
        "output_dir": str(output_dir),
        "seed": 0,
        "robot": robot_dict(),
        "cameras": cameras_dict(),
        "model": {"preset": preset, "variant": "fast_wam"},
        "data": {
            "root": str(dataset),
            "cameras": {"front": CAMERAS[0], "wrist": CAMERAS[1]},
            "video_stride": 1,
            "num_workers": 0,
            "normalization": {"action": "mean_std", "state": "mean_std"},
        },
        "cache": {"text": True},
        "train": {"max_steps": 10, "batch_size": 4, "lr": 1e-3, "warmup_steps": 5, "cpu": True},
        "checkpoint": {"every": 0},
        "logging": {"every": 5, "tensorboard": False, "progress": False},
        "validation": {"every": 0},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **values}
        else:
            config[name] = values
    return config


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Write a synthetic LeRobot dataset (see training/configs/tiny_synthetic.yaml)."
    )
    parser.add_argument("root", help="output directory (must not hold a dataset of another shape)")
    parser.add_argument("--version", choices=["v2.1", "v3.0"], default="v2.1")
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--length", type=int, default=60, help="frames per episode")
    parser.add_argument("--codec", default="h264")
    args = parser.parse_args(argv)
    make = make_v21_dataset if args.version == "v2.1" else make_v30_dataset
    root = make(args.root, [args.length] * args.episodes, codec=args.codec)
    print(f"wrote {args.episodes} episodes x {args.length} frames ({args.version}) to {root}")


if __name__ == "__main__":
    main()
