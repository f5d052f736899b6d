"""The single-process composition library: nodes in one rclpy context on one executor thread.

The runner (fastwam_bringup.run), the simulation experiment (fastwam_experiments) and the
benchmarks compose the same node classes the launch files start: `Composition` holds the context,
the executor and the nodes; the add_* helpers create a node with its parameters from a robot
config; `Monitor` watches the command topics and the policy node's chunks and status.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
import rclpy.logging
from rclpy.executors import SingleThreadedExecutor
from rclpy.logging import LoggingSeverity
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from fastwam.supervisor import State
from fastwam_sim.env import SIM_IMAGE_SIZE

QUIET_LOGGERS = ("fastwam_policy", "sim_robot", "recorder", "fastwam_run_monitor")  # node names


class Monitor:
    """Counts the commands on the robot's command topics and collects the policy's chunks."""

    def __init__(self, node, config) -> None:
        self.node = node
        self.commands = dict.fromkeys(config.robot.action_groups, 0)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
        for group in config.robot.action_groups:
            node.create_subscription(
                JointState, config.topics.command[group], lambda _m, g=group: self._count(g), qos
            )
        self.chunks: list[float] = []  # total latency (ms) of each chunk
        self.policy_state = ""  # from the policy node's PolicyStatus
        self.state_name = ""  # the PolicyStatus state alone (STARTING, ..., ERROR)
        self.reason = ""
        self.chunks_predicted = 0
        try:
            from fastwam_msgs.msg import ActionChunk, PolicyStatus

            node.create_subscription(
                ActionChunk, "/fastwam_policy/action_chunk", lambda m: self.chunks.append(m.total_ms), 10
            )
            node.create_subscription(PolicyStatus, "/fastwam_policy/status", self._on_status, 10)
        except ImportError:  # fastwam_msgs not built: no chunk monitoring
            pass

    def _on_status(self, msg) -> None:
        # The supervisor's states carry PolicyStatus's STATE_* numbers; another number is shown as is.
        state = State(msg.state).name if msg.state in State.__members__.values() else str(msg.state)
        self.state_name, self.reason = state, msg.reason
        self.policy_state = f"{state}: {msg.reason}" if msg.reason else state
        self.chunks_predicted = int(msg.chunks_predicted)

    def _count(self, group: str) -> None:
        self.commands[group] += 1


class Composition:
    """One rclpy context, one SingleThreadedExecutor and the nodes added to it; close() tears down.

    One executor thread: inference runs on the policy node's own worker thread, so callbacks stay
    short. rclpy's MultiThreadedExecutor was measured spinning a core at 100 % here, slowing
    inference 3-5x and leaving the policy holding on stale frames.
    """

    def __init__(self, quiet: bool = False) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list = []
        if quiet:  # the nodes log errors only (set before they are created: their start-up lines too)
            for name in QUIET_LOGGERS:
                rclpy.logging.set_logger_level(name, LoggingSeverity.ERROR)

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def add_node(self, node_class, **parameters):
        """A node of `node_class` in this context with these parameter values (as a launch file's
        Node sets them), added."""
        overrides = [Parameter(name, value=value) for name, value in parameters.items()]
        return self.add(node_class(context=self.context, parameter_overrides=overrides))

    def spin_once(self, timeout_s: float = 0.05) -> None:
        self.executor.spin_once(timeout_sec=timeout_s)

    def spin_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() >= deadline or not rclpy.ok(context=self.context):
                return False
            self.spin_once()
        return True

    def close(self) -> None:
        self.executor.shutdown()
        # The executor runs callbacks on this thread, but other threads (the policy node's inference
        # worker, which publishes its chunk when done) may still be finishing: give them a moment
        # before their nodes are destroyed.
        time.sleep(0.3)
        for node in self.nodes:
            self.executor.remove_node(node)
        for node in self.nodes:
            if hasattr(node, "recorder"):  # the recorder node's writer: saves a running episode
                node.recorder.shutdown()
            node.destroy_node()
        rclpy.shutdown(context=self.context)

    def __enter__(self) -> Composition:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- nodes ------------------------------------------------------------------------------------------
def add_recorder(comp: Composition, robot_config: str, output_dir: str | Path, instruction: str):
    from fastwam_policy.recorder_node import RecorderNode

    return comp.add_node(
        RecorderNode,
        robot_config=str(robot_config),
        output_dir=str(Path(output_dir).expanduser()),
        default_instruction=instruction,
    )


def add_sim(
    comp: Composition,
    robot_config: str,
    *,
    seed: int,
    image_size: tuple[int, int] = SIM_IMAGE_SIZE,
    episode_timeout_s: float = 0.0,
    time_scale: float = 1.0,
):
    """The simulated robot (fastwam_sim.nodes.sim_robot): hardware only, no operator."""
    from fastwam_sim.nodes.sim_robot import SimRobotNode

    return comp.add_node(
        SimRobotNode,
        robot_config=str(robot_config),
        seed=int(seed),
        episode_timeout_s=float(episode_timeout_s),
        image_height=int(image_size[0]),
        image_width=int(image_size[1]),
        time_scale=float(time_scale),
    )


def add_scripted_teleop(
    comp: Composition,
    robot_config: str,
    *,
    seed: int,
    episodes: int = 1,
    recorder: str = "",
    instruction: str = "fold the towel",
):
    """The scripted operator (fastwam_sim.nodes.scripted_teleop) of the simulated robot, recording
    through `recorder` when set."""
    from fastwam_sim.nodes.scripted_teleop import ScriptedTeleopNode

    return comp.add_node(
        ScriptedTeleopNode,
        robot_config=str(robot_config),
        seed=int(seed),
        episodes=int(episodes),
        recorder=recorder,
        instruction=instruction,
    )


def add_policy(
    comp: Composition,
    robot_config: str,
    checkpoint: str | Path,
    *,
    instruction: str,
    motion_enabled: bool,
    device: str = "cpu",
    dtype: str = "float32",
    sampler_seed: int | None = None,
    execution: str = "blend",
):
    try:
        from fastwam_policy.policy_node import FastWAMPolicyNode
    except ImportError as error:
        raise SystemExit(
            f"the policy node is not available ({error}); run with --scripted-teleop for the simulated "
            "robot and its scripted teleoperator alone"
        ) from error
    seed = {} if sampler_seed is None else {"seed": int(sampler_seed)}
    return comp.add_node(
        FastWAMPolicyNode,
        checkpoint=str(checkpoint),
        robot_config=str(robot_config),
        instruction=instruction,
        motion_enabled=motion_enabled,
        device=device,
        dtype=dtype,
        execution=execution,
        **seed,
    )


def add_monitor(comp: Composition, config) -> Monitor:
    node = comp.add(rclpy.create_node("fastwam_run_monitor", context=comp.context))
    return Monitor(node, config)


def wait_for_policy(comp: Composition, monitor: Monitor, checkpoint, timeout_s: float = 600.0) -> None:
    """Spin until the policy node has loaded its model and warmed up (it reports a state past
    STARTING); raises RuntimeError naming the checkpoint when it fails or takes too long."""
    ready = comp.spin_until(lambda: monitor.state_name not in ("", "STARTING"), timeout_s)
    if monitor.state_name == "ERROR":
        raise RuntimeError(f"policy node failed to start with checkpoint {checkpoint}: {monitor.reason}")
    if not ready:
        raise RuntimeError(
            f"policy node not ready after {timeout_s:.0f} s with checkpoint {checkpoint} "
            f"(state {monitor.policy_state or 'unknown'})"
        )


def private_ros_domain() -> int:
    """The ROS domain of a run that must hear only itself: the caller's ROS_DOMAIN_ID when set, else
    one derived from this process id (1..101), set in the environment before any ROS context exists
    (the nodes and the processes this run starts inherit it).

    Two runs on one machine in the default domain hear each other over shared memory / localhost
    DDS: one run's simulated joints and cameras reach the other's policy node (seen: a hold for joint
    states 195 s from the head frame while another simulation ran). Printed, so that another shell
    can watch with the same ROS_DOMAIN_ID."""
    if os.environ.get("ROS_DOMAIN_ID"):
        return int(os.environ["ROS_DOMAIN_ID"])
    domain = 1 + os.getpid() % 101
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    print(f"[ros] ROS_DOMAIN_ID={domain} (this run's own; export it in another shell to watch its topics)")
    return domain
