"""The other process in the cross-process DDS tests (tests/test_dds.py).

Modes:
  service    offers fastwam_msgs/SetInstruction on /peer/set_instruction and, for every accepted
             instruction, publishes a fastwam_msgs/ActionChunk carrying it on /peer/action_chunk.
  cameras    publishes three 480x640 rgb8 sensor_msgs/Image streams at --rate Hz for --frames
             frames each, once a subscriber is matched on every topic; frame_id = frame number.
Prints READY when its entities exist, then DONE when finished (cameras mode).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from trajectory_msgs.msg import JointTrajectoryPoint

from fastwam_msgs.msg import ActionChunk
from fastwam_msgs.srv import SetInstruction

CAMERA_TOPICS = ("/peer/camera_head", "/peer/camera_wrist_left", "/peer/camera_wrist_right")


def serve(node) -> None:
    publisher = node.create_publisher(ActionChunk, "/peer/action_chunk", 10)
    sequence = 0

    def handle(request, response):
        nonlocal sequence
        if not request.instruction.strip():
            response.success, response.message = False, "instruction is empty"
            return response
        sequence += 1
        chunk = ActionChunk(instruction=request.instruction, sequence=sequence, total_ms=12.5)
        chunk.header.stamp = node.get_clock().now().to_msg()
        chunk.trajectory.joint_names = ["j1", "j2"]
        chunk.trajectory.points = [JointTrajectoryPoint(positions=[0.1 * i, -0.1 * i]) for i in range(32)]
        publisher.publish(chunk)
        response.success, response.message = True, f"chunk {sequence}"
        return response

    node.create_service(SetInstruction, "/peer/set_instruction", handle)
    print("READY", flush=True)
    rclpy.spin(node)


def cameras(node, rate: float, frames: int) -> None:
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    publishers = [node.create_publisher(Image, topic, qos) for topic in CAMERA_TOPICS]
    print("READY", flush=True)
    deadline = time.monotonic() + 30.0
    while any(p.get_subscription_count() == 0 for p in publishers):
        if time.monotonic() > deadline:
            sys.exit("no subscriber matched within 30 s")
        time.sleep(0.05)
    time.sleep(0.5)  # let the subscriber's side of discovery settle too
    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    payload = pixels.tobytes()  # bytes, not an ndarray: 0.3 ms instead of 55 ms per message
    period = 1.0 / rate
    start = time.monotonic()
    for i in range(frames):
        for publisher in publishers:
            msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=payload)
            msg.header.frame_id = str(i)
            msg.header.stamp = node.get_clock().now().to_msg()
            publisher.publish(msg)
        time.sleep(max(0.0, start + (i + 1) * period - time.monotonic()))
    time.sleep(0.5)
    print("DONE", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["service", "cameras"])
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("dds_peer")
    try:
        if args.mode == "service":
            serve(node)
        else:
            cameras(node, args.rate, args.frames)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
