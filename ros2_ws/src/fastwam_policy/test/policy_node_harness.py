"""Test harness for the policy node: a tiny checkpoint, a test robot config, the node in its own
process, and a fake R1 Lite (cameras + joint feedback publishers, command/monitor subscribers) in
the test process. Used by test_policy_node*.py (loaded by path: the test dir is not a package).

Each test module runs on its own ROS_DOMAIN_ID (derived from the pid and a per-module offset) so
that tests of other agents on this machine never see its traffic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory

from fastwam.camera import CameraLayout, CameraView
from fastwam.robot_config import RobotConfig, load_robot_config
from fastwam_msgs.msg import ActionChunk, PolicyStatus
from fastwam_msgs.srv import SetInstruction, SetMotionEnabled

R1_LITE_YAML = Path(__file__).resolve().parents[1] / "config" / "r1_lite.yaml"
# A small composite keeps the tiny model's VAE cheap on CPU; topics and joints stay the R1 Lite's.
TEST_LAYOUT = CameraLayout(
    ((CameraView("head", 64, 64),), (CameraView("wrist_left", 32, 32), CameraView("wrist_right", 32, 32)))
)
FRAME_SHAPE = (120, 160)  # published camera frames (decoded and resized by the node)
BEST_EFFORT = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
RELIABLE = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


def domain_id(offset: int) -> int:
    """A ROS domain for one test module: distinct per process and module, in the safe 1..200 range."""
    return 1 + (os.getpid() * 7 + offset * 31) % 200


def write_test_setup(
    tmp: Path,
    raw_cameras: tuple[str, ...] = (),
    freshness: dict | None = None,
    horizon: int = 32,
    **config_overrides,
) -> tuple[Path, Path, RobotConfig]:
    """A robot config (R1 Lite with TEST_LAYOUT) and a matching random tiny checkpoint (model
    config fields overridden by ``config_overrides``, e.g. ``num_inference_steps=10``)."""
    from fastwam.checkpoint import create_random_checkpoint

    data = yaml.safe_load(R1_LITE_YAML.read_text())
    data["cameras"] = TEST_LAYOUT.to_dict()
    for key in raw_cameras:  # sensor_msgs/Image instead of JPEG
        data["topics"]["cameras"][key] = {"topic": f"/test/{key}/image_raw", "transport": "raw"}
    if freshness:
        data["freshness"].update(freshness)
    config_path = tmp / "robot.yaml"
    config_path.write_text(yaml.safe_dump(data))
    config = load_robot_config(config_path)
    checkpoint = create_random_checkpoint(
        tmp / "checkpoint",
        "tiny",
        config.cameras,
        config.robot,
        control_fps=config.control.rate_hz,
        action_horizon=horizon,
        **config_overrides,
    )
    return Path(checkpoint), config_path, config


def start_node(checkpoint: Path, config_path: Path, domain: int, log: Path, **params) -> subprocess.Popen:
    """The policy node as its own process (python -m fastwam_policy.policy_node)."""
    args = [f"checkpoint:={checkpoint}", f"robot_config:={config_path}", "device:=cpu"]
    args += [f"{k}:={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items()]
    cmd = [sys.executable, "-m", "fastwam_policy.policy_node", "--ros-args"]
    for a in args:
        cmd += ["-p", a]
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Spinner:
    """Spins an executor on a thread and stops it cleanly.

    rclpy's Executor.shutdown() does not wait for callbacks still running on a multi-threaded
    executor's pool (they then fail on the destroyed guard condition and print "exception was
    never retrieved" at exit), so spinning stops first and in-flight callbacks get time to end.
    """

    def __init__(self, executor):
        self.executor = executor
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running and self.executor.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def stop(self) -> None:
        self._running = False
        self._thread.join(timeout=5.0)
        time.sleep(0.3)  # callbacks already handed to the pool finish (all are short)
        self.executor.shutdown(timeout_sec=2.0)


class FakeRobot:
    """Cameras + joint feedback at R1 Lite rates, and a record of everything the node publishes.

    Per-stream faults are set on `camera_mode[key]` / `joint_mode[group]`:
    camera: "ok", "off" (not published), "late" (stamps `late_s` in the past), "bad_encoding",
    "bad_step", "empty", "truncated"; joints: "ok", "off", "short", "nan".
    """

    def __init__(self, config: RobotConfig, domain: int, camera_hz: float = 15.0, joint_hz: float = 30.0):
        self.config = config
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = Node("fake_r1_lite", context=self.context)
        self.lock = threading.Lock()
        self.camera_mode = dict.fromkeys(config.cameras.keys, "ok")
        self.joint_mode = dict.fromkeys(config.topics.feedback, "ok")
        self.late_s = 0.25
        rng = np.random.default_rng(0)
        self.frames = {
            k: rng.integers(0, 256, (*FRAME_SHAPE, 3), dtype=np.uint8) for k in config.cameras.keys
        }
        self.jpegs = {k: cv2.imencode(".jpg", f)[1].tobytes() for k, f in self.frames.items()}
        self.positions = {
            g: (np.array(config.robot.group(g).lower) + config.robot.group(g).upper) / 2
            for g in config.topics.feedback
        }
        self.camera_pubs = {}
        for key, cam in config.topics.cameras.items():
            msg_type = CompressedImage if cam.transport == "compressed" else Image
            self.camera_pubs[key] = (
                self.node.create_publisher(msg_type, cam.topic, BEST_EFFORT),
                cam.transport,
            )
        self.joint_pubs = {
            g: self.node.create_publisher(JointState, t, BEST_EFFORT)
            for g, t in config.topics.feedback.items()
        }
        self.estop_pub = self.node.create_publisher(Bool, "/fastwam_policy/estop", RELIABLE)
        # Records: topic -> [(receive time, msg)]
        self.received: dict[str, list] = defaultdict(list)
        for group, topic in config.topics.command.items():
            self._record(JointState, topic, f"command/{group}")
        self._record(JointTrajectory, "/fastwam_policy/joint_trajectory", "trajectory")
        self._record(ActionChunk, "/fastwam_policy/action_chunk", "chunk")
        self._record(PolicyStatus, "/fastwam_policy/status", "status")
        self._record(String, "/fastwam_policy/status_text", "status_text")
        self._record(Image, "/fastwam_policy/composite_image", "composite", qos=QoSProfile(depth=1))
        self._record(Image, "/fastwam_policy/chunk_plot", "plot", qos=QoSProfile(depth=1))
        self.motion_client = self.node.create_client(SetMotionEnabled, "/fastwam_policy/set_motion_enabled")
        self.instruction_client = self.node.create_client(SetInstruction, "/fastwam_policy/set_instruction")
        # Publishing runs on plain threads, not executor timers: on a loaded machine rclpy's executor
        # falls behind, and the streams must keep their rate for the freshness checks to mean much.
        self._publishing = True
        self._publishers = [
            threading.Thread(target=self._loop, args=(camera_hz, self._publish_cameras), daemon=True),
            threading.Thread(target=self._loop, args=(joint_hz, self._publish_joints), daemon=True),
        ]
        for thread in self._publishers:
            thread.start()
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spinner = Spinner(self.executor)

    # ---- publishing --------------------------------------------------------------------------
    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _stamp(self, t: float):
        from builtin_interfaces.msg import Time

        ns = int(t * 1e9)
        return Time(sec=ns // 10**9, nanosec=ns % 10**9)

    def _loop(self, rate_hz: float, publish) -> None:
        period = 1.0 / rate_hz
        next_time = time.monotonic()
        while self._publishing and self.context.ok():
            publish()
            next_time += period
            delay = next_time - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_time = time.monotonic()  # fell behind: do not burst to catch up

    def _publish_cameras(self) -> None:
        now = self.now()
        for key, (pub, transport) in self.camera_pubs.items():
            mode = self.camera_mode[key]
            if mode == "off":
                continue
            stamp = now - self.late_s if mode == "late" else now
            if transport == "compressed":
                data = self.jpegs[key][:-200] if mode == "truncated" else self.jpegs[key]
                msg = CompressedImage(format="jpeg", data=data)
            else:
                frame = self.frames[key]
                msg = Image(height=frame.shape[0], width=frame.shape[1], encoding="rgb8")
                msg.step = frame.shape[1] * 3
                msg.data = frame.tobytes()
                if mode == "bad_encoding":
                    msg.encoding = "weird16"
                elif mode == "bad_step":
                    msg.step = frame.shape[1] * 3 - 3
                elif mode == "empty":
                    msg.height, msg.width, msg.step, msg.data = 0, 0, 0, b""
            msg.header.stamp = self._stamp(stamp)
            msg.header.frame_id = key
            pub.publish(msg)

    def _publish_joints(self) -> None:
        stamp = self._stamp(self.now())
        for group, pub in self.joint_pubs.items():
            mode = self.joint_mode[group]
            if mode == "off":
                continue
            values = self.positions[group].copy()
            if mode == "short":
                values = values[:-1] if len(values) > 1 else np.zeros(0)
            elif mode == "nan":
                values[0] = np.nan
            msg = JointState(position=values.tolist())  # names empty, as on the R1 Lite
            msg.header.stamp = stamp
            pub.publish(msg)

    def _record(self, msg_type, topic: str, key: str, qos: QoSProfile = RELIABLE) -> None:
        def callback(msg):
            t = self.now()
            with self.lock:
                self.received[key].append((t, msg))

        self.node.create_subscription(msg_type, topic, callback, qos)

    # ---- queries -----------------------------------------------------------------------------
    def messages(self, key: str, since: float = 0.0) -> list:
        with self.lock:
            return [(t, m) for t, m in self.received[key] if t >= since]

    def commands(self, since: float = 0.0) -> list:
        with self.lock:
            return [
                (t, m)
                for k, v in self.received.items()
                if k.startswith("command/")
                for t, m in v
                if t >= since
            ]

    def wait_for(self, predicate, timeout: float, what: str, poll: float = 0.02):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(poll)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what}; last status: {self.last_status()}"
        )

    def last_status(self):
        with self.lock:
            statuses = self.received["status"]
            return statuses[-1][1] if statuses else None

    def wait_state(self, state: int, timeout: float = 10.0, reason: str | None = None, since: float = 0.0):
        """The first status at or after `since` in `state` (and whose reason contains `reason`)."""

        def match():
            for t, msg in self.messages("status", since):
                if msg.state == state and (reason is None or reason in msg.reason):
                    return t, msg
            return None

        return self.wait_for(match, timeout, f"state {state} (reason containing {reason!r})")

    def call(self, client, request, timeout: float = 10.0):
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        future = client.call_async(request)
        self.wait_for(future.done, timeout, f"response of {client.srv_name}")
        return future.result()

    def set_motion(self, enabled: bool):
        return self.call(self.motion_client, SetMotionEnabled.Request(enabled=enabled))

    def estop(self, on: bool) -> float:
        t = self.now()
        self.estop_pub.publish(Bool(data=on))
        return t

    def close(self) -> None:
        self._publishing = False
        for thread in self._publishers:
            thread.join(timeout=2.0)
        self.spinner.stop()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
