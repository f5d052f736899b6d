"""Scripted demonstrations straight into a LeRobot dataset, without ROS and faster than real time.

The same data the ROS path gives (sim_robot_node with scripted_teleop -> recorder -> bag -> LeRobot
converter), produced in simulated time: per frame at `fps`, the three camera images (JPEG
round-tripped at the node's quality, as the bag path decodes them), the joint positions (state)
and the scripted teleoperator's command at that instant (action); both paths sample state and
action at the head frame's time. Episodes start with the robot at rest for `settle_s`.

    python -m fastwam_sim.demos --out datasets/towel_sim --episodes 30 --seed 0
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from fastwam.robot_config import RobotConfig, load_robot_config
from fastwam.shipped_configs import ROBOT_CONFIG, shipped_config
from fastwam_sim.env import SimParams, TowelFoldEnv
from fastwam_sim.teleop import ScriptedFolder

CAMERA_FEATURE = "observation.images.{key}"  # as fastwam.data.bag writes them
DEFAULT_INSTRUCTION = "fold the towel"


@dataclass
class Demo:
    seed: int
    frames: dict[str, np.ndarray]  # camera key -> uint8 RGB [T, H, W, 3]
    state: np.ndarray  # [T, state_dim]
    action: np.ndarray  # [T, action_dim]
    timestamps: np.ndarray  # [T] seconds
    success: bool
    completion_s: float | None


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """RGB -> JPEG -> RGB, what a camera frame goes through on the ROS path."""
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def scripted_demo(
    env: TowelFoldEnv,
    seed: int,
    fps: float = 15.0,
    settle_s: float = 0.5,
    tail_s: float = 0.5,
    jpeg_quality: int = 90,
) -> Demo:
    """One scripted fold from start pose `seed`, sampled at `fps`."""
    env.reset(seed)
    folder = ScriptedFolder(env)
    steps = int(round((settle_s + folder.duration + tail_s) * fps))
    keys = env.render().keys()
    frames: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    state, action, first_success = [], [], None
    for i in range(steps):
        t = i / fps
        for key, image in env.render().items():
            frames[key].append(jpeg_round_trip(image, jpeg_quality) if jpeg_quality else image)
        state.append(env.state())
        command = folder.action(max(t - settle_s, 0.0))
        action.append(command)
        env.command_action(command)
        env.step(1.0 / fps)
        if env.success and first_success is None:
            first_success = env.time
    return Demo(
        seed=seed,
        frames={k: np.stack(v) for k, v in frames.items()},
        state=np.array(state),
        action=np.array(action),
        timestamps=np.arange(steps) / fps,
        success=first_success is not None,
        completion_s=first_success,
    )


def scripted_demos(
    config: RobotConfig, episodes: int, seed: int = 0, params: SimParams | None = None, **kwargs
) -> Iterator[Demo]:
    env = TowelFoldEnv(config.robot, config.cameras.keys, params)
    for i in range(episodes):
        yield scripted_demo(env, seed + i, fps=config.control.rate_hz, **kwargs)


def write_dataset(
    root: str | os.PathLike[str],
    config: RobotConfig,
    episodes: int,
    seed: int = 0,
    instruction: str = DEFAULT_INSTRUCTION,
    video_codec: str = "h264",
    params: SimParams | None = None,
    **kwargs,
) -> list[Demo]:
    """Append `episodes` scripted demos (seeds seed, seed + 1, ...) to the LeRobot dataset at root.

    Returns the demos without their frames (kept for the summary: seeds, success).
    """
    from fastwam.data.lerobot import open_writer

    writer = open_writer(
        root,
        fps=config.control.rate_hz,
        robot_type=config.robot.name,
        camera_keys=[CAMERA_FEATURE.format(key=k) for k in config.cameras.keys],
        state_names=config.robot.state_joint_names,
        action_names=config.robot.action_joint_names,
        video_codec=video_codec,
    )
    written = []
    for demo in scripted_demos(config, episodes, seed, params, **kwargs):
        if not demo.success:  # the script folds every start pose; a failure is a bug, not data
            raise RuntimeError(f"scripted fold from seed {demo.seed} did not succeed")
        writer.add_episode(
            {CAMERA_FEATURE.format(key=k): v for k, v in demo.frames.items()},
            state=demo.state,
            action=demo.action,
            timestamps=demo.timestamps,
            task=instruction,
        )
        demo.frames = {}
        written.append(demo)
    return written


def _default_config() -> str | None:
    """The shipped r1_lite.yaml (fastwam.shipped_configs), None when no copy is found."""
    try:
        return str(shipped_config(ROBOT_CONFIG))
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fastwam_sim.demos", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", required=True, help="LeRobot dataset directory (created as v3.0, or appended to)"
    )
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="start pose seed of the first episode")
    default = _default_config()
    parser.add_argument("--robot-config", default=default, required=default is None)
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    parser.add_argument("--codec", default="h264")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="0: no JPEG round trip")
    args = parser.parse_args(argv)
    config = load_robot_config(args.robot_config)
    demos = write_dataset(
        args.out,
        config,
        args.episodes,
        args.seed,
        instruction=args.instruction,
        video_codec=args.codec,
        jpeg_quality=args.jpeg_quality,
    )
    frames = sum(len(d.timestamps) for d in demos)
    print(f"wrote {len(demos)} scripted episodes ({frames} frames) to {args.out}")


if __name__ == "__main__":
    main()
