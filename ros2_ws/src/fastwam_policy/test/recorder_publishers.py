"""Publishes the robot config's camera, feedback and command topics like the R1 Lite does.

Run as a separate process by test_recorder_node.py and benchmarks/recorder.py. Content is a pure
function of (topic index, sequence number) and stamp, so the reader can check every message:
    header.frame_id  "<sequence number>" (1, 2, ... per topic)
    cameras          JPEG of `camera_image(topic_index, seq, h, w)`
    joints           position = joint_value(topic_index, stamp seconds - t_base, n)
Cameras and feedback are BEST_EFFORT (as on the robot), commands RELIABLE (as the teleop/policy).
Prints READY once every topic has a matched subscriber (and after warm-up samples), waits for a line on stdin, publishes for
--seconds, then prints DONE {"topic": count, ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import cv2
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, JointState

from fastwam.robot_config import load_robot_config


def camera_image(topic_index: int, seq: int, height: int, width: int) -> np.ndarray:
    """BGR uint8 [h, w, 3]: 8x8 blocks (JPEG-friendly) seeded by topic and sequence number."""
    rng = np.random.default_rng(topic_index * 1_000_003 + seq)
    blocks = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)


def camera_jpeg(topic_index: int, seq: int, height: int, width: int) -> bytes:
    return cv2.imencode(
        ".jpg", camera_image(topic_index, seq, height, width), [cv2.IMWRITE_JPEG_QUALITY, 90]
    )[1].tobytes()


def joint_value(topic_index: int, t_s: float, n: int) -> np.ndarray:
    """Linear in time: interpolation at any stamp reproduces it exactly."""
    return topic_index + 0.1 * np.asarray(t_s)[..., None] + 0.01 * np.arange(n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--camera-hz", type=float, default=20.0)
    parser.add_argument("--feedback-hz", type=float, default=100.0)
    parser.add_argument("--command-hz", type=float, default=100.0)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--t-base", type=float, default=0.0)
    parser.add_argument("--jpeg-pool", type=int, default=0, help="reuse N JPEGs per camera (seq % N)")
    parser.add_argument("--rounds", type=int, default=1, help="publish phases, each started by a stdin line")
    args = parser.parse_args()

    config = load_robot_config(args.config)
    rclpy.init()
    node = rclpy.create_node("recorder_test_publishers")
    best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    streams = []  # (topic, publisher, kind, rate, n_joints)
    for cam in config.topics.cameras.values():
        streams.append(
            [
                cam.topic,
                node.create_publisher(CompressedImage, cam.topic, best_effort),
                "camera",
                args.camera_hz,
                0,
            ]
        )
    for group in config.robot.state_groups:
        topic = config.topics.feedback[group]
        n = len(config.robot.group(group).joints)
        streams.append(
            [topic, node.create_publisher(JointState, topic, best_effort), "joint", args.feedback_hz, n]
        )
    for group in config.robot.action_groups:
        topic = config.topics.command[group]
        n = len(config.robot.group(group).joints)
        streams.append(
            [topic, node.create_publisher(JointState, topic, reliable), "joint", args.command_hz, n]
        )
    jpegs: dict[tuple[int, int], bytes] = {}  # with --jpeg-pool: encoding stays off the hot loop
    deadline = time.monotonic() + 60
    while any(s[1].get_subscription_count() == 0 for s in streams) and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    # Warm-up samples (frame_id "warmup", sent while the recorder is idle): a best-effort reader
    # loses samples sent before it has matched the writer, which is not what the test measures.
    for _ in range(3):
        for _topic, publisher, kind, _rate, n in streams:
            msg = CompressedImage(format="jpeg") if kind == "camera" else JointState(position=[0.0] * n)
            msg.header.frame_id = "warmup"
            publisher.publish(msg)
        time.sleep(0.05)
    time.sleep(0.5)
    print("READY", flush=True)
    counts = {s[0]: 0 for s in streams}
    for _ in range(args.rounds):
        if not sys.stdin.readline():
            break
        start = time.monotonic()
        due = [start] * len(streams)
        end = start + args.seconds
        while True:
            now = time.monotonic()
            if now >= end:
                break
            i = min(range(len(streams)), key=due.__getitem__)
            if due[i] > now:
                time.sleep(min(due[i] - now, 0.002))
                continue
            topic, publisher, kind, rate, n = streams[i]
            due[i] += 1.0 / rate
            counts[topic] += 1
            seq = counts[topic]
            stamp_ns = time.time_ns()
            if kind == "camera":
                msg = CompressedImage(format="jpeg")
                key = (i, seq % args.jpeg_pool if args.jpeg_pool else seq)
                if key not in jpegs:
                    jpegs[key] = camera_jpeg(i, key[1], args.height, args.width)
                msg.data = jpegs[key] if args.jpeg_pool else jpegs.pop(key)
            else:
                msg = JointState()
                msg.position = joint_value(i, stamp_ns / 1e9 - args.t_base, n).tolist()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            msg.header.frame_id = str(seq)
            publisher.publish(msg)
        print("DONE " + json.dumps(counts), flush=True)
    time.sleep(0.5)  # let reliable samples be acknowledged before the process goes
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
