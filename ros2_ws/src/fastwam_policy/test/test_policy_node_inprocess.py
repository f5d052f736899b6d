"""The policy node constructed in-process (as the single-process runner does): start-up checks of the
checkpoint against the robot config, and a model that outputs NaN. Each case must end in a clear
status, never a crash and never a command.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from fastwam.camera import CameraLayout  # noqa: E402
from fastwam.checkpoint import create_random_checkpoint  # noqa: E402
from fastwam.robot import JointGroup, RobotSpec  # noqa: E402
from fastwam_msgs.msg import PolicyStatus  # noqa: E402
from fastwam_policy.policy_node import FastWAMPolicyNode  # noqa: E402

import policy_node_harness as harness  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policy_node_inprocess")
    checkpoint, config_path, config = harness.write_test_setup(tmp)
    domain = harness.domain_id(3)
    robot = harness.FakeRobot(config, domain)
    yield tmp, checkpoint, config_path, config, robot, domain
    robot.close()


def _node(domain: int, **params):
    """(the policy node with these parameters, its own context); the context is shut down again
    when the node refuses to be constructed."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        return FastWAMPolicyNode(context=context, parameter_overrides=overrides), context
    except BaseException:
        rclpy.try_shutdown(context=context)
        raise


def _run_node(domain: int, checkpoint: Path, config_path: Path, **params):
    """The node spinning with `checkpoint` and the test robot config, on CPU, motion enabled."""
    node, context = _node(
        domain,
        checkpoint=str(checkpoint),
        robot_config=str(config_path),
        device="cpu",
        motion_enabled=True,
        **params,
    )
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    executor.add_node(node)
    return node, harness.Spinner(executor), context


def _stop(node, spinner, context) -> None:
    spinner.stop()
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def _expect_error(base, reason: str, checkpoint: Path, **params) -> None:
    tmp, _, config_path, config, robot, domain = base
    t = robot.now()
    node, executor, context = _run_node(domain, checkpoint, config_path, **params)
    try:
        assert node.get_name() == "fastwam_policy"
        _, status = robot.wait_state(PolicyStatus.STATE_ERROR, timeout=60, since=t)
        assert reason in status.reason and not status.motion_enabled
        response = robot.set_motion(True)
        assert not response.success and "ERROR" in response.message
        time.sleep(0.5)
        assert robot.commands(t) == []
    finally:
        _stop(node, executor, context)


def test_checkpoint_for_other_joints_is_refused_at_start(base):
    tmp, _, _, config, robot, _ = base
    groups = tuple(
        JointGroup(g.name, tuple(f"other_{j}" for j in g.joints), g.lower, g.upper, g.max_velocity, g.unit)
        for g in config.robot.groups
    )
    other = RobotSpec("other_robot", groups, config.robot.action_groups, config.robot.state_groups)
    checkpoint = create_random_checkpoint(
        tmp / "other_joints", "tiny", config.cameras, other, action_horizon=32
    )
    _expect_error(base, "does not match", Path(checkpoint))


@pytest.mark.slow
def test_checkpoint_for_other_cameras_is_refused_at_start(base):
    tmp, _, _, config, robot, _ = base
    checkpoint = create_random_checkpoint(
        tmp / "other_cameras",
        "tiny",
        CameraLayout.row(config.cameras.keys, 32, 32),
        config.robot,
        action_horizon=32,
    )
    _expect_error(base, "camera layout", Path(checkpoint))


@pytest.mark.slow
def test_rtc_with_a_variant_without_cached_prefix_is_refused_at_start(base):
    tmp, _, _, config, robot, _ = base
    checkpoint = create_random_checkpoint(
        tmp / "joint_variant", "tiny", config.cameras, config.robot, action_horizon=32, variant="joint"
    )
    _expect_error(base, "execution 'rtc' needs a cached-prefix checkpoint", Path(checkpoint), execution="rtc")


def test_unknown_execution_mode_is_refused_at_construction(base):
    _, checkpoint, config_path, _, _, domain = base
    with pytest.raises(ValueError, match="parameter 'execution' must be one of"):
        _node(domain, checkpoint=str(checkpoint), robot_config=str(config_path), execution="crossfade")


def test_missing_checkpoint_is_an_error_status(base):
    tmp = base[0]
    _expect_error(base, "start-up failed", tmp / "does_not_exist")


@pytest.mark.slow
def test_model_producing_nan_holds_then_errors_without_commanding(base):
    tmp, checkpoint, config_path, config, robot, domain = base
    # A copy of the checkpoint whose action output head yields NaN.
    broken = tmp / "nan_checkpoint"
    broken.mkdir()
    for item in checkpoint.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "model.safetensors").unlink()
    weights = load_file(checkpoint / "model.safetensors")
    weights["expert.proj_out.bias"] = weights["expert.proj_out.bias"] * np.nan
    save_file(weights, broken / "model.safetensors")
    t = robot.now()
    # No warm-up: it would catch the NaN at start; this checks the running node.
    node, executor, context = _run_node(domain, broken, config_path, warmup_runs=0)
    try:
        _, holding = robot.wait_state(PolicyStatus.STATE_HOLDING, timeout=60, reason="non-finite", since=t)
        assert "inference failed" in holding.reason
        _, error = robot.wait_state(PolicyStatus.STATE_ERROR, timeout=20, since=t)
        assert "consecutive inference failures" in error.reason
        assert robot.commands(t) == [] and robot.messages("chunk", t) == []
    finally:
        _stop(node, executor, context)
