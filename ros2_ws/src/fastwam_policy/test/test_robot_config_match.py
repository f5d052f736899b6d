"""The one checkpoint-fits-robot check (`fastwam.robot_config_match.check_fits`) on the shipped
robot configs: what differs is named, and so is the shipped config that fits, in the words of the
caller (policy node, simulation experiment, trainer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastwam.camera import CameraLayout
from fastwam.robot import JointGroup, RobotSpec
from fastwam.robot_config import load_robot_config
from fastwam.robot_config_match import check_fits, shipped_config_dirs


def shipped(name: str) -> Path:
    """A shipped robot config, where the hint looks for them."""
    return next(d / name for d in shipped_config_dirs() if (d / name).is_file())


SIM, ROBOT = load_robot_config(shipped("r1_lite_sim.yaml")), load_robot_config(shipped("r1_lite.yaml"))


def test_a_checkpoint_for_the_config_fits():
    check_fits(SIM.robot, SIM.cameras, SIM.robot, SIM.cameras)
    check_fits(ROBOT.robot, ROBOT.cameras, ROBOT.robot, ROBOT.cameras)


def test_other_cameras_name_the_shipped_config_that_fits():
    with pytest.raises(ValueError) as caught:
        check_fits(SIM.robot, SIM.cameras, ROBOT.robot, ROBOT.cameras)
    message = str(caught.value)
    assert message.startswith(
        f"the checkpoint has camera layout {SIM.cameras.to_dict()}, the robot config has cameras "
        f"{ROBOT.cameras.to_dict()}; the checkpoint fits the shipped robot config "
    )
    assert message.endswith("/config/r1_lite_sim.yaml (parameter robot_config / robot_config:=)")


def test_other_joints_are_named_and_no_shipped_config_fits():
    groups = tuple(
        JointGroup(g.name, tuple(f"other_{j}" for j in g.joints), g.lower, g.upper, g.max_velocity, g.unit)
        for g in ROBOT.robot.groups
    )
    other = RobotSpec("other_robot", groups, ROBOT.robot.action_groups, ROBOT.robot.state_groups)
    with pytest.raises(ValueError) as caught:
        check_fits(other, ROBOT.cameras, ROBOT.robot, ROBOT.cameras)
    message = str(caught.value)
    assert message.startswith(
        "the checkpoint and the robot config are for different robots: robot spec 'other_robot' does "
        "not match 'galaxea_r1_lite': action joints differ"
    )
    assert message.endswith("; no robot config shipped with the project fits the checkpoint")


def test_the_caller_words_the_error_and_may_leave_the_hint_out():
    with pytest.raises(ValueError) as caught:
        check_fits(
            SIM.robot,
            SIM.cameras,
            ROBOT.robot,
            ROBOT.cameras,
            subject="--train-config towel.yaml",
            target="--robot-config r1_lite.yaml",
            setting="--robot-config",
        )
    assert str(caught.value).startswith("--train-config towel.yaml has camera layout ")
    assert "--robot-config r1_lite.yaml has cameras" in str(caught.value)
    assert str(caught.value).endswith("r1_lite_sim.yaml (--robot-config)")
    foreign = CameraLayout.row(ROBOT.cameras.keys, 32, 32)
    with pytest.raises(ValueError) as caught:
        check_fits(ROBOT.robot, foreign, ROBOT.robot, ROBOT.cameras, setting=None)
    assert str(caught.value).endswith(f"the robot config has cameras {ROBOT.cameras.to_dict()}")
