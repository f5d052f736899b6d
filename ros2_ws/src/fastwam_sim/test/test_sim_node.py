"""The simulated R1 Lite node over real rclpy/DDS: topics, types, QoS, command following, scripted fold."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("fastwam_msgs.srv", reason="fastwam_msgs is not built (scripts/bootstrap.sh)")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from fastwam.image_decoding import decode  # noqa: E402
from fastwam.robot_config import load_robot_config  # noqa: E402
from fastwam.shipped_configs import shipped_config  # noqa: E402
from fastwam_sim.nodes.scripted_teleop import ScriptedTeleopNode  # noqa: E402
from fastwam_sim.nodes.sim_robot import SimRobotNode  # noqa: E402

pytestmark = pytest.mark.ros
CONFIG = shipped_config("r1_lite.yaml")


@pytest.fixture
def ros():
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes = []

    def add(node):
        nodes.append(node)
        executor.add_node(node)
        return node

    yield context, executor, add
    for node in nodes:
        executor.remove_node(node)
        node.destroy_node()
    executor.shutdown()
    rclpy.shutdown(context=context)


def spin_until(executor, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)


def sim(context, **params) -> SimRobotNode:
    overrides = [Parameter("robot_config", value=str(CONFIG))]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return SimRobotNode(context=context, parameter_overrides=overrides)


def teleop(context, **params) -> ScriptedTeleopNode:
    overrides = [Parameter("robot_config", value=str(CONFIG))]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return ScriptedTeleopNode(context=context, parameter_overrides=overrides)


def test_publishes_robot_topics_and_follows_motion_target_commands(ros):
    context, executor, add = ros
    config = load_robot_config(CONFIG)
    node = add(sim(context, seed=3))
    probe = add(rclpy.create_node("probe", context=context))
    images, feedback = {}, {}
    for key, cam in config.topics.cameras.items():
        # A BEST_EFFORT subscriber receives them; the publishers' QoS is checked below.
        probe.create_subscription(
            CompressedImage, cam.topic, lambda m, k=key: images.__setitem__(k, m), qos_profile_sensor_data
        )
    for group, topic in config.topics.feedback.items():
        probe.create_subscription(
            JointState, topic, lambda m, g=group: feedback.__setitem__(g, m), qos_profile_sensor_data
        )
    spin_until(executor, lambda: len(images) == 3 and len(feedback) == 4, 10.0)
    assert set(images) == set(config.cameras.keys) and set(feedback) == set(config.topics.feedback)
    for key, msg in images.items():
        assert "jpeg" in msg.format
        assert decode(msg).shape == (480, 640, 3)
        infos = probe.get_publishers_info_by_topic(config.topics.cameras[key].topic)
        assert [i.qos_profile.reliability for i in infos] == [ReliabilityPolicy.BEST_EFFORT]
    assert list(feedback["arm_left"].name) == list(config.robot.group("arm_left").joints)
    start = np.array(feedback["arm_left"].position)
    np.testing.assert_allclose(start, node.env.home["left"], atol=1e-9)

    # A teleop/policy-style RELIABLE command: targets plus velocity caps; the gripper's position[0].
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    arm_pub = probe.create_publisher(JointState, config.topics.command["arm_left"], reliable)
    grip_pub = probe.create_publisher(JointState, config.topics.command["gripper_left"], reliable)
    target = start + np.array([0.3, -0.2, 0.2, 0.1, 0.0, 0.0])
    arm = JointState(position=target.tolist(), velocity=[0.5] * 6)
    grip = JointState(position=[0.01])
    bad = JointState(position=[float("nan")] * 6)
    # Until the simulated arm is there (about 1 s of simulated time), not for a fixed wall time: on
    # a busy machine the simulation advances less per wall second. The deadline only bounds a hang.
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        arm_pub.publish(arm)
        grip_pub.publish(grip)
        executor.spin_once(timeout_sec=0.05)
        with node.lock:
            there = np.allclose(node.env.positions("arm_left"), target, atol=0.01) and np.allclose(
                node.env.positions("gripper_left"), [0.01], atol=0.001
            )
        if there:
            break
    arm_pub.publish(bad)  # ignored: the robot keeps its last good targets
    spin_until(executor, lambda: node.commands_rejected > 0, 2.0)
    feedback.clear()
    spin_until(executor, lambda: len(feedback) == 4, 2.0)
    np.testing.assert_allclose(feedback["arm_left"].position, target, atol=0.02)
    assert feedback["gripper_left"].position[0] == pytest.approx(0.01, abs=0.002)
    assert node.commands_received["arm_left"] > 0 and node.commands_rejected >= 1
    assert not node.env.success


@pytest.mark.slow
def test_scripted_teleop_folds_the_towel_and_reports_success(ros):
    context, executor, add = ros
    config = load_robot_config(CONFIG)
    add(sim(context, seed=5))
    node = add(teleop(context, seed=5, start_delay_s=0.2, episodes=1))
    probe = add(rclpy.create_node("probe", context=context))
    commands = dict.fromkeys(config.robot.action_groups, 0)
    episodes = []
    for group in config.robot.action_groups:
        probe.create_subscription(
            JointState,
            config.topics.command[group],
            lambda m, g=group: commands.__setitem__(g, commands[g] + 1),
            QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
        )
    probe.create_subscription(String, "/sim_robot/episode", lambda m: episodes.append(json.loads(m.data)), 10)
    spin_until(executor, lambda: node.finished, 120.0)  # ~10 s of simulated time; bounds a hang only
    assert node.finished
    [result] = node.results
    assert result.success and result.seed == 5
    assert 5.0 < result.completion_s < 10.0
    # The teleop's commands went out on the robot's command topics (what a recorder records).
    assert all(n > 60 for n in commands.values()), commands
    assert any(e["succeeded"] for e in episodes)


@pytest.mark.slow
def test_the_sim_waits_for_a_recorder_that_comes_up_late_and_gives_up_clearly(ros, tmp_path, capfd):
    """The recorder starts 3 s after the simulated robot asked for it (more than the 2 s the node
    once waited): the episode is recorded from the operator's start pose on. With no recorder at
    all, the node gives up after recorder_wait_s, naming the service, and runs unrecorded."""
    from fastwam.data.episode_bag import read_episode_json
    from fastwam_policy.recorder_node import RecorderNode

    context, executor, add = ros
    robot = add(sim(context, seed=5, time_scale=3.0))
    node = add(teleop(context, seed=5, episodes=1, recorder="/recorder"))
    spin_until(executor, lambda: False, 3.0)
    assert not node.recording_episode and robot.env.time > 0.0  # running, the operator holding
    assert node.phase == "starting"
    add(
        RecorderNode(
            context=context,
            parameter_overrides=[
                Parameter("robot_config", value=str(CONFIG)),
                Parameter("output_dir", value=str(tmp_path / "episodes")),
            ],
        )
    )
    spin_until(executor, lambda: node.finished and not node.recording_episode, 60.0)
    [result] = node.results
    assert result.success and result.recorded, result
    info = read_episode_json(tmp_path / "episodes" / result.recorded)
    assert info["status"] == "saved" and info["task_success"] is True
    # The bag holds the fold from its start: the first recorded command is the start pose.
    from fastwam.data.bag import read_episode_streams

    config = load_robot_config(CONFIG)
    first = (
        read_episode_streams(tmp_path / "episodes" / result.recorded, config).command["arm_left"].positions[0]
    )
    start = config.robot.split(node._folder.action(0.0), config.robot.action_groups)["arm_left"]
    np.testing.assert_allclose(first, start, atol=1e-9)

    alone = add(teleop(context, seed=6, episodes=1, recorder="/nobody", recorder_wait_s=1.0))
    spin_until(executor, lambda: alone.finished, 60.0)
    [result] = alone.results
    assert result.success and not result.recorded
    assert "recorder service /nobody/start_episode did not come up within 1 s" in capfd.readouterr().err


def test_every_parameter_of_both_nodes_is_described_and_read_only(ros):
    """What `ros2 param describe` shows for the simulated robot and its scripted operator (the
    parameters rclpy declares itself, use_sim_time and the type description service, aside)."""
    context, _executor, add = ros
    nodes = [add(sim(context, seed=1)), add(teleop(context, seed=1))]
    builtin = {"use_sim_time", "start_type_description_service"}
    for node in nodes:
        names = [n for n in node._parameters if n not in builtin]
        assert len(names) >= 7, (node.get_name(), names)
        for name, descriptor in zip(names, node.describe_parameters(names)):
            assert descriptor.description, f"{node.get_name()}: parameter {name} has no description"
            assert descriptor.read_only, f"{node.get_name()}: parameter {name} is not read-only"
