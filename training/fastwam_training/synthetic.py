"""Small synthetic LeRobot datasets and matching configs, for tests, benchmarks and smoke runs.

Episodes follow a learnable rule: the state drifts along a per-episode direction, the action is the
next state, and the camera images encode the state as colours, so a model can fit them quickly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastwam.data.lerobot import DEFAULT_VERSION, V21, V30, LeRobotV21Writer, LeRobotV30Writer

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


WRITERS = {V21: LeRobotV21Writer, V30: LeRobotV30Writer}


def make_dataset(
    root: str | Path,
    lengths: Sequence[int],
    version: str = DEFAULT_VERSION,
    codec: str = "h264_lossless",
    joints: int = 3,
    size: int = 32,
    seed: int = 0,
    **limits: Any,
) -> Path:
    """The synthetic episodes as a dataset in either format (v3.0 by default), written by our writer
    of that version; `limits` go to it (v3.0: chunks_size, data_files_size_in_mb,
    video_files_size_in_mb: small ones force several files)."""
    if version not in WRITERS:
        raise ValueError(f"unknown LeRobot dataset version {version!r}; expected one of {sorted(WRITERS)}")
    robot = robot_dict(joints)
    names = [j for g in robot["groups"] for j in g["joints"]]
    writer = WRITERS[version](root, 15, "synthetic_arm", CAMERAS, names, names, video_codec=codec, **limits)
    for episode, length in enumerate(lengths):
        arrays = episode_arrays(episode, length, len(names), size, seed)
        writer.add_episode(
            arrays["frames"], arrays["state"], arrays["action"], arrays["timestamps"], arrays["task"]
        )
    return Path(root)


def make_v21_dataset(root: str | Path, lengths: Sequence[int], **kwargs: Any) -> Path:
    """The synthetic episodes in the v2.1 layout (`make_dataset`'s keywords)."""
    return make_dataset(root, lengths, V21, **kwargs)


def make_v30_dataset(root: str | Path, lengths: Sequence[int], **kwargs: Any) -> Path:
    """The synthetic episodes in the v3.0 layout (`make_dataset`'s keywords, the writer's limits)."""
    return make_dataset(root, lengths, V30, **kwargs)


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
    parser.add_argument("--version", choices=[V30, V21], default=DEFAULT_VERSION)
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--length", type=int, default=60, help="frames per episode")
    parser.add_argument("--codec", default="h264")
    args = parser.parse_args(argv)
    root = make_dataset(args.root, [args.length] * args.episodes, args.version, codec=args.codec)
    print(f"wrote {args.episodes} episodes x {args.length} frames ({args.version}) to {root}")


if __name__ == "__main__":
    main()
