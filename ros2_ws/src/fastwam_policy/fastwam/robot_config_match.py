"""Whether a checkpoint fits a robot, and which shipped robot config it fits when it does not.

A checkpoint carries its robot spec and camera layout: action dims map to joints through it, and
images are composed by it. `check_fits` is the one check that they are the ones expected, used by
the policy node (checkpoint vs its robot config), the simulation experiment (training config vs
its robot config, before anything runs) and the trainer (an init checkpoint vs the run's config).
The usual cause of a mismatch is the wrong config, not the wrong checkpoint (a simulation
checkpoint, 192x160, started with the robot's r1_lite.yaml, 384x320), so the error names the
config shipped with the project that the checkpoint does fit, when there is one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from fastwam.camera import CameraLayout
from fastwam.robot import RobotSpec
from fastwam.robot_config import load_robot_config
from fastwam.shipped_configs import shipped_config_dirs

NODE_SETTING = "parameter robot_config / robot_config:="  # how the policy node is given a robot config


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
    robot: RobotSpec,
    layout: CameraLayout,
    directories: Iterable[str | os.PathLike[str]] | None = None,
    subject: str = "the checkpoint",
    setting: str = NODE_SETTING,
) -> str:
    """A sentence to append to a mismatch error: the shipped config that fits `subject` (and the
    `setting` that chooses a robot config), or that none does."""
    matches = matching_robot_configs(robot, layout, directories)
    if matches:
        names = " or ".join(str(p) for p in matches)
        return f"; {subject} fits the shipped robot config {names} ({setting})"
    return f"; no robot config shipped with the project fits {subject}"


def check_fits(
    robot: RobotSpec,
    layout: CameraLayout,
    expected_robot: RobotSpec,
    expected_layout: CameraLayout,
    subject: str = "the checkpoint",
    target: str = "the robot config",
    setting: str | None = NODE_SETTING,
    directories: Iterable[str | os.PathLike[str]] | None = None,
) -> None:
    """Raise ValueError unless `robot` and `layout` (a checkpoint's, or what a training config
    trains for) are `expected_robot` and `expected_layout` (`target`'s): same action and state
    joints in the same order with the same units, same camera layout. The error says what differs
    and, unless `setting` is None, which shipped robot config `subject` fits (chosen by `setting`)."""
    try:
        try:
            robot.check_matches(expected_robot)
        except ValueError as error:
            raise ValueError(f"{subject} and {target} are for different robots: {error}") from None
        if layout != expected_layout:
            raise ValueError(
                f"{subject} has camera layout {layout.to_dict()}, {target} has cameras "
                f"{expected_layout.to_dict()}"
            )
    except ValueError as error:
        hint = "" if setting is None else fitting_config_hint(robot, layout, directories, subject, setting)
        raise ValueError(f"{error}{hint}") from None
