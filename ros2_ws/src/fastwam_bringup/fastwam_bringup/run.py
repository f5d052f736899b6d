"""Single-process runner: the simulated R1 Lite, the policy node (and a recorder) in one executor.

For machines without `ros2 launch` (the README's scripts/run.sh calls this). The nodes are the
same classes the launch files start, composed in one process through one executor and
configured from the same robot config YAML. It prints what happens (chunks, latency, commands,
task progress) and exits with a summary after --duration seconds or when the episode ends.

    python -m fastwam_bringup.run                       # random-init tiny model, motion enabled
    python -m fastwam_bringup.run --checkpoint ckpt/    # a trained checkpoint
    python -m fastwam_bringup.run --scripted-teleop --episodes 20 --record ~/fastwam_episodes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from fastwam.robot_config import load_robot_config


def default_config_path() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return str(Path(get_package_share_directory("fastwam_bringup")) / "config" / "r1_lite.yaml")
    except Exception:
        return str(Path(__file__).resolve().parents[1] / "config" / "r1_lite.yaml")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fastwam_bringup.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--robot-config", default=default_config_path(), help="robot config YAML")
    parser.add_argument(
        "--checkpoint",
        default="",
        help="policy checkpoint directory; empty: a random-init tiny model is created (no success expected)",
    )
    parser.add_argument("--instruction", default="fold the towel")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds before stopping (0: no limit)")
    parser.add_argument("--dry-run", action="store_true", help="policy predicts but does not command motion")
    parser.add_argument(
        "--scripted-teleop", action="store_true", help="the sim's scripted teleoperator drives; no policy"
    )
    parser.add_argument("--episodes", type=int, default=1, help="scripted episodes (with --scripted-teleop)")
    parser.add_argument("--seed", type=int, default=0, help="towel start pose seed (episode i: seed + i)")
    parser.add_argument("--record", default="", help="record episodes into this directory (recorder node)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--require-success", action="store_true", help="exit 1 unless every episode reached success"
    )
    return parser.parse_args(argv)


class Monitor:
    """Counts the commands on the robot's command topics and collects the policy's chunks."""

    def __init__(self, node, config) -> None:
        self.commands = dict.fromkeys(config.robot.action_groups, 0)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
        for group in config.robot.action_groups:
            node.create_subscription(
                JointState, config.topics.command[group], lambda _m, g=group: self._count(g), qos
            )
        self.chunks: list[float] = []  # total latency (ms) of each chunk
        self.policy_state = ""  # from the policy node's PolicyStatus
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
        names = ("STARTING", "DRY_RUN", "EXECUTING", "HOLDING", "ESTOP", "ERROR")
        state = names[msg.state] if msg.state < len(names) else str(msg.state)
        self.policy_state = f"{state}: {msg.reason}" if msg.reason else state
        self.chunks_predicted = int(msg.chunks_predicted)

    def _count(self, group: str) -> None:
        self.commands[group] += 1


def _random_checkpoint(config, directory: str) -> str:
    from fastwam.checkpoint import create_random_checkpoint

    path = Path(directory) / "random_tiny"
    # Horizon 32 as on the robot (the tiny preset has 4): a chunk must outlast one inference.
    create_random_checkpoint(path, "tiny", config.cameras, config.robot, seed=0, action_horizon=32)
    return str(path)


def _policy_node(args, config, context, checkpoint: str):
    try:
        from fastwam_policy.policy_node import FastWAMPolicyNode
    except ImportError as error:
        raise SystemExit(
            f"the policy node is not available ({error}); run with --scripted-teleop for the simulated "
            "robot and its scripted teleoperator alone"
        ) from error
    overrides = [
        Parameter("checkpoint", value=checkpoint),
        Parameter("robot_config", value=args.robot_config),
        Parameter("instruction", value=args.instruction),
        Parameter("motion_enabled", value=not args.dry_run),
        Parameter("device", value=args.device),
        Parameter("dtype", value=args.dtype),
    ]
    return FastWAMPolicyNode(context=context, parameter_overrides=overrides)


def run(args: argparse.Namespace) -> int:
    from fastwam_policy.sim_robot_node import SimRobotNode

    config = load_robot_config(args.robot_config)
    context = rclpy.Context()
    rclpy.init(context=context)
    # One executor thread: inference runs on the policy node's own worker thread, so callbacks stay
    # short. rclpy's MultiThreadedExecutor was measured spinning a core at 100 % here, slowing
    # inference 3-5x and leaving the policy holding on stale frames.
    executor = SingleThreadedExecutor(context=context)
    nodes = []
    tmp = tempfile.TemporaryDirectory(prefix="fastwam_run_")
    try:
        recorder = None
        if args.record:
            from fastwam_policy.recorder_node import RecorderNode

            recorder = RecorderNode(
                context=context,
                parameter_overrides=[
                    Parameter("robot_config", value=args.robot_config),
                    Parameter("output_dir", value=str(Path(args.record).expanduser())),
                    Parameter("default_instruction", value=args.instruction),
                ],
            )
            nodes.append(recorder)
        sim = SimRobotNode(
            context=context,
            parameter_overrides=[
                Parameter("robot_config", value=args.robot_config),
                Parameter("seed", value=args.seed),
                Parameter("scripted_teleop", value=args.scripted_teleop),
                Parameter("episodes", value=args.episodes if args.scripted_teleop else 1),
                Parameter("recorder", value="/recorder" if recorder is not None else ""),
                Parameter("instruction", value=args.instruction),
                Parameter("episode_timeout_s", value=0.0),
            ],
        )
        nodes.append(sim)
        if not args.scripted_teleop:
            checkpoint = args.checkpoint
            if not checkpoint:
                print("[run] no --checkpoint: creating a random-init tiny model (it will not fold the towel)")
                checkpoint = _random_checkpoint(config, tmp.name)
            nodes.append(_policy_node(args, config, context, checkpoint))
        monitor_node = rclpy.create_node("fastwam_run_monitor", context=context)
        nodes.append(monitor_node)
        monitor = Monitor(monitor_node, config)
        for node in nodes:
            executor.add_node(node)

        mode = (
            "scripted teleop" if args.scripted_teleop else ("policy, dry run" if args.dry_run else "policy")
        )
        print(f"[run] {config.robot.name} simulated, {mode}, seed {args.seed}, config {args.robot_config}")
        start = time.monotonic()
        next_report = start + 1.0
        while rclpy.ok(context=context):
            executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            if now >= next_report:
                next_report += 1.0
                print(
                    f"[run] t={now - start:5.1f}s commands {sum(monitor.commands.values()):5d} "
                    f"chunks {len(monitor.chunks):3d} progress {sim.env.progress:.2f} "
                    f"success {'yes' if sim.env.success else 'no'}"
                    + (f" policy {monitor.policy_state}" if monitor.policy_state else ""),
                    flush=True,
                )
            if sim.finished:
                break
            if not args.scripted_teleop and sim.first_success_s is not None:
                break  # policy-driven: the episode ends at success
            if args.duration > 0 and now - start >= args.duration:
                break
        elapsed = time.monotonic() - start
        if not sim.finished:  # close the running episode so it is scored (and recorded)
            sim.end_episode()
        deadline = time.monotonic() + 5.0  # let the recorder answer the stop (save + label)
        while recorder is not None and sim.recording_episode and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        return _summary(args, sim, monitor, elapsed, recorder)
    finally:
        executor.shutdown()
        # spin_once hands callbacks to the executor's thread pool without waiting for them, and
        # shutdown() does not wait either: let in-flight ones (a camera frame) finish first.
        time.sleep(0.3)
        for node in nodes:
            executor.remove_node(node)
        for node in nodes:
            if hasattr(node, "recorder"):  # the recorder node's writer: saves a running episode
                node.recorder.shutdown()
            node.destroy_node()
        rclpy.shutdown(context=context)
        tmp.cleanup()


def _summary(args, sim, monitor: Monitor, elapsed: float, recorder) -> int:
    results = sim.results
    print(f"[run] summary after {elapsed:.1f} s")
    print(
        "[run]   commands received by the robot: "
        + ", ".join(f"{g} {n}" for g, n in sim.commands_received.items())
    )
    print(
        f"[run]   commands rejected: {sim.commands_rejected}; on the topics: {sum(monitor.commands.values())}"
    )
    if monitor.chunks:
        latencies = sorted(monitor.chunks)
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
        print(
            f"[run]   chunks {len(latencies)}, latency median {statistics.median(latencies):.0f} ms, "
            f"p95 {p95:.0f} ms"
        )
    elif not args.scripted_teleop:
        print("[run]   chunks 0 (no action chunk was published)")
    if not args.scripted_teleop:
        print(
            f"[run]   policy: {monitor.chunks_predicted} chunks predicted, last state {monitor.policy_state or 'none'}"
        )
    for r in results:
        when = f" at {r.first_success_s:.1f} s" if r.first_success_s is not None else ""
        rec = f", recorded {r.recorded}" if r.recorded else ""
        print(
            f"[run]   episode {r.index} seed {r.seed}: {'SUCCESS' + when if r.success else 'no success'}, "
            f"progress {r.progress:.2f}{rec}"
        )
    successes = sum(r.success for r in results)
    print(f"[run]   success {successes}/{len(results)}")
    if args.require_success and successes < len(results):
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
