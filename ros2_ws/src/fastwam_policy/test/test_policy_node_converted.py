"""A checkpoint of the authors' code, converted, drives the policy node (its own process, real DDS).

The authors' tiny fixture predicts 4-D actions from a 3-D state, so the robot config here is the
R1 Lite's topics and cameras with a 4-joint commanded arm and a 3-joint sensed group; the node loads
the converted checkpoint strictly, checks it against that config, predicts chunks and, once motion
is enabled, commands within the limits.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")
from fastwam.convert import convert_authors_checkpoint
from fastwam.robot_config import load_robot_config
from fastwam_msgs.msg import PolicyStatus

import policy_node_harness as harness
from authors_fixture import require_fixture

FIXTURE = require_fixture()  # skips the module without shared/ (fails in CI)
START_TIMEOUT = 120.0  # imports torch + diffusers and warms up on a loaded 2-core machine


def _robot_config(tmp: Path) -> Path:
    data = yaml.safe_load(harness.R1_LITE_YAML.read_text())
    data["robot"] = {
        "name": "authors_tiny_arm",
        "groups": [
            {"name": "arm_left", "joints": [f"left_arm_joint{i}" for i in range(1, 5)],
             "lower": [-1.0] * 4, "upper": [1.0] * 4, "max_velocity": [0.5] * 4, "unit": "rad"},
            {"name": "arm_right", "joints": [f"right_arm_joint{i}" for i in range(1, 4)],
             "lower": [-1.0] * 3, "upper": [1.0] * 3, "max_velocity": [0.5] * 3, "unit": "rad"},
        ],
        "action_groups": ["arm_left"],
        "state_groups": ["arm_right"],
    }  # fmt: skip
    data["cameras"] = harness.TEST_LAYOUT.to_dict()
    data["topics"]["feedback"] = {g: data["topics"]["feedback"][g] for g in ("arm_left", "arm_right")}
    data["topics"]["command"] = {"arm_left": data["topics"]["command"]["arm_left"]}
    data["freshness"].update({"max_camera_age_s": 2.0, "max_camera_skew_s": 2.0, "max_joint_age_s": 2.0})
    path = tmp / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_converted_authors_checkpoint_runs_through_the_policy_node(tmp_path):
    config_path = _robot_config(tmp_path)
    config = load_robot_config(config_path)
    checkpoint = convert_authors_checkpoint(
        FIXTURE / "fast_wam.pt", tmp_path / "converted", robot_config=config_path, stats=None,
        preset="tiny", action_horizon=8, video_frames=9, control_fps=config.control.rate_hz,
    )  # fmt: skip
    domain = harness.domain_id(7)
    proc = harness.start_node(checkpoint, config_path, domain, tmp_path / "node.log", instruction="fold")
    robot = harness.FakeRobot(config, domain)
    try:
        robot.wait_state(PolicyStatus.STATE_DRY_RUN, timeout=START_TIMEOUT)
        start = robot.now()
        robot.wait_for(lambda: len(robot.messages("chunk", start)) >= 2, 30, "two action chunks")
        _, chunk = robot.messages("chunk")[-1]
        assert list(chunk.trajectory.joint_names) == list(config.robot.action_joint_names)
        assert len(chunk.trajectory.points) == 8
        assert robot.commands() == []  # dry run until enabled
        response = robot.set_motion(True)
        assert response.success, response.message
        enabled = robot.now()
        robot.wait_for(lambda: len(robot.messages("command/arm_left", enabled)) >= 5, 30, "commands")
        time.sleep(1.0)
        positions = np.array([m.position for _, m in robot.messages("command/arm_left", enabled)])
        assert positions.shape[1] == 4 and np.isfinite(positions).all()
        assert (np.abs(positions) <= 1.0 + 1e-9).all()
        max_step = 0.5 / config.control.rate_hz
        assert (np.abs(np.diff(positions, axis=0)) <= max_step + 1e-9).all()
    finally:
        robot.close()
        code = harness.stop_node(proc)
        print((tmp_path / "node.log").read_text()[-3000:])
    assert code == 0, f"policy node exited with {code}"
