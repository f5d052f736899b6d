"""Demonstration recorder: cameras, joint feedback and teleop commands -> one rosbag2 MCAP per episode.

Topics come from the robot config (fastwam_policy/config/r1_lite.yaml): the camera topics, the
feedback topics of the state groups and the /motion_target command topics of the action groups
(the commanded targets are the actions). Subscriptions are raw (the CDR bytes go to the bag as
received, no deserialize/serialize round trip), BEST_EFFORT with a deep queue by default so
nothing is refused by a best-effort publisher and bursts are absorbed. All disk work happens on
the writer thread of fastwam.data.episode_bag.EpisodeRecorder; this node only forwards.

Services: ~/start_episode (fastwam_msgs/StartEpisode: instruction), ~/stop_episode (StopEpisode:
save or discard, task_success). Status: ~/status (fastwam_msgs/RecorderStatus) at 1 Hz and on
every change. Optional: convert each saved episode into a LeRobot dataset in the background
(`convert_dataset` parameter), recover interrupted episodes found at start-up.

Parameters: robot_config (YAML path; default the shipped r1_lite.yaml), output_dir
(~/fastwam_episodes), qos_depth (100), {camera,feedback,command}_reliability (best_effort |
reliable; best_effort matches any publisher), flush_period_s (1.0: the most a crash can lose),
fsync (true), default_instruction, convert_dataset (LeRobot root; empty = off), convert_codec
(h264), convert_resize_to_layout (false), recover_on_start (true), status_rate_hz (1.0),
min_free_space_mb (1024: the output directory is checked at start-up, made if missing, proven
writable, and the node refuses to start with an error naming it otherwise), keep_empty_episodes
(false: an episode that recorded no message is discarded with a warning), shutdown_timeout_s
(10: on Ctrl-C / SIGTERM a running episode is saved and its bag closed within about this long).

    ros2 run fastwam_policy recorder_node --ros-args -p output_dir:=/data/episodes
    ros2 run fastwam_policy teleop_keys --ros-args -p instruction:="fold the towel"
    ros2 run fastwam_policy bag_to_lerobot convert /data/episodes --dataset /data/towel --config r1_lite.yaml
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from sensor_msgs.msg import CompressedImage, Image, JointState

from fastwam.data.episode_bag import (
    EpisodeError,
    EpisodeRecorder,
    TopicSpec,
    check_output_dir,
    find_incomplete_episodes,
    recover_episode,
)
from fastwam.robot_config import RobotConfig, load_robot_config
from fastwam.shipped_configs import default_robot_config
from fastwam_msgs.msg import RecorderStatus
from fastwam_msgs.srv import StartEpisode, StopEpisode
from fastwam_policy.spin import spin_until_shutdown

# Iron and later pass rmw message info (reception time, publisher sequence number) to two-argument
# callbacks; Humble (the R1 Lite's distribution) does not, and then drops are not detectable by gaps.
_MESSAGE_INFO = hasattr(Subscription, "CallbackType")
RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def recorded_topics(config: RobotConfig) -> list[tuple[str, type, str, str]]:
    """(topic, message class, ROS type name, kind) for every topic the recorder subscribes to."""
    out = []
    for cam in config.topics.cameras.values():
        cls = CompressedImage if cam.transport == "compressed" else Image
        out.append((cam.topic, cls, f"sensor_msgs/msg/{cls.__name__}", "camera"))
    groups = dict.fromkeys([*config.robot.state_groups, *config.robot.action_groups])
    for group in groups:
        if group in config.topics.feedback:
            out.append((config.topics.feedback[group], JointState, "sensor_msgs/msg/JointState", "feedback"))
    for group in config.robot.action_groups:
        out.append((config.topics.command[group], JointState, "sensor_msgs/msg/JointState", "command"))
    seen, unique = set(), []
    for entry in out:
        if entry[0] not in seen:
            seen.add(entry[0])
            unique.append(entry)
    return unique


class RecorderNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("recorder", **kwargs)
        p = self._declare
        config_path = p(
            "robot_config",
            default_robot_config(),
            "Robot config YAML whose camera, feedback and command topics are recorded; "
            "default: the shipped r1_lite.yaml (fastwam.shipped_configs)",
        )
        self.output_dir = Path(
            os.path.expanduser(
                p("output_dir", "~/fastwam_episodes", "directory of the episode bags (made if missing)")
            )
        )
        depth = int(p("qos_depth", 100, "subscription queue depth of every recorded topic (absorbs bursts)"))
        reliability = {
            kind: p(
                f"{kind}_reliability",
                "best_effort",
                f"QoS reliability of the {kind} subscriptions: best_effort (matches any publisher) or reliable",
            )
            for kind in ("camera", "feedback", "command")
        }
        flush_period_s = float(
            p("flush_period_s", 1.0, "seconds between flushes of the bag to disk: the most a crash can lose")
        )
        fsync = bool(
            p("fsync", True, "fsync the bag at every flush: a power cut too loses at most flush_period_s")
        )
        self.default_instruction = str(
            p("default_instruction", "", "instruction of an episode started with an empty one")
        )
        self.convert_dataset = str(
            p(
                "convert_dataset",
                "",
                "LeRobot dataset root each saved episode is converted into in the background; empty: off",
            )
        )
        self.convert_codec = str(
            p("convert_codec", "h264", "video codec of the background conversion: h264, h264_lossless, av1")
        )
        self.convert_resize = bool(
            p(
                "convert_resize_to_layout",
                False,
                "the background conversion stores cameras at their camera-layout size, not native",
            )
        )
        recover = bool(
            p("recover_on_start", True, "rebuild interrupted episodes found in output_dir at start-up")
        )
        status_rate_hz = float(
            p("status_rate_hz", 1.0, "rate of ~/status when nothing changes (a change publishes at once)")
        )
        min_free_mb = float(
            p("min_free_space_mb", 1024.0, "refuse to start with less free space in output_dir (MiB)")
        )
        keep_empty = bool(
            p("keep_empty_episodes", False, "save an episode that recorded no message (default: discard it)")
        )
        self.shutdown_timeout_s = float(
            p(
                "shutdown_timeout_s",
                10.0,
                "on Ctrl-C / SIGTERM, save the running episode and close its bag within this "
                "long (messages still queued after half of it are dropped, counted)",
            )
        )
        if not config_path:
            raise ValueError("parameter robot_config is empty: give a robot config YAML")
        for kind, value in reliability.items():
            if value not in RELIABILITY:
                raise ValueError(
                    f"parameter {kind}_reliability must be one of {sorted(RELIABILITY)}, got {value!r}"
                )
        if self.shutdown_timeout_s <= 0:
            raise ValueError(f"parameter shutdown_timeout_s must be positive, got {self.shutdown_timeout_s}")
        # Refuse at start-up, not at the first start_episode: the operator learns it before recording.
        try:
            check_output_dir(self.output_dir, int(min_free_mb * 2**20))
        except EpisodeError as error:
            raise ValueError(f"parameter output_dir: {error}") from error
        self.config_path = config_path
        self.config = load_robot_config(config_path)
        self.topics = recorded_topics(self.config)
        self._reliability = reliability
        self.recorder = EpisodeRecorder(
            self.output_dir,
            [self._spec(topic, type_name, kind) for topic, _, type_name, kind in self.topics],
            flush_period_s=flush_period_s,
            fsync=fsync,
            metadata={"robot": self.config.robot.name, "robot_config": str(config_path)},
            keep_empty=keep_empty,
        )
        if recover:
            self._recover_incomplete()
        for index, (topic, cls, _, kind) in enumerate(self.topics):
            qos = QoSProfile(depth=depth, reliability=RELIABILITY[reliability[kind]])
            self.create_subscription(cls, topic, self._forward(index), qos, raw=True)
        self.status_pub = self.create_publisher(RecorderStatus, "~/status", 10)
        self.create_service(StartEpisode, "~/start_episode", self._on_start)
        self.create_service(StopEpisode, "~/stop_episode", self._on_stop)
        self._last_published: tuple = ()
        self._next_periodic = 0.0
        self._status_period = 1.0 / status_rate_hz
        self.create_timer(0.1, self._on_timer)  # publishes at 1 Hz, and within 0.1 s of any change
        self._conversions: queue.Queue = queue.Queue()
        if self.convert_dataset:
            threading.Thread(target=self._convert_loop, daemon=True).start()
        self.get_logger().info(
            f"recording {len(self.topics)} topics of {self.config.robot.name} into {self.output_dir} "
            f"(depth {depth}, {reliability})"
        )

    def _declare(self, name: str, default, description: str):
        """Declare a parameter with its description, read-only: every one is read once, at start-up."""
        descriptor = ParameterDescriptor(description=description, read_only=True)
        return self.declare_parameter(name, default, descriptor).value

    # -- messages -------------------------------------------------------------------------------------
    def _forward(self, index: int):
        submit = self.recorder.submit
        if not _MESSAGE_INFO:  # Humble: callbacks get the message only

            def callback_humble(data: bytes) -> None:
                submit(index, time.time_ns(), data)

            return callback_humble

        def callback(data: bytes, info) -> None:
            # Bag time = reception time, as `ros2 bag record` does; the converter aligns on header stamps.
            seq = info.get("publication_sequence_number") or None
            submit(index, info.get("received_timestamp") or time.time_ns(), data, seq)

        return callback

    def _spec(self, topic: str, type_name: str, kind: str) -> TopicSpec:
        """The QoS stored for playback: the publisher's if one is known, else the subscription's."""
        reliable = self._reliability[kind] == "reliable"
        transient = False
        try:
            publishers = self.get_publishers_info_by_topic(topic)
        except Exception:  # not yet spinning or graph not available: fall back to ours
            publishers = []
        if publishers:
            qos = publishers[0].qos_profile
            reliable = qos.reliability == ReliabilityPolicy.RELIABLE
            transient = qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
        return TopicSpec(topic, type_name, reliable=reliable, transient_local=transient)

    # -- services -------------------------------------------------------------------------------------
    def _on_start(self, request, response):
        instruction = request.instruction.strip() or self.default_instruction
        if not instruction:
            response.success, response.message = (
                False,
                "instruction is empty (and no default_instruction set)",
            )
            return response
        if not self.recorder.recording:  # the bag stores the publishers' QoS as discovered now
            self.recorder.topics = [self._spec(t, type_name, kind) for t, _, type_name, kind in self.topics]
        try:
            episode = self.recorder.start(instruction)
        except EpisodeError as error:
            response.success, response.message = False, str(error)
            self.get_logger().error(str(error))
            self._publish_status()
            return response
        response.success, response.message, response.episode = True, f"recording {episode.path}", episode.name
        self.get_logger().info(f"episode {episode.name} started: {instruction!r}")
        self._publish_status()
        return response

    def _on_stop(self, request, response):
        try:
            episode = self.recorder.stop(save=request.save, task_success=request.task_success)
        except EpisodeError as error:
            response.success, response.message = False, str(error)
            self.get_logger().error(str(error))
            self._publish_status()
            return response
        response.episode = episode.name
        response.success = True
        if episode.info.get("discarded") == "empty":
            response.success = False
            response.message = f"discarded {episode.name}: it recorded no message (are the topics published?)"
            self.get_logger().warning(response.message)
            self._publish_status()
            return response
        if request.save:
            counts = episode.info.get("topics", {})
            total = sum(t["count"] for t in counts.values())
            dropped = sum(t["dropped"] for t in counts.values())
            response.message = (
                f"saved {episode.path} ({total} messages, {dropped} dropped, success={request.task_success})"
            )
            if self.convert_dataset:
                self._conversions.put(episode.path)
        else:
            response.message = f"discarded {episode.name}"
        self.get_logger().info(response.message)
        self._publish_status()
        return response

    # -- status ---------------------------------------------------------------------------------------
    def _on_timer(self) -> None:
        s = self.recorder.status()
        key = (s.recording, s.episode, s.episodes_saved, s.error)
        periodic = time.monotonic() >= self._next_periodic
        if periodic:
            # Sequence gaps count as drops only on topics with one publisher (numbers are per writer).
            for index, (topic, *_rest) in enumerate(self.topics):
                self.recorder.set_publisher_count(index, self.count_publishers(topic))
        if periodic or key != self._last_published:
            self._publish_status()

    def _publish_status(self) -> None:
        s = self.recorder.status()
        msg = RecorderStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.recording = s.recording
        msg.episode = s.episode
        msg.instruction = s.instruction
        msg.elapsed_s = float(s.elapsed_s)
        msg.episodes_saved = s.episodes_saved
        msg.topics = list(s.topics)
        msg.message_counts = [int(c) for c in s.counts]
        msg.rates_hz = [float(r) for r in s.rates_hz]
        msg.dropped = [int(d) for d in s.dropped]
        msg.error = s.error
        self.status_pub.publish(msg)
        self._last_published = (s.recording, s.episode, s.episodes_saved, s.error)
        self._next_periodic = time.monotonic() + self._status_period

    # -- recovery and conversion ---------------------------------------------------------------------
    def _recover_incomplete(self) -> None:
        for path in find_incomplete_episodes(self.output_dir):
            try:
                info = recover_episode(path)
                self.get_logger().warning(
                    f"recovered interrupted episode {path.name}: {info['recovered_messages']} messages (partial)"
                )
            except EpisodeError as error:
                self.get_logger().error(f"cannot recover {path}: {error}")

    def _convert_loop(self) -> None:
        """Converts saved episodes one at a time in a low-priority child process (CPU-heavy encoding)."""
        while True:
            path = self._conversions.get()
            command = [
                sys.executable,
                "-m",
                "fastwam.data.bag",
                "convert",
                str(path),
                "--dataset",
                self.convert_dataset,
                "--config",
                self.config_path,
                "--codec",
                self.convert_codec,
                *(["--resize-to-layout"] if self.convert_resize else []),
            ]
            started = time.monotonic()
            result = subprocess.run(
                command, capture_output=True, text=True, preexec_fn=lambda: os.nice(10), check=False
            )
            if result.returncode == 0:
                self.get_logger().info(
                    f"converted {path.name} into {self.convert_dataset} in {time.monotonic() - started:.1f} s"
                )
            else:
                message = f"conversion of {path.name} failed: {result.stderr.strip()[-500:]}"
                self.get_logger().error(message)
                self.recorder.error = message


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = RecorderNode()
        spin_until_shutdown(node)
    except KeyboardInterrupt:
        pass  # Ctrl-C during start-up
    except ValueError as error:  # a bad parameter or output directory: say so and exit 1
        print(f"[recorder] error: {error}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if node is not None:
            # A clean stop (Ctrl-C, SIGTERM) saves the running episode, in bounded time.
            node.recorder.shutdown(node.shutdown_timeout_s)
            node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
