"""The recorder node in its own process, fed by a publisher process over real DDS.

Checks: every published message is in the episode bag with identical content, the converted
dataset's frames and actions are the published ones, SIGKILL mid-episode keeps earlier episodes and
the partial one recoverable, SIGTERM saves the running episode, SIGINT / SIGTERM close the bag in
bounded time, a bad output directory is refused at start-up, an empty episode is discarded, the
operator's key helper drives the services.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# A domain of our own: other agents run DDS tests on this machine at the same time.
os.environ["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 80)
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed: run through scripts/test.sh")
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402

from fastwam.data.bag import main as bag_main  # noqa: E402
from fastwam.data.episode_bag import find_incomplete_episodes, read_episode_json  # noqa: E402
from fastwam.data.lerobot import LeRobotDataset  # noqa: E402
from fastwam.robot_config import load_robot_config  # noqa: E402
from fastwam_msgs.msg import RecorderStatus  # noqa: E402
from fastwam_policy.teleop_keys import Command, KeyCommands, RecorderClient  # noqa: E402

from recorder_publishers import camera_image, joint_value  # noqa: E402
from ros_session import own_node, spin_until, stop_process  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "config" / "r1_lite.yaml"
PUBLISHERS = HERE / "recorder_publishers.py"

pytestmark = pytest.mark.ros
T_BASE = time.time()


def start_recorder(output_dir: Path, *params: str) -> subprocess.Popen:
    args = ["-p", f"robot_config:={CONFIG}", "-p", f"output_dir:={output_dir}", "-p", "flush_period_s:=0.2"]
    for p in params:
        args += ["-p", p]
    return subprocess.Popen(
        [sys.executable, "-m", "fastwam_policy.recorder_node", "--ros-args", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def start_publishers(seconds: float, rounds: int = 1) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(PUBLISHERS), "--config", str(CONFIG), "--seconds", str(seconds)]
        + ["--t-base", str(T_BASE), "--rounds", str(rounds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = process.stdout.readline()
    if line.strip() != "READY":
        process.kill()
        pytest.fail(f"publishers did not start: {line}{process.stdout.read()}")
    return process


def publish_round(publishers: subprocess.Popen) -> dict[str, int]:
    publishers.stdin.write("go\n")
    publishers.stdin.flush()
    line = publishers.stdout.readline()
    assert line.startswith("DONE "), line + publishers.stdout.read()
    return json.loads(line[5:])


def finish(process: subprocess.Popen, sig=signal.SIGINT) -> str:
    return stop_process(process, sig, timeout=15.0)


@pytest.fixture
def client():
    with own_node("recorder_test") as (node, executor):
        statuses: list[RecorderStatus] = []
        node.create_subscription(RecorderStatus, "/recorder/status", statuses.append, 50)
        yield RecorderClient(node, executor=executor), executor, statuses


def call(recorder: RecorderClient, command: Command) -> tuple[bool, str]:
    return recorder.execute(command, timeout_s=30.0)


def assert_ok(result: tuple[bool, str]) -> None:
    ok, message = result
    assert ok, f"recorder refused: {message}"


def wait_ready(recorder, executor, process) -> None:
    ok = spin_until(
        executor, lambda: recorder.start_client.service_is_ready() or process.poll() is not None, 30
    )
    if not ok or process.poll() is not None:
        pytest.fail(f"recorder did not come up: {finish(process)}")


def read_bag(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for connection, _, raw in reader.messages():
            out.setdefault(connection.topic, []).append(reader.deserialize(raw, connection.msgtype))
    return out


def check_contents(bag: dict[str, list], published: dict[str, int], config) -> None:
    """Every published message, once, with the content the publisher derived from its number."""
    topics = list(published)
    for i, topic in enumerate(topics):
        messages = bag.get(topic, [])
        seqs = sorted(int(m.header.frame_id) for m in messages)
        assert seqs == list(range(1, published[topic] + 1)), (
            f"{topic}: missing {set(range(1, published[topic] + 1)) - set(seqs)}"
        )
        for m in messages[:: max(1, len(messages) // 7)]:
            t = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 - T_BASE
            if hasattr(m, "format"):
                decoded = cv2.imdecode(np.asarray(m.data), cv2.IMREAD_COLOR)
                expected = cv2.imdecode(
                    cv2.imencode(
                        ".jpg",
                        camera_image(i, int(m.header.frame_id), 48, 64),
                        [cv2.IMWRITE_JPEG_QUALITY, 90],
                    )[1],
                    1,
                )
                assert np.array_equal(decoded, expected), f"{topic} message {m.header.frame_id} differs"
            else:
                np.testing.assert_allclose(m.position, joint_value(i, t, len(m.position)), atol=1e-9)


@pytest.mark.slow
def test_every_message_recorded_and_converted(tmp_path, client):
    recorder, executor, statuses = client
    config = load_robot_config(CONFIG)
    root = tmp_path / "dataset"
    # The recorder converts each saved episode itself (lossless video, so frames compare exactly).
    process = start_recorder(
        tmp_path / "episodes", f"convert_dataset:={root}", "convert_codec:=h264_lossless"
    )
    publishers = start_publishers(seconds=2.5, rounds=2)
    try:
        wait_ready(recorder, executor, process)
        ok, message = call(recorder, Command("start", instruction="fold the towel"))
        assert ok, message
        published = publish_round(publishers)
        time.sleep(0.5)  # the last samples cross the wire
        spin_until(executor, lambda: any(s.recording and sum(s.message_counts) > 0 for s in statuses), 5)
        ok, message = call(recorder, Command("stop", save=True, task_success=True))
        assert ok, message
        assert spin_until(executor, lambda: statuses and not statuses[-1].recording, 5)
        deadline = time.monotonic() + 90
        while not (root / "meta" / "fastwam_stats.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        # A clean shutdown (SIGTERM) mid-episode saves it, success unknown.
        ok, message = call(recorder, Command("start", instruction="interrupted"))
        assert ok, message
        publish_round(publishers)  # not empty: an empty episode would be discarded
        time.sleep(0.3)
    finally:
        finish(publishers)
        log = finish(process, signal.SIGTERM)
    assert process.returncode == 0, log
    episodes = sorted((tmp_path / "episodes").iterdir())
    assert len(episodes) == 2, log
    interrupted = read_episode_json(episodes[1])
    assert interrupted["status"] == "saved" and interrupted["stopped_by"] == "shutdown"
    assert interrupted["task_success"] is None and (episodes[1] / "metadata.yaml").is_file()
    info = read_episode_json(episodes[0])
    assert (
        info["status"] == "saved" and info["task_success"] is True and info["instruction"] == "fold the towel"
    )
    assert {t: v["count"] for t, v in info["topics"].items()} == published, log
    assert all(v["dropped"] == 0 for v in info["topics"].values())
    check_contents(read_bag(episodes[0]), published, config)
    # Status while recording: per-topic counts and rates, no drops.
    live = [s for s in statuses if s.recording and sum(s.message_counts) > 0]
    assert live and list(live[-1].topics) == list(published) and max(live[-1].rates_hz) > 0
    final = [s for s in statuses if not s.recording and s.episodes_saved == 1]
    assert final and sum(final[-1].dropped) == 0 and not final[-1].error

    # Conversion: frames and actions are the published ones.
    assert (root / "meta" / "fastwam_stats.json").is_file(), log  # written last by the converter
    dataset = LeRobotDataset(root)
    assert dataset.episode_indices == [0] and dataset.episode(0).tasks == ("fold the towel",)
    data = dataset.read_episode(0, ["action", "observation.state", "source_timestamp"])
    head = config.topics.cameras["head"].topic
    heads = sorted(read_bag(episodes[0])[head], key=lambda m: (m.header.stamp.sec, m.header.stamp.nanosec))
    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in heads])
    sources = json.loads((root / "meta" / "fastwam_sources.jsonl").read_text().splitlines()[0])
    source = sources["start_time_ns"] / 1e9 + data.columns["source_timestamp"][:, 0].astype(np.float64)
    first = int(np.argmin(np.abs(stamps - source[0])))
    assert abs(stamps[first] - source[0]) < 1e-5
    frames = dataset.read_frames(0, "observation.images.head", data.timestamps[:3])
    for k in range(3):
        expected = cv2.imdecode(np.asarray(heads[first + k].data), cv2.IMREAD_COLOR)
        assert np.array_equal(frames[k], cv2.cvtColor(expected, cv2.COLOR_BGR2RGB))
    topics = list(published)
    expected_action = np.concatenate(
        [
            joint_value(
                topics.index(config.topics.command[g]), source - T_BASE, len(config.robot.group(g).joints)
            )
            for g in config.robot.action_groups
        ],
        axis=-1,
    )
    np.testing.assert_allclose(data.columns["action"], expected_action, atol=2e-5)  # float32 storage


@pytest.mark.slow
def test_sigkill_keeps_earlier_episodes_and_recovers_the_partial_one(tmp_path, client):
    recorder, executor, _ = client
    process = start_recorder(tmp_path / "episodes")
    publishers = start_publishers(seconds=1.5, rounds=2)
    try:
        wait_ready(recorder, executor, process)
        assert_ok(call(recorder, Command("start", instruction="first")))
        first_counts = publish_round(publishers)
        time.sleep(0.3)
        assert_ok(call(recorder, Command("stop", save=True, task_success=False)))
        assert_ok(call(recorder, Command("start", instruction="second")))
        publish_round(publishers)
        time.sleep(0.6)  # > flush period: the chunks are on disk
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        finish(publishers)
        finish(process)
    first, second = sorted((tmp_path / "episodes").iterdir())
    assert read_episode_json(first)["status"] == "saved"
    assert {t: v["count"] for t, v in read_episode_json(first)["topics"].items()} == first_counts
    assert sum(len(v) for v in read_bag(first).values()) == sum(first_counts.values())
    assert find_incomplete_episodes(tmp_path / "episodes") == [second]
    assert read_episode_json(second)["status"] == "recording"
    assert bag_main(["recover", str(tmp_path / "episodes")]) == 0
    info = read_episode_json(second)
    assert info["status"] == "recovered" and info["partial"] is True and info["instruction"] == "second"
    recovered = read_bag(second)
    assert info["recovered_messages"] == sum(len(v) for v in recovered.values()) > 0
    for topic, messages in recovered.items():  # a prefix of what was published, no holes
        seqs = sorted(int(m.header.frame_id) for m in messages)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), topic


def test_a_bad_output_directory_is_refused_at_start_up(tmp_path):
    """Not at the first start_episode: the node does not come up, and says why, naming it."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for params, expected in (
        ((), "output directory " + str(blocker / "episodes") + " cannot be created"),
        (("min_free_space_mb:=1e12",), "MiB free, less than the"),
    ):
        out = tmp_path / "episodes" if params else blocker / "episodes"
        process = start_recorder(out, *params)
        try:
            log, _ = process.communicate(timeout=60)
        finally:
            finish(process)
        assert process.returncode == 1, log
        assert "parameter output_dir" in log and expected in log, log
        assert "recording " not in log  # never announced


def test_every_parameter_is_described_and_read_only(tmp_path):
    """`ros2 param describe` explains each recorder parameter, as the policy node's; each is read once
    at start-up, so a change at run time is refused rather than silently ignored."""
    from rclpy.parameter import Parameter

    from fastwam_policy.recorder_node import RecorderNode

    context = rclpy.Context()
    rclpy.init(context=context)
    overrides = [Parameter("robot_config", value=str(CONFIG)), Parameter("output_dir", value=str(tmp_path))]
    node = RecorderNode(context=context, parameter_overrides=overrides)
    plain = rclpy.create_node("plain", context=context)  # what rclpy declares on every node
    try:
        own = sorted(set(node.list_parameters([], 0).names) - set(plain.list_parameters([], 0).names))
        assert len(own) == 17, own  # the module docstring's list
        for name, descriptor in zip(own, node.describe_parameters(own)):
            assert len(descriptor.description) > 20, (name, descriptor.description)
            assert descriptor.read_only, name
        (result,) = node.set_parameters([Parameter("qos_depth", value=5)])
        assert not result.successful and node.get_parameter("qos_depth").value == 100
    finally:
        node.recorder.shutdown(5.0)
        node.destroy_node()
        plain.destroy_node()
        rclpy.shutdown(context=context)


def test_an_empty_episode_is_discarded_with_a_warning(tmp_path, client):
    recorder, executor, statuses = client
    process = start_recorder(tmp_path / "episodes")
    try:
        wait_ready(recorder, executor, process)
        assert_ok(call(recorder, Command("start", instruction="fold")))
        ok, message = call(recorder, Command("stop", save=True, task_success=True))
        assert not ok and "recorded no message" in message, message
        assert spin_until(executor, lambda: statuses and not statuses[-1].recording, 5)
        assert statuses[-1].episodes_saved == 0
    finally:
        log = finish(process)
    assert list((tmp_path / "episodes").iterdir()) == [], log
    assert "WARN" in log and "recorded no message" in log, log


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_episode_closes_the_bag_in_bounded_time(tmp_path, client, sig):
    """While messages stream in: the process exits within shutdown_timeout_s (3 s here) plus the
    node's teardown, with the bag complete (metadata.yaml) and the episode saved."""
    recorder, executor, _ = client
    process = start_recorder(tmp_path / "episodes", "shutdown_timeout_s:=3.0")
    publishers = start_publishers(seconds=6.0)
    try:
        wait_ready(recorder, executor, process)
        assert_ok(call(recorder, Command("start", instruction="fold")))
        publishers.stdin.write("go\n")  # a round of 6 s: still publishing when the signal comes
        publishers.stdin.flush()
        time.sleep(1.5)
        sent = time.monotonic()
        process.send_signal(sig)
        log, _ = process.communicate(timeout=30)  # the test fails here if the process ignores it
        exited_s = time.monotonic() - sent
    finally:
        finish(publishers)
        finish(process)
    assert process.returncode == 0, log
    # 3 s to close the bag; the rest is rclpy teardown. A process that ignored the signal would
    # hit the 30 s communicate timeout above.
    assert exited_s < 15.0, (exited_s, log)
    (episode,) = (tmp_path / "episodes").iterdir()
    info = read_episode_json(episode)
    assert info["status"] == "saved" and info["stopped_by"] == "shutdown", info
    assert (episode / "metadata.yaml").is_file() and sum(len(v) for v in read_bag(episode).values()) > 0


def test_key_commands():
    keys = KeyCommands("fold")
    assert keys.press("s") == Command("start", instruction="fold")
    assert keys.press("y") == Command("stop", save=True, task_success=True)
    assert keys.press("N") == Command("stop", save=True, task_success=False)
    # One stray d never discards: it must be pressed twice in a row.
    assert keys.press("d").kind == "confirm_discard"
    assert keys.press("x").kind == "cancelled"
    assert keys.press("d").kind == "confirm_discard"
    assert keys.press("d") == Command("stop", save=False)
    assert keys.press("i").kind == "edit_instruction"
    assert not keys.set_instruction("   ") and keys.instruction == "fold"
    assert keys.set_instruction(" unfold ") and keys.press("s").instruction == "unfold"
    assert keys.press("q").kind == "quit" and keys.press("z") is None
