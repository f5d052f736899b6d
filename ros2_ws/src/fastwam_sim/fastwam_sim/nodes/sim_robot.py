"""Simulated Galaxea R1 Lite: the robot's topics, types and QoS around fastwam_sim.TowelFoldEnv.

Publishes what the robot publishes (names from the robot config): three JPEG
sensor_msgs/CompressedImage camera streams (480x640 unless image_height / image_width say
otherwise, BEST_EFFORT) and sensor_msgs/JointState
feedback per joint group (names filled, BEST_EFFORT). Follows the /motion_target command topics
(JointState: arm position targets with per-joint velocity caps in `velocity`, gripper position[0]).
The simulation runs in real time on the node's clock, or `time_scale` times faster (scripted
teleoperation only): every timer fires time_scale times as often in wall time, physics advances
time_scale x the wall dt, and every header stamp comes from one simulated clock (the node's ROS time
at start + time_scale x elapsed wall time, monotonic), so a recording holds the same data as a
real-time one. That clock waits for a camera frame that is overdue (a stalled executor) rather than
losing it, and camera frames are stamped on their rate's grid.

Scoring: ~/task_success (std_msgs/Bool: the towel is folded now), ~/progress (std_msgs/Float32,
0 flat .. 1 folded) and ~/episode (std_msgs/String, JSON: seed, towel pose, time, success) at 2 Hz
and on every change.

Scripted teleoperation (parameter scripted_teleop): a scripted operator (fastwam_sim.ScriptedFolder)
publishes the fold on the /motion_target topics like a human with a teleop rig (RELIABLE), so a
recorder records its commands as actions. With `recorder` set (e.g. /recorder), each episode is
recorded through that recorder's ~/start_episode and ~/stop_episode services and labelled with
the success check; `episodes` episodes are run with seeds seed, seed + 1, ... The node waits for
the recorder's services as long as the recorder takes to come up, at most `recorder_wait_s` (then
an error names the service and the episode runs unrecorded), without blocking its executor; the
scripted operator holds the start pose until the recorder has started the episode, so a recording
never misses the beginning of a fold.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import Bool, Float32, String

from fastwam.robot_config import load_robot_config
from fastwam.shipped_configs import default_robot_config
from fastwam_msgs.srv import StartEpisode, StopEpisode
from fastwam_policy.spin import spin_until_shutdown
from fastwam_sim import ScriptedFolder, SimParams, TowelFoldEnv

# Commands are accepted from RELIABLE and BEST_EFFORT publishers alike.
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
FEEDBACK_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
TELEOP_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
JPEG_FORMAT = "rgb8; jpeg compressed bgr8"  # what image_transport's compressed plugin writes


@dataclass
class EpisodeResult:
    index: int
    seed: int
    success: bool  # reached the folded state at any time during the episode
    progress: float  # at the end
    duration_s: float
    recorded: str = ""  # episode name returned by the recorder, if any
    first_success_s: float | None = None
    notes: list[str] = field(default_factory=list)


class SimRobotNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sim_robot", **kwargs)
        p = self.declare_parameter
        config_path = str(p("robot_config", default_robot_config()).value)
        self.seed = int(p("seed", 0).value)
        camera_rate_hz = float(p("camera_rate_hz", 15.0).value)
        joint_rate_hz = float(p("joint_rate_hz", 50.0).value)
        physics_rate_hz = float(p("physics_rate_hz", 60.0).value)
        self.jpeg_quality = int(p("jpeg_quality", 90).value)
        self.scripted = bool(p("scripted_teleop", False).value)
        self.start_delay_s = float(p("teleop_start_delay_s", 1.0).value)
        self.episodes = int(p("episodes", 1).value)  # scripted episodes to run; 0: keep going
        self.episode_timeout_s = float(p("episode_timeout_s", 0.0).value)  # policy-driven; 0: none
        self.recorder_name = str(p("recorder", "").value)
        self.recorder_wait_s = float(
            p(
                "recorder_wait_s",
                60.0,
                ParameterDescriptor(
                    description="how long to wait for the recorder's services before running an episode "
                    "unrecorded (s)"
                ),
            ).value
        )
        self.instruction = str(p("instruction", "fold the towel").value)
        # Rendered size of every camera (the real R1 Lite streams 480x640). Smaller renders cut
        # rendering, JPEG and decoding costs where the policy's layout is small anyway.
        image_height = int(
            p("image_height", 480, ParameterDescriptor(description="camera image height (px)")).value
        )
        image_width = int(
            p("image_width", 640, ParameterDescriptor(description="camera image width (px)")).value
        )
        self.time_scale = float(
            p(
                "time_scale",
                1.0,
                ParameterDescriptor(
                    description="simulated seconds per wall second (scripted teleop only; policies run at 1)"
                ),
            ).value
        )
        if not config_path:
            raise ValueError("parameter robot_config is empty: give a robot config YAML")
        if not self.time_scale > 0:
            raise ValueError(f"parameter time_scale must be positive, got {self.time_scale}")
        if self.time_scale != 1.0 and not self.scripted:
            # A policy's inference latency is wall-clock time: run faster and it looks slower.
            raise ValueError(
                f"parameter time_scale={self.time_scale:g} needs scripted_teleop: policy-driven episodes "
                "run in real time (inference latency is wall-clock time)"
            )
        for name, value in (
            ("camera_rate_hz", camera_rate_hz),
            ("joint_rate_hz", joint_rate_hz),
            ("image_height", image_height),
            ("image_width", image_width),
        ):
            if value <= 0:
                raise ValueError(f"parameter {name} must be positive, got {value}")
        self.config = load_robot_config(config_path)
        self.spec = self.config.robot
        self.env = TowelFoldEnv(
            self.spec,
            self.config.cameras.keys,
            SimParams(image_height=image_height, image_width=image_width),
        )
        self.lock = threading.Lock()  # the environment; callbacks run on several executor threads
        topics = self.config.topics

        self.camera_pubs = {
            key: self.create_publisher(CompressedImage, topics.cameras[key].topic, qos_profile_sensor_data)
            for key in self.config.cameras.keys
        }
        raw = [k for k, cam in topics.cameras.items() if cam.transport != "compressed"]
        if raw:
            raise ValueError(f"simulated R1 Lite publishes JPEG only; cameras {raw} are configured as raw")
        self.feedback_pubs = {
            group: self.create_publisher(JointState, topic, FEEDBACK_QOS)
            for group, topic in topics.feedback.items()
            if group in self.env.trackers
        }
        for group in self.spec.action_groups:
            self.create_subscription(
                JointState, topics.command[group], lambda msg, g=group: self._on_command(g, msg), COMMAND_QOS
            )
        self.success_pub = self.create_publisher(Bool, "~/task_success", 10)
        self.progress_pub = self.create_publisher(Float32, "~/progress", 10)
        self.episode_pub = self.create_publisher(String, "~/episode", 10)

        self.teleop_pubs = {}
        if self.scripted:
            self.teleop_pubs = {
                g: self.create_publisher(JointState, topics.command[g], TELEOP_QOS)
                for g in self.spec.action_groups
            }
            self.create_timer(self._period(self.config.control.rate_hz), self._on_teleop)
        self.start_client = self.stop_client = None
        if self.recorder_name:
            self.start_client = self.create_client(StartEpisode, f"{self.recorder_name}/start_episode")
            self.stop_client = self.create_client(StopEpisode, f"{self.recorder_name}/stop_episode")

        self.results: list[EpisodeResult] = []
        self.commands_received = dict.fromkeys(self.spec.action_groups, 0)
        self.commands_rejected = 0
        self.finished = False  # all requested scripted episodes are done
        self._episode_index = -1
        self.recording_episode = ""
        self._pending = None  # an in-flight recorder service call
        self._ending = False  # an episode ended; waiting for the recorder before the next starts
        self._start_episode(self.seed)

        self._last_step = time.monotonic()
        # The simulated clock (time_scale != 1) every stamp comes from: ROS time at start + time_scale
        # x elapsed wall time, except that it waits for a camera frame that is due (the executor was
        # stalled): the simulation slows down instead of losing frames. Frames are stamped on the
        # camera's grid, the first one period after start, as the camera timer's first tick.
        self._clock_lock = threading.Lock()
        self._frame_ns = int(round(1e9 / camera_rate_hz))
        self._base_sim_ns = self._last_sim_ns = self.get_clock().now().nanoseconds
        self._base_wall_ns = time.monotonic_ns()
        self._next_frame_ns = self._base_sim_ns + self._frame_ns
        # Rendering and JPEG encoding (tens of ms) must not delay joint feedback or physics: each
        # output has its own callback group; the environment itself is guarded by one lock.
        self.create_timer(self._period(camera_rate_hz), self._on_cameras, MutuallyExclusiveCallbackGroup())
        self.create_timer(self._period(physics_rate_hz), self._on_physics)
        self.create_timer(self._period(joint_rate_hz), self._on_joints, MutuallyExclusiveCallbackGroup())
        self.create_timer(self._period(2.0), self._publish_score)
        mode = "scripted teleop" if self.scripted else "following /motion_target"
        if self.time_scale != 1.0:
            mode += f" at {self.time_scale:g}x real time"
        self.get_logger().info(
            f"simulated {self.spec.name}: {mode}, seed {self.seed}, cameras {image_height}x{image_width} "
            f"at {camera_rate_hz:g} Hz, "
            f"joints {joint_rate_hz:g} Hz, config {config_path}"
        )

    # -- simulated clock ------------------------------------------------------------------------------
    def _period(self, rate_hz: float) -> float:
        """Wall-clock timer period of an output at rate_hz simulated."""
        return 1.0 / (rate_hz * self.time_scale)

    def sim_now(self) -> Time:
        """The simulated clock every published stamp comes from (the node's clock at 1x)."""
        if self.time_scale == 1.0:
            return self.get_clock().now()
        with self._clock_lock:
            wall = time.monotonic_ns()
            now = self._base_sim_ns + int((wall - self._base_wall_ns) * self.time_scale)
            hold = self._next_frame_ns + self._frame_ns // 2  # slack for the camera timer's latency
            if now > hold:  # a frame is overdue: the clock waits for it (monotonic: re-based here)
                now = self._base_sim_ns = hold
                self._base_wall_ns = wall
            return Time(nanoseconds=now, clock_type=self.get_clock().clock_type)

    def _frame_stamp(self):
        """The stamp of the camera frame to publish now, or None when none is due yet."""
        if self.time_scale == 1.0:
            return self.get_clock().now().to_msg()
        now = self.sim_now().nanoseconds
        with self._clock_lock:
            due = self._next_frame_ns
            if now < due - self._frame_ns // 4:  # the timer ticked early on the simulated grid
                return None
            self._next_frame_ns = due + self._frame_ns
        return Time(nanoseconds=due, clock_type=self.get_clock().clock_type).to_msg()

    # -- episodes -------------------------------------------------------------------------------------
    def _start_episode(self, seed: int) -> None:
        with self.lock:
            self.env.reset(seed)
        self._episode_index += 1
        self._episode_start = self.env.time
        self.first_success_s: float | None = None
        self._last_success = False
        self._folder = ScriptedFolder(self.env) if self.scripted else None
        self._stop_requested = False
        self._awaiting_recorder = self.start_client is not None
        pose = self.env.towel.pose
        self.get_logger().info(
            f"episode {self._episode_index}: seed {seed}, towel at x={pose.x:.3f} y={pose.y:.3f} "
            f"yaw={np.degrees(pose.yaw):.1f} deg"
        )
        if self.start_client is not None:
            self._call(
                self.start_client, StartEpisode.Request(instruction=self.instruction), self._on_started
            )

    def end_episode(self) -> None:
        if self._ending or self.finished:  # already ended (waiting for the recorder, or all done)
            return
        elapsed = self.env.time - self._episode_start
        result = EpisodeResult(
            index=self._episode_index,
            seed=self.env.seed,
            success=self.first_success_s is not None,
            progress=self.env.progress,
            duration_s=elapsed,
            first_success_s=self.first_success_s,
        )
        self.results.append(result)
        self.get_logger().info(
            f"episode {result.index} (seed {result.seed}) ended after {elapsed:.1f} s: "
            f"{'SUCCESS' if result.success else 'no success'}, progress {result.progress:.2f}"
        )
        more = self.episodes <= 0 or len(self.results) < self.episodes
        if self.stop_client is not None and self.recording_episode:
            # The next episode starts once the recorder has answered the stop: the two services
            # are separate entities, which an executor may serve in either order.
            self._ending = True
            request = StopEpisode.Request(save=True, task_success=result.success)
            self._call(self.stop_client, request, lambda r, res=result: self._on_stopped(r, res, more))
        else:
            self._next_episode(more)

    def _next_episode(self, more: bool) -> None:
        self._ending = False
        if more:
            self._start_episode(self.env.seed + 1)
        else:
            self.finished = True

    def _call(self, client, request, done) -> None:
        """Call a recorder service once it is available (polled on a timer: the executor, which
        may be serving the recorder itself, is never blocked), for at most recorder_wait_s."""

        def send() -> None:
            future = client.call_async(request)
            future.add_done_callback(lambda f: done(f.result()))

        if client.service_is_ready():
            send()
            return
        self.get_logger().info(
            f"waiting for the recorder service {client.srv_name} (up to {self.recorder_wait_s:g} s)"
        )
        deadline = time.monotonic() + self.recorder_wait_s
        timer = None

        def poll() -> None:
            if client.service_is_ready():
                timer.cancel()
                send()
            elif time.monotonic() >= deadline:
                timer.cancel()
                self.get_logger().error(
                    f"recorder service {client.srv_name} did not come up within {self.recorder_wait_s:g} s "
                    "(parameter recorder_wait_s); this episode is not recorded"
                )
                done(None)

        timer = self.create_timer(0.1, poll)

    def _on_started(self, response) -> None:
        self._awaiting_recorder = False
        if response is not None and response.success:
            self.recording_episode = response.episode
            with self.lock:  # the operator starts now that the recording runs
                self._episode_start = self.env.time
        elif response is not None:
            self.get_logger().error(f"recorder refused to start: {response.message}")

    def _on_stopped(self, response, result: EpisodeResult, more: bool) -> None:
        if response is not None and response.success:
            result.recorded = response.episode
        else:
            self.get_logger().error(f"recorder refused to stop: {getattr(response, 'message', '')}")
        self.recording_episode = ""
        self._next_episode(more)

    # -- commands -------------------------------------------------------------------------------------
    def _on_command(self, group: str, msg: JointState) -> None:
        if self.finished:
            return
        try:
            if group.startswith("gripper"):
                if len(msg.position) < 1:
                    raise ValueError(f"joint group {group!r}: gripper command has no position[0]")
                with self.lock:
                    self.env.command(group, [msg.position[0]])
            else:
                with self.lock:
                    self.env.command(group, list(msg.position), list(msg.velocity))
        except ValueError as error:
            self.commands_rejected += 1
            topic = self.config.topics.command[group]
            self.get_logger().warning(f"{topic}: command ignored: {error}", throttle_duration_sec=2.0)
            return
        self.commands_received[group] += 1

    def _on_teleop(self) -> None:
        if self.finished or self._ending or self._folder is None:
            return
        t = self.env.time - self._episode_start - self.start_delay_s
        if self._awaiting_recorder:
            t = 0.0  # holding the start pose until the recording has started
        elif t > self._folder.duration + 0.5:
            if not self._stop_requested:
                self._stop_requested = True
                self.end_episode()
            return
        action = self._folder.action(max(t, 0.0))
        stamp = self.sim_now().to_msg()
        for group, values in self.spec.split(action, self.spec.action_groups).items():
            msg = JointState()
            msg.header.stamp = stamp
            msg.name = list(self.spec.group(group).joints)
            msg.position = [float(v) for v in values]
            if group.startswith("arm"):  # the arms' command topics carry per-joint velocity caps
                msg.velocity = [float(v) for v in self.spec.group(group).max_velocity]
            self.teleop_pubs[group].publish(msg)

    # -- simulation and outputs -----------------------------------------------------------------------
    def _on_physics(self) -> None:
        if self.time_scale == 1.0:
            now = time.monotonic()
            # Bounded so a stalled process resumes smoothly instead of jumping.
            elapsed = min(now - self._last_step, 0.1)
            self._last_step = now
        else:  # in step with the simulated clock (which itself waits out stalls)
            now_ns = self.sim_now().nanoseconds
            elapsed = min((now_ns - self._last_sim_ns) / 1e9, 1.0)
            self._last_sim_ns = now_ns
        if elapsed <= 0 or self.finished or self._ending:
            return
        with self.lock:
            self.env.step(elapsed)
            success = self.env.success
        if success and self.first_success_s is None:
            self.first_success_s = self.env.time - self._episode_start
            self.get_logger().info(f"towel folded after {self.first_success_s:.1f} s")
        if success != self._last_success:
            self._last_success = success
            self._publish_score()
        if (
            not self.scripted
            and self.episode_timeout_s > 0
            and self.env.time - self._episode_start >= self.episode_timeout_s
        ):
            self.end_episode()

    def _on_cameras(self) -> None:
        with self.lock:
            stamp = self._frame_stamp()
            if stamp is None:
                return
            images = self.env.render()
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        for key, pub in self.camera_pubs.items():
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(images[key], cv2.COLOR_RGB2BGR), params)
            if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
                self.get_logger().error(f"JPEG encoding failed for camera {key}")
                continue
            msg = CompressedImage()
            msg.header.stamp = stamp
            msg.header.frame_id = key
            msg.format = JPEG_FORMAT
            msg.data = jpeg.tobytes()
            pub.publish(msg)

    def _on_joints(self) -> None:
        with self.lock:
            stamp = self.sim_now().to_msg()
            state = {g: (self.env.positions(g), self.env.velocities(g)) for g in self.feedback_pubs}
        for group, pub in self.feedback_pubs.items():
            msg = JointState()
            msg.header.stamp = stamp
            msg.name = list(self.spec.group(group).joints)
            msg.position = state[group][0].tolist()
            msg.velocity = state[group][1].tolist()
            pub.publish(msg)

    def _publish_score(self) -> None:
        with self.lock:
            self._publish_score_locked()

    def _publish_score_locked(self) -> None:
        self.success_pub.publish(Bool(data=bool(self.env.success)))
        self.progress_pub.publish(Float32(data=float(self.env.progress)))
        pose = self.env.towel.pose
        info = {
            "episode": self._episode_index,
            "seed": self.env.seed,
            "towel": {"x": pose.x, "y": pose.y, "yaw": pose.yaw},
            "time_s": round(self.env.time - self._episode_start, 3),
            "success": bool(self.env.success),
            "succeeded": self.first_success_s is not None,
            "progress": round(self.env.progress, 4),
            "fold_error_m": {k: round(v, 4) for k, v in self.env.towel.fold_error().items()},
        }
        self.episode_pub.publish(String(data=json.dumps(info)))


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = SimRobotNode()
        spin_until_shutdown(node)
    except KeyboardInterrupt:
        pass  # Ctrl-C during start-up
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
