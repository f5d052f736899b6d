"""A random-initialised checkpoint for a robot config, in seconds: for wiring tests of the nodes and
launch files (everything runs, nothing folds).

    python -m fastwam.random_checkpoint /tmp/fastwam_random --robot-config ros2_ws/src/fastwam_policy/config/r1_lite_sim.yaml
    ros2 launch fastwam_bringup towel_fold.launch.py checkpoint:=/tmp/fastwam_random use_sim:=true \\
        robot_config:=$PWD/ros2_ws/src/fastwam_policy/config/r1_lite_sim.yaml

The checkpoint has the config's robot spec, camera layout and control rate (so the policy node
accepts it with that config), identity normalization and the `tiny` preset unless --preset says
otherwise; the action horizon is 32 steps as on the robot (the tiny preset's own is 4: a chunk
must outlast one inference). It is fastwam.checkpoint.create_random_checkpoint behind a CLI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fastwam.robot_config import load_robot_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastwam.random_checkpoint", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "out", help="checkpoint directory to write (created; an existing checkpoint is replaced)"
    )
    parser.add_argument("--robot-config", required=True, help="robot config YAML the checkpoint is for")
    parser.add_argument("--preset", default="tiny", help="model preset (tiny, small; default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.add_argument("--action-horizon", type=int, default=32, help="steps per action chunk (default 32)")
    args = parser.parse_args(argv)
    try:
        config = load_robot_config(args.robot_config)
        if args.action_horizon < 1:
            raise ValueError(f"--action-horizon must be at least 1, got {args.action_horizon}")
        from fastwam.checkpoint import create_random_checkpoint

        path = create_random_checkpoint(
            Path(args.out),
            args.preset,
            config.cameras,
            config.robot,
            seed=args.seed,
            control_fps=config.control.rate_hz,
            action_horizon=args.action_horizon,
        )
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"random-initialised {args.preset} checkpoint for {config.robot.name} ({args.robot_config}): {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
