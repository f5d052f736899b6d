"""A random checkpoint for a robot config from the command line, and the policy node's layout
mismatch error naming the shipped robot config that fits the checkpoint."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastwam.camera import CameraLayout
from fastwam.checkpoint import load_checkpoint
from fastwam.robot_config import load_robot_config
from fastwam.robot_config_match import fitting_config_hint, matching_robot_configs

CONFIGS = Path(__file__).resolve().parents[1] / "config"
SIM, ROBOT = CONFIGS / "r1_lite_sim.yaml", CONFIGS / "r1_lite.yaml"


# Its tests are slow: a checkpoint the command writes in its own process (~7 s).
@pytest.fixture(scope="module")
def sim_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("random") / "sim_random"
    done = subprocess.run(
        [sys.executable, "-m", "fastwam.random_checkpoint", str(out), "--robot-config", str(SIM)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    return out


def test_the_command_refuses_bad_arguments_before_building_a_model(tmp_path, capsys):
    """In-process and cheap (the fast lane's test of the command): errors name what is wrong and
    nothing is written."""
    from fastwam.random_checkpoint import main

    assert main([str(tmp_path / "a"), "--robot-config", str(CONFIGS / "missing.yaml")]) == 1
    assert "missing.yaml" in capsys.readouterr().err
    assert main([str(tmp_path / "b"), "--robot-config", str(SIM), "--action-horizon", "0"]) == 1
    assert "--action-horizon must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_the_command_writes_a_checkpoint_the_config_accepts(sim_checkpoint):
    checkpoint = load_checkpoint(sim_checkpoint)
    config = load_robot_config(SIM)
    checkpoint.robot.check_matches(config.robot)
    assert checkpoint.camera_layout == config.cameras and checkpoint.action_horizon == 32
    bad = subprocess.run(
        [sys.executable, "-m", "fastwam.random_checkpoint", str(sim_checkpoint.parent / "x"), "--robot-config",
         str(CONFIGS / "missing.yaml")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 1 and "missing.yaml" in bad.stderr


@pytest.mark.slow
def test_the_shipped_config_that_fits_is_found(sim_checkpoint):
    checkpoint = load_checkpoint(sim_checkpoint)
    assert [p.name for p in matching_robot_configs(checkpoint.robot, checkpoint.camera_layout)] == [SIM.name]
    robot = load_robot_config(ROBOT)
    assert [p.name for p in matching_robot_configs(robot.robot, robot.cameras)] == [ROBOT.name]
    foreign = CameraLayout.row(robot.cameras.keys, 32, 32)
    assert "no robot config shipped" in fitting_config_hint(robot.robot, foreign)


@pytest.mark.slow
def test_the_policy_node_names_the_fitting_config(sim_checkpoint):
    """The sim checkpoint started with the robot's r1_lite.yaml: refused (ERROR), naming r1_lite_sim.yaml."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from fastwam_msgs.msg import PolicyStatus
    from fastwam_policy.policy_node import FastWAMPolicyNode

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    statuses: list = []
    try:
        probe = rclpy.create_node("probe", context=context)
        probe.create_subscription(PolicyStatus, "/fastwam_policy/status", statuses.append, 10)
        params = {"checkpoint": str(sim_checkpoint), "robot_config": str(ROBOT), "device": "cpu"}
        node = FastWAMPolicyNode(
            context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]
        )
        executor.add_node(probe)
        executor.add_node(node)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(s.state == PolicyStatus.STATE_ERROR for s in statuses):
            executor.spin_once(timeout_sec=0.1)
        [error] = [s for s in statuses if s.state == PolicyStatus.STATE_ERROR][:1]
        assert "camera layout" in error.reason and f"config/{SIM.name} " in error.reason, error.reason
        assert "robot_config" in error.reason
    finally:
        executor.shutdown()
        rclpy.try_shutdown(context=context)
