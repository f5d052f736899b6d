from __future__ import annotations

import numpy as np
import pytest

from fastwam.robot import JointGroup, RobotSpec


def two_arm_robot(order=("arm", "gripper")) -> RobotSpec:
    return RobotSpec(
        name="test",
        groups=(
            JointGroup("arm", ("j1", "j2"), (-1.0, 0.0), (1.0, 2.0), (0.5, 0.5)),
            JointGroup("gripper", ("g",), (0.0,), (0.05,), (0.1,), unit="m"),
        ),
        action_groups=order,
        state_groups=("arm", "gripper"),
    )


def test_layout_and_limits_follow_group_order():
    robot = two_arm_robot(order=("gripper", "arm"))
    assert robot.action_dim == 3 and robot.state_dim == 3
    assert robot.action_joint_names == ("g", "j1", "j2")
    np.testing.assert_array_equal(robot.action_lower, [0.0, -1.0, 0.0])
    np.testing.assert_array_equal(robot.action_upper, [0.05, 1.0, 2.0])
    np.testing.assert_array_equal(robot.clip_action(np.array([1.0, -5.0, 5.0])), [0.05, -1.0, 2.0])


def test_split_and_join_are_inverse():
    robot = two_arm_robot()
    vector = np.arange(6, dtype=float).reshape(2, 3)
    parts = robot.split(vector, robot.action_groups)
    np.testing.assert_array_equal(parts["arm"], [[0, 1], [3, 4]])
    np.testing.assert_array_equal(robot.join(parts, robot.action_groups), vector)
    with pytest.raises(ValueError, match="need 3"):
        robot.split(np.zeros(4), robot.action_groups)
    with pytest.raises(ValueError, match="expected 2 values"):
        robot.join({"arm": np.zeros(3), "gripper": np.zeros(1)}, robot.action_groups)


def test_check_matches_names_the_difference():
    two_arm_robot().check_matches(two_arm_robot())
    with pytest.raises(ValueError, match="action joints differ"):
        two_arm_robot().check_matches(two_arm_robot(order=("gripper", "arm")))


def test_dict_round_trip_and_validation():
    robot = two_arm_robot()
    assert RobotSpec.from_dict(robot.to_dict()) == robot
    with pytest.raises(ValueError, match="unknown fields"):
        RobotSpec.from_dict({**robot.to_dict(), "color": "red"})
    with pytest.raises(ValueError, match="lower >= upper"):
        JointGroup("arm", ("j",), (1.0,), (0.0,), (1.0,))
    with pytest.raises(ValueError, match="2 values for 1 joints"):
        JointGroup("arm", ("j",), (0.0, 1.0), (1.0,), (1.0,))
    with pytest.raises(ValueError, match="unknown groups"):
        RobotSpec("r", robot.groups, ("arm", "leg"), ())
