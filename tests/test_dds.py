"""Two processes talk over real DDS: fastwam_msgs messages, a service call, and camera bandwidth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed: run through scripts/test.sh")
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from fastwam_msgs.msg import ActionChunk  # noqa: E402
from fastwam_msgs.srv import SetInstruction  # noqa: E402

from ros_session import own_node, spin_until, stop_process  # noqa: E402  (tests/conftest.py)

PEER = Path(__file__).with_name("dds_peer.py")
pytestmark = pytest.mark.ros


def start_peer(*args: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(PEER), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    line = process.stdout.readline()
    if line.strip() != "READY":
        process.kill()
        pytest.fail(f"DDS peer did not start: {line}{process.stdout.read()}")
    return process


def stop_peer(process: subprocess.Popen) -> str:
    return stop_process(process, signal.SIGTERM, timeout=10.0)


@pytest.fixture
def node():
    with own_node("dds_test") as session:
        yield session


def test_service_call_and_message_cross_processes(node):
    node, executor = node
    received: list[ActionChunk] = []
    node.create_subscription(ActionChunk, "/peer/action_chunk", received.append, 10)
    client = node.create_client(SetInstruction, "/peer/set_instruction")
    peer = start_peer("service")
    try:
        assert spin_until(executor, client.service_is_ready, 20.0), "service never appeared"
        assert spin_until(executor, lambda: node.count_publishers("/peer/action_chunk") > 0, 20.0)

        future = client.call_async(SetInstruction.Request(instruction="fold the towel in half"))
        assert spin_until(executor, future.done, 10.0), "service call timed out"
        assert future.result().success, future.result().message
        assert spin_until(executor, lambda: len(received) == 1, 10.0), "ActionChunk never arrived"
        chunk = received[0]
        assert chunk.instruction == "fold the towel in half"
        assert chunk.trajectory.joint_names == ["j1", "j2"]
        assert len(chunk.trajectory.points) == 32
        assert chunk.trajectory.points[31].positions[1] == pytest.approx(-3.1)

        # The peer validates too: a rejected request comes back as such, not as a crash.
        future = client.call_async(SetInstruction.Request(instruction="   "))
        assert spin_until(executor, future.done, 10.0)
        assert not future.result().success and "empty" in future.result().message
    finally:
        stop_peer(peer)


@pytest.mark.slow
def test_three_camera_streams_at_30hz_cross_processes(node):
    """Three 480x640 rgb8 streams at 30 Hz reach another process with >= 95 % of frames.

    This only holds with the large shared-memory segment of fastwam_bringup/config/fastdds_shm.xml,
    which scripts/env.sh exports as the default Fast DDS profile.
    """
    profile = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "")
    assert profile.endswith("fastdds_shm.xml"), f"Fast DDS profile not in effect: {profile!r}"
    node, executor = node
    frames = 150
    seen: dict[str, set[int]] = {}
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    for topic in ("/peer/camera_head", "/peer/camera_wrist_left", "/peer/camera_wrist_right"):
        seen[topic] = set()

        def record(msg: Image, topic=topic) -> None:
            assert msg.width == 640 and msg.height == 480 and len(msg.data) == 640 * 480 * 3
            seen[topic].add(int(msg.header.frame_id))

        node.create_subscription(Image, topic, record, qos)
    peer = start_peer("cameras", "--rate", "30", "--frames", str(frames))
    try:
        finished = spin_until(executor, lambda: peer.poll() is not None, 60.0)
        # Drain what is still in flight.
        spin_until(executor, lambda: False, 0.5)
    finally:
        output = stop_peer(peer)
    assert finished and peer.returncode == 0, output
    for topic, frame_ids in seen.items():
        delivered = len(frame_ids) / frames
        assert delivered >= 0.95, f"{topic}: {len(frame_ids)}/{frames} frames delivered ({delivered:.0%})"
