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

Episodes: the node starts one with towel seed `seed`. `~/reset_episode` (fastwam_msgs/ResetEpisode)
starts a new one with the seed asked for, as a person resetting the scene would; `end_episode()`
(or `episode_timeout_s` of simulated time, for policy-driven episodes) scores the running episode
into `results` and holds the robot until the next reset.

Simulated hardware only, as ros2_control's demos keep it: no operator or controller lives here.
The scripted operator is its own node (fastwam_sim.nodes.scripted_teleop) that commands
/motion_target like a human with a teleop rig and follows this node's clock on /clock
(rosgraph_msgs/Clock, every physics step: the clock of every stamp published here).
"""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import Bool, Float32, String

from fastwam.robot_config import load_robot_config
from fastwam.shipped_configs import default_robot_config
from fastwam_msgs.srv import ResetEpisode
from fastwam_policy.spin import run_node
from fastwam_sim import SimParams, TowelFoldEnv
from fastwam_sim.episode_result import EpisodeResult

# Commands are accepted from RELIABLE and BEST_EFFORT publishers alike.
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
FEEDBACK_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
JPEG_FORMAT = "rgb8; jpeg compressed bgr8"  # what image_transport's compressed plugin writes


class SimRobotNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sim_robot", **kwargs)
        p = self._declare
        config_path = str(
            p("robot_config", default_robot_config(), "robot config YAML: joint groups, topics, cameras")
        )
        self.seed = int(p("seed", 0, "towel start pose seed of the first episode"))
        camera_rate_hz = float(p("camera_rate_hz", 15.0, "camera frame rate (Hz, simulated time)"))
        joint_rate_hz = float(p("joint_rate_hz", 50.0, "joint feedback rate (Hz, simulated time)"))
        physics_rate_hz = float(p("physics_rate_hz", 60.0, "physics steps per second (simulated time)"))
        self.jpeg_quality = int(p("jpeg_quality", 90, "JPEG quality of the camera images (1-100)"))
        self.episode_timeout_s = float(
            p(
                "episode_timeout_s",
                0.0,
                "simulated seconds after which an episode ends and is scored (policy-driven episodes); 0: never",
            )
        )
        # Rendered size of every camera (the real R1 Lite streams 480x640). Smaller renders cut
        # rendering, JPEG and decoding costs where the policy's layout is small anyway.
        image_height = int(p("image_height", 480, "camera image height (px)"))
        image_width = int(p("image_width", 640, "camera image width (px)"))
        self.time_scale = float(
            p(
                "time_scale",
                1.0,
                "simulated seconds per wall second; above 1 only for operators that follow /clock (the "
                "scripted teleop): a policy's inference latency is wall-clock time",
            )
        )
        if not config_path:
            raise ValueError("parameter robot_config is empty: give a robot config YAML")
        if not self.time_scale > 0:
            raise ValueError(f"parameter time_scale must be positive, got {self.time_scale}")
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
        # The environment: under a multi-threaded executor (a component container) the camera and
        # joint callbacks, each in its own callback group, run beside physics and commands.
        self.lock = threading.Lock()
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
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.create_service(ResetEpisode, "~/reset_episode", self._on_reset)

        self.results: list[EpisodeResult] = []
        self.commands_received = dict.fromkeys(self.spec.action_groups, 0)
        self.commands_rejected = 0
        self.finished = False  # the episode ended (scored); the robot holds until the next reset
        self._episode_index = -1
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
        mode = "following /motion_target"
        if self.time_scale != 1.0:
            mode += f" at {self.time_scale:g}x real time"
        self.get_logger().info(
            f"simulated {self.spec.name}: {mode}, seed {self.seed}, cameras {image_height}x{image_width} "
            f"at {camera_rate_hz:g} Hz, "
            f"joints {joint_rate_hz:g} Hz, config {config_path}"
        )

    def _declare(self, name: str, default, description: str):
        """Declare a parameter with its description, read-only: every one is read once, at start-up."""
        return self.declare_parameter(
            name, default, ParameterDescriptor(description=description, read_only=True)
        ).value

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
            self.completion_s: float | None = None
            self._last_success = False
            self.finished = False
        pose = self.env.towel.pose
        self.get_logger().info(
            f"episode {self._episode_index}: seed {seed}, towel at x={pose.x:.3f} y={pose.y:.3f} "
            f"yaw={np.degrees(pose.yaw):.1f} deg"
        )

    def _on_reset(self, request, response):
        self._start_episode(int(request.seed))
        with self.lock:
            info = self._episode_info()
        self.episode_pub.publish(String(data=json.dumps(info)))
        response.success = True
        response.message = f"episode {info['episode']}: seed {info['seed']}"
        response.episode = json.dumps(info)
        return response

    def end_episode(self) -> None:
        """Score the running episode into `results`; the robot holds until the next reset."""
        if self.finished:
            return
        elapsed = self.env.time - self._episode_start
        result = EpisodeResult(
            index=self._episode_index,
            seed=self.env.seed,
            success=self.completion_s is not None,
            progress=self.env.progress,
            duration_s=elapsed,
            completion_s=self.completion_s,
        )
        self.results.append(result)
        self.finished = True
        self.get_logger().info(
            f"episode {result.index} (seed {result.seed}) ended after {elapsed:.1f} s: "
            f"{'SUCCESS' if result.success else 'no success'}, progress {result.progress:.2f}"
        )

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
        self.clock_pub.publish(Clock(clock=self.sim_now().to_msg()))
        if elapsed <= 0 or self.finished:
            return
        with self.lock:
            self.env.step(elapsed)
            success = self.env.success
        if success and self.completion_s is None:
            self.completion_s = self.env.time - self._episode_start
            self.get_logger().info(f"towel folded after {self.completion_s:.1f} s")
        if success != self._last_success:
            self._last_success = success
            self._publish_score()
        if self.episode_timeout_s > 0 and self.env.time - self._episode_start >= self.episode_timeout_s:
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
        self.episode_pub.publish(String(data=json.dumps(self._episode_info())))

    def _episode_info(self) -> dict:
        pose = self.env.towel.pose
        return {
            "episode": self._episode_index,
            "seed": self.env.seed,
            "towel": {"x": pose.x, "y": pose.y, "yaw": pose.yaw},
            "time_s": round(self.env.time - self._episode_start, 3),
            "success": bool(self.env.success),
            "succeeded": self.completion_s is not None,
            "progress": round(self.env.progress, 4),
            "fold_error_m": {k: round(v, 4) for k, v in self.env.towel.fold_error().items()},
            "completion_s": None if self.completion_s is None else round(self.completion_s, 3),
        }


def main(args=None) -> None:
    run_node(SimRobotNode, args)


if __name__ == "__main__":
    main()
