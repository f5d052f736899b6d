"""Which shipped robot config fits a checkpoint: for the policy node's layout-mismatch error.

A checkpoint carries its robot spec and camera layout; the policy node refuses one that differs
from its robot config. The usual cause is the wrong config, not the wrong checkpoint (a
simulation checkpoint, 192x160, started with the robot's r1_lite.yaml, 384x320), so the error
names the config shipped with the project that the checkpoint does fit, when there is one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from fastwam.camera import CameraLayout
from fastwam.robot import RobotSpec
from fastwam.robot_config import load_robot_config
from fastwam.shipped_configs import shipped_config_dirs


def matching_robot_configs(
    robot: RobotSpec, layout: CameraLayout, directories: Iterable[str | os.PathLike[str]] | None = None
) -> list[Path]:
    """The robot configs (*.yaml) in `directories` whose robot spec and cameras are a checkpoint's."""
    found: dict[str, Path] = {}  # by file name: the installed and source copies are one config
    for directory in shipped_config_dirs() if directories is None else map(Path, directories):
        for path in sorted(Path(directory).glob("*.yaml")):
            if path.name in found:
                continue
            try:
                config = load_robot_config(path)
                robot.check_matches(config.robot)
            except (ValueError, KeyError, OSError):  # not a robot config, or another robot
                continue
            if config.cameras == layout:
                found[path.name] = path
    return list(found.values())


def fitting_config_hint(
    robot: RobotSpec, layout: CameraLayout, directories: Iterable[str | os.PathLike[str]] | None = None
) -> str:
    """A sentence to append to a mismatch error: the shipped config that fits, or that none does."""
    matches = matching_robot_configs(robot, layout, directories)
    if matches:
        names = " or ".join(str(p) for p in matches)
        return f"; the checkpoint fits the shipped robot config {names} (parameter robot_config / robot_config:=)"
    return "; no robot config shipped with the project fits this checkpoint"
