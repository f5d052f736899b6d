"""Episode bags (ROS-free part): writing, crash recovery, disk errors and conversion to LeRobot v2.1."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from fastwam.data.bag import BagError, check_bag, convert_bags, find_bags, main, read_episode_streams
from fastwam.data.episode_bag import (
    EpisodeError,
    EpisodeRecorder,
    TopicSpec,
    find_incomplete_episodes,
    read_episode_json,
    recover_episode,
)
from fastwam.data.lerobot import LeRobotDataset
from fastwam.robot_config import load_robot_config

CONFIG = Path(__file__).resolve().parents[1] / "config" / "r1_lite.yaml"
TS = get_typestore(Stores.ROS2_JAZZY)
Header, Time = TS.types["std_msgs/msg/Header"], TS.types["builtin_interfaces/msg/Time"]
CompressedImage, JointState = (
    TS.types["sensor_msgs/msg/CompressedImage"],
    TS.types["sensor_msgs/msg/JointState"],
)
T0 = 1_700_000_000 * 10**9


@pytest.fixture(scope="module")
def config():
    return load_robot_config(CONFIG)


def jpeg(seed: int, h: int = 48, w: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    image = np.kron(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    return cv2.imencode(".jpg", image)[1].tobytes()


def joint_value(group_offset: float, t_s: np.ndarray, n: int) -> np.ndarray:
    """Linear in time, so linear interpolation reproduces it exactly at any instant."""
    return group_offset + 0.1 * np.asarray(t_s)[..., None] + 0.01 * np.arange(n)


def episode_messages(config, seconds=2.0, cam_hz=15.0, joint_hz=100.0, stamps=True):
    """Time-ordered (topic, t_ns, cdr) of one synthetic episode on the config's topics."""
    out = []
    for c, (key, cam) in enumerate(config.topics.cameras.items()):
        for i in range(int(seconds * cam_hz)):
            t = T0 + int((i / cam_hz + 0.002 * c) * 1e9)
            stamp = Time(sec=t // 10**9, nanosec=t % 10**9) if stamps else Time(sec=0, nanosec=0)
            msg = CompressedImage(
                header=Header(stamp=stamp, frame_id=key),
                format="jpeg",
                data=np.frombuffer(jpeg(1000 * c + i), np.uint8),
            )
            out.append((cam.topic, t, bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))))
    for kind, mapping in (("feedback", config.topics.feedback), ("command", config.topics.command)):
        for g, (group, topic) in enumerate(mapping.items()):
            n = len(config.robot.group(group).joints)
            offset = g + (0.5 if kind == "command" else 0.0)
            for i in range(int(seconds * joint_hz) + 5):
                t = T0 + int((i / joint_hz - 0.02) * 1e9)
                stamp = Time(sec=t // 10**9, nanosec=t % 10**9) if stamps else Time(sec=0, nanosec=0)
                position = joint_value(offset, (t - T0) / 1e9, n)
                msg = JointState(
                    header=Header(stamp=stamp, frame_id=""),
                    name=[],
                    position=position,
                    velocity=np.zeros(0),
                    effort=np.zeros(0),
                )
                out.append((topic, t, bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/JointState"))))
    return sorted(out, key=lambda m: m[1])


def topic_specs(config) -> list[TopicSpec]:
    specs = [TopicSpec(c.topic, "sensor_msgs/msg/CompressedImage") for c in config.topics.cameras.values()]
    specs += [TopicSpec(t, "sensor_msgs/msg/JointState") for t in config.topics.feedback.values()]
    specs += [
        TopicSpec(t, "sensor_msgs/msg/JointState", reliable=True) for t in config.topics.command.values()
    ]
    return specs


def record(recorder: EpisodeRecorder, messages, instruction="fold the towel", save=True, success=True):
    index = {s.topic: i for i, s in enumerate(recorder.topics)}
    episode = recorder.start(instruction)
    for topic, t, data in messages:
        recorder.submit(index[topic], t, data)
    return recorder.stop(save=save, task_success=success), episode


def test_episode_bag_round_trip_and_metadata(tmp_path, config):
    messages = episode_messages(config, seconds=1.0)
    recorder = EpisodeRecorder(tmp_path, topic_specs(config), flush_period_s=0.1)
    (episode, _) = record(recorder, messages)
    info = read_episode_json(episode.path)
    assert (
        info["status"] == "saved" and info["task_success"] is True and info["instruction"] == "fold the towel"
    )
    assert sum(t["count"] for t in info["topics"].values()) == len(messages)
    assert all(t["dropped"] == 0 for t in info["topics"].values())
    # rosbags reads it back identically, in order.
    with AnyReader([episode.path]) as reader:
        read = [(c.topic, t, bytes(d)) for c, t, d in reader.messages()]
        types = {c.topic: c.msgtype for c in reader.connections}
    assert sorted(read) == sorted(messages)
    assert types[config.topics.cameras["head"].topic] == "sensor_msgs/msg/CompressedImage"
    # The mcap library (what Foxglove uses) reads it too, with ros2msg schemas.
    with open(episode.path / f"{episode.name}.mcap", "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
        assert sum(1 for _ in reader.iter_messages()) == len(messages)
        # mcap_ros2 (Foxglove's decoder) parses the schemas and decodes the CDR.
        f.seek(0)
        decoded = make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages()
        _, channel, _, first = next(iter(decoded))
        assert channel.topic == messages[0][0] and first.header.stamp.sec > 0
    meta = (episode.path / "metadata.yaml").read_text()
    assert "version: 8" in meta and "fastwam.instruction: fold the towel" in meta
    # Discarding deletes the episode; the saved one is untouched.
    (discarded, _) = record(recorder, messages[:10], save=False)
    assert not discarded.path.exists() and episode.path.is_dir()
    with pytest.raises(EpisodeError, match="not recording"):
        recorder.stop(save=True, task_success=True)


def _complete_messages(data: bytes) -> int:
    """Messages in the complete chunks of a (possibly truncated) MCAP file's bytes."""
    import io

    from mcap.exceptions import McapError
    from mcap.records import Message
    from mcap.stream_reader import StreamReader

    count = 0
    try:
        for record in StreamReader(io.BytesIO(data), skip_magic=False).records:
            count += isinstance(record, Message)
    except (McapError, EOFError, ValueError, struct.error):
        pass  # the unfinished tail
    return count


def test_interrupted_episode_is_recovered_up_to_its_last_chunk(tmp_path, config):
    messages = episode_messages(config, seconds=1.0)
    recorder = EpisodeRecorder(tmp_path, topic_specs(config), flush_period_s=0.05)
    saved, _ = record(recorder, messages)
    index = {s.topic: i for i, s in enumerate(recorder.topics)}
    episode = recorder.start("second")
    half = len(messages) // 2
    for topic, t, data in messages[:half]:
        recorder.submit(index[topic], t, data)
    # Wait until the writer thread has flushed everything to the disk: a copy of the file then
    # holds all `half` messages. Measured on the file, not assumed after a sleep (a busy machine may
    # not run the writer thread for a while); the deadline only bounds a hang.
    deadline = time.monotonic() + 60
    while True:
        data = (episode.path / f"{episode.name}.mcap").read_bytes()
        if _complete_messages(data) == half or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # Freeze the directory as a SIGKILL would leave it, plus a torn record at the end.
    killed = tmp_path / "episode_000999_killed"
    killed.mkdir()
    (killed / "episode.json").write_text((episode.path / "episode.json").read_text())
    (killed / "episode_000999_killed.mcap").write_bytes(data + b"\x06\xff\xff\x00\x00")
    recorder.stop(save=False, task_success=False)

    assert find_incomplete_episodes(tmp_path) == [killed]
    with pytest.raises(BagError, match="recover"):
        read_episode_streams(killed, config)
    info = recover_episode(killed)
    assert info["status"] == "recovered" and info["partial"] is True and info["instruction"] == "second"
    assert info["recovered_messages"] == half
    with AnyReader([killed]) as reader:
        assert sorted((c.topic, t, bytes(d)) for c, t, d in reader.messages()) == sorted(messages[:half])
    assert (killed / "episode_000999_killed.mcap.partial").is_file()
    assert find_incomplete_episodes(tmp_path) == []
    with pytest.raises(EpisodeError, match="complete bag"):
        recover_episode(killed)
    assert read_episode_json(saved.path)["status"] == "saved"  # earlier episode untouched


def test_write_error_stops_recording_cleanly(tmp_path, config):
    """A file-size limit makes writes fail like a full disk (EFBIG instead of ENOSPC)."""
    script = textwrap.dedent(
        f"""
        import resource, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from fastwam.data.episode_bag import EpisodeRecorder, EpisodeError, TopicSpec
        specs = [TopicSpec("/cam", "sensor_msgs/msg/CompressedImage")]
        rec = EpisodeRecorder({str(tmp_path)!r}, specs, flush_period_s=0.05, fsync=False)
        rec.start("small"); rec.submit(0, 1, b"\\0\\1\\0\\0" + bytes(1000)); rec.stop(True, True)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        ep = rec.start("big")
        for i in range(400):
            rec.submit(0, 2 + i, b"\\0\\1\\0\\0" + bytes(4000))
            time.sleep(0.002)
        time.sleep(0.5)
        print("RECORDING", rec.recording)
        print("ERROR", rec.error)
        try:
            rec.stop(True, True)
        except EpisodeError as e:
            print("STOP", e)
        print("DROPPED", rec.status().dropped[0])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines["RECORDING"] == "False"
    assert "write to" in lines["ERROR"] and "recording stopped" in lines["ERROR"]
    assert "not recording" in lines["STOP"] and "failed" in lines["STOP"]
    assert int(lines["DROPPED"]) > 0
    episodes = sorted(p for p in tmp_path.iterdir() if p.name.startswith("episode_"))
    assert read_episode_json(episodes[0])["status"] == "saved"
    with AnyReader([episodes[0]]) as reader:
        assert sum(1 for _ in reader.messages()) == 1
    assert read_episode_json(episodes[1])["status"] == "failed"
    info = recover_episode(episodes[1])  # what reached the disk before the limit is kept
    assert info["recovered_messages"] > 0


def test_unwritable_output_directory_is_a_clear_error(tmp_path, config):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    recorder = EpisodeRecorder(blocker / "episodes", topic_specs(config))
    with pytest.raises(EpisodeError, match="not_a_dir"):
        recorder.start("x")
    assert not recorder.recording and "not_a_dir" in recorder.status().error


def test_convert_aligns_streams_and_appends(tmp_path, config):
    messages = episode_messages(config, seconds=2.0)
    recorder = EpisodeRecorder(tmp_path / "bags", topic_specs(config), flush_period_s=0.2)
    first, _ = record(recorder, messages, instruction="fold the towel")
    second, _ = record(recorder, messages[: len(messages) // 2], instruction="unfold it", success=False)
    root = tmp_path / "dataset"
    added = convert_bags([first.path], root, config, codec="h264_lossless", log=lambda *_: None)
    assert added == [0]
    # Appending: the output directory holds both; the first is skipped as already converted.
    added = convert_bags(
        find_bags([tmp_path / "bags"]), root, config, codec="h264_lossless", log=lambda *_: None
    )
    assert added == [1]

    dataset = LeRobotDataset(root)
    assert dataset.episode_indices == [0, 1]
    assert dataset.episode(0).tasks == ("fold the towel",) and dataset.episode(1).tasks == ("unfold it",)
    data = dataset.read_episode(0, ["observation.state", "action"])
    head = [m for m in messages if m[0] == config.topics.cameras["head"].topic]
    # Head frames at 15 Hz = dataset fps: every head frame whose time all streams cover.
    times = data.timestamps
    assert data.length == len(head) and np.allclose(times, np.arange(data.length) / 15.0, atol=1e-6)
    t_s = np.arange(len(head)) / 15.0  # head stamps relative to T0
    for name, kind, groups in (
        ("observation.state", 0.0, config.robot.state_groups),
        ("action", 0.5, config.robot.action_groups),
    ):
        expected = np.concatenate(
            [
                joint_value(
                    list(config.topics.feedback).index(g) + kind, t_s, len(config.robot.group(g).joints)
                )
                for g in groups
            ],
            axis=-1,
        )
        np.testing.assert_allclose(data.columns[name], expected, atol=1e-5)
    # Frames are the published JPEGs decoded (lossless video): head exactly, wrists the nearest frame.
    frames = dataset.read_frames(0, "observation.images.head", times[:5])
    for i in range(5):
        assert np.array_equal(
            frames[i], cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg(i), np.uint8), 1), cv2.COLOR_BGR2RGB)
        )
    wrist = dataset.read_frames(0, "observation.images.wrist_right", times[3:4])[0]
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg(2000 + 3), np.uint8), 1), cv2.COLOR_BGR2RGB)
    assert np.array_equal(wrist, expected)
    sources = [
        json.loads(line) for line in (root / "meta" / "fastwam_sources.jsonl").read_text().splitlines()
    ]
    assert [s["bag"] for s in sources] == [first.name, second.name] and sources[1]["task_success"] is False
    stats = json.loads((root / "meta" / "fastwam_stats.json").read_text())
    assert stats["action"]["count"] == dataset.total_frames


def test_plain_ros2_bag_record_needs_an_instruction(tmp_path, config):
    """A bag like `ros2 bag record` makes (sqlite3, no episode.json, zero header stamps)."""
    bag = tmp_path / "rosbag2_2026_11_24"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        connections = {}
        for topic, t, data in episode_messages(config, seconds=1.0, stamps=False):
            if topic not in connections:
                msgtype = (
                    "sensor_msgs/msg/CompressedImage" if "camera" in topic else "sensor_msgs/msg/JointState"
                )
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TS)
            writer.write(connections[topic], t, data)
    root = tmp_path / "dataset"
    assert main(["convert", str(bag), "--dataset", str(root), "--config", str(CONFIG)]) == 1  # no instruction
    assert not (root / "meta" / "info.json").exists()
    assert (
        main(
            [
                "convert",
                str(bag),
                "--dataset",
                str(root),
                "--config",
                str(CONFIG),
                "--instruction",
                "fold",
                "--codec",
                "h264",
                "--resize-to-layout",
            ]
        )
        == 0
    )
    dataset = LeRobotDataset(root)
    assert dataset.episode(0).tasks == ("fold",) and dataset.episode(0).length >= 14
    # Cameras stored at their layout sizes, H.264 (yuv420p).
    head = dataset.read_frames(0, "observation.images.head", [0.0])
    wrist = dataset.read_frames(0, "observation.images.wrist_left", [0.0])
    assert head.shape == (1, 256, 320, 3) and wrist.shape == (1, 128, 160, 3)


def test_windowed_views_are_stored_whole_and_windowed_at_composition(tmp_path, config):
    """A camera with a window (CameraView.resize + crop_origin) is stored at its resized size, the
    whole field of view, so the window is cut at composition as the policy node cuts it."""
    import dataclasses

    from fastwam.camera import CameraLayout, CameraView

    head = CameraView("head", 256, 320, resize=(288, 384), crop_origin=(16, 32))
    layout = CameraLayout(((head,), config.cameras.rows[1]))
    windowed = dataclasses.replace(config, cameras=layout)
    recorder = EpisodeRecorder(tmp_path / "bags", topic_specs(config), flush_period_s=0.2)
    bag, _ = record(recorder, episode_messages(config, seconds=1.0))
    root = tmp_path / "dataset"
    convert_bags([bag.path], root, windowed, resize_to_layout=True, log=lambda *_: None)
    dataset = LeRobotDataset(root)
    stored = dataset.read_frames(0, "observation.images.head", [0.0])
    assert stored.shape == (1, 288, 384, 3)
    wrist = dataset.read_frames(0, "observation.images.wrist_left", [0.0])
    composite = layout.compose({"head": stored[0], "wrist_left": wrist[0], "wrist_right": wrist[0]})
    np.testing.assert_array_equal(composite[:256], stored[0, 16:272, 32:352])


def test_bad_bags_name_the_problem(tmp_path, config):
    messages = episode_messages(config, seconds=1.0)
    head = config.topics.cameras["head"].topic
    recorder = EpisodeRecorder(tmp_path / "a", topic_specs(config), flush_period_s=0.2)
    no_head, _ = record(recorder, [m for m in messages if m[0] != head])
    with pytest.raises(BagError, match="has no messages"):
        read_episode_streams(no_head.path, config)
    # A wrist camera that stops half way: the converter refuses rather than repeat a stale frame.
    wrist = config.topics.cameras["wrist_left"].topic
    stalled, _ = record(recorder, [m for m in messages if m[0] != wrist or m[1] < T0 + 5 * 10**8])
    streams = read_episode_streams(stalled.path, config)
    from fastwam.data.bag import align_episode

    with pytest.raises(BagError, match="wrist_left"):
        align_episode(streams, config, fps=15.0)
    with pytest.raises(BagError, match="no such bag"):
        find_bags([tmp_path / "missing"])


def test_sequence_gaps_and_overflow_are_counted_as_dropped(tmp_path, config):
    recorder = EpisodeRecorder(
        tmp_path, [TopicSpec("/a", "sensor_msgs/msg/JointState")], max_queue_bytes=10_000
    )
    data = bytes(
        TS.serialize_cdr(
            JointState(
                header=Header(stamp=Time(sec=1, nanosec=0), frame_id=""),
                name=[],
                position=np.zeros(1),
                velocity=np.zeros(0),
                effort=np.zeros(0),
            ),
            "sensor_msgs/msg/JointState",
        )
    )
    recorder.submit(0, 1, data, seq=1)  # idle: tracked, not recorded
    recorder.start("gaps")
    for seq in (2, 3, 6, 7, 10):  # 4, 5, 8, 9 never arrived
        recorder.submit(0, seq, data, seq=seq)
    assert recorder.status().dropped == [4]
    recorder.set_publisher_count(0, 2)  # two publishers interleave their numbers: no gap claims
    recorder.submit(0, 11, data, seq=1)
    recorder.submit(0, 12, data, seq=20)
    assert recorder.status().dropped == [4]
    episode = recorder.stop(save=True, task_success=True)
    assert read_episode_json(episode.path)["topics"]["/a"] == {
        "count": 7,
        "dropped": 4,
        "msgtype": "sensor_msgs/msg/JointState",
    }
    # More queued than max_queue_bytes (a disk that cannot keep up): dropped and counted, not lost silently.
    recorder.start("overflow")
    recorder.submit(0, 1, bytes(20_000))
    assert recorder.status().dropped == [1]
    recorder.stop(save=False, task_success=False)


def teleop_messages(config, seconds, windows, late_groups=None):
    """An episode as an operator records it: the commands only inside `windows` (seconds since
    the recording began, [start, end) pairs); late_groups: group -> its own first command time."""
    command_topics = {t: g for g, t in config.topics.command.items()}
    out = []
    for topic, t, data in episode_messages(config, seconds=seconds):
        s = (t - T0) / 1e9
        if topic in command_topics:
            if not any(a <= s < b for a, b in windows):
                continue
            if s < (late_groups or {}).get(command_topics[topic], -1.0):
                continue
        out.append((topic, t, data))
    return out


def _tree_digest(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_teleop_that_starts_late_pauses_and_ends_early_converts_trimmed_and_reported(tmp_path, config):
    """The operator takes the controls 6 s into the recording, lets go of them for 1.3 s, stops
    commanding 1 s before the recording ends; the left gripper is first commanded 0.5 s after the
    rest. The idle head and tail are trimmed, the pause is held, the gripper's target is its
    measured position until its first command, and the verdict says so."""
    recorder = EpisodeRecorder(tmp_path / "bags", topic_specs(config), flush_period_s=0.2)
    messages = teleop_messages(config, 10.0, [(6.0, 7.0), (8.3, 9.0)], late_groups={"gripper_left": 6.5})
    bag, _ = record(recorder, messages)
    before = _tree_digest(bag.path)
    root = tmp_path / "dataset"
    lines: list[str] = []
    verdicts: list[dict] = []
    added = convert_bags([bag.path], root, config, codec="h264_lossless", log=lines.append, verdicts=verdicts)
    assert added == [0]
    assert _tree_digest(bag.path) == before  # nothing recorded is modified
    (v,) = verdicts
    assert v["verdict"] == "converted" and v["episode_index"] == 0
    # Head frames every 1/15 s from T0; commands (100 Hz, stamped at i/100 - 0.02 s) from 6.0 s.
    assert v["idle_head_s"] == pytest.approx(6.0, abs=0.011) and v["trimmed_start_s"] == pytest.approx(
        6.0, abs=0.07
    )
    assert v["idle_tail_s"] == pytest.approx(1.0 - 1 / 15, abs=0.011)  # the last head frame is at 9.93 s
    assert v["command_pauses_held"]["arm_left"]["count"] == 1
    assert v["command_pauses_held"]["arm_left"]["longest_s"] == pytest.approx(1.31, abs=0.011)
    assert "trimmed 6.0" in lines[0] and "pause" in lines[0]
    report = [
        json.loads(line) for line in (root / "meta" / "fastwam_conversion.jsonl").read_text().splitlines()
    ]
    assert report == verdicts

    data = LeRobotDataset(root).read_episode(0, ["observation.state", "action"])
    t_s = v["trimmed_start_s"] + data.timestamps  # seconds since the recording began
    assert t_s[0] >= 6.0 and t_s[-1] < 9.0
    action = config.robot.split(data.columns["action"], config.robot.action_groups)
    state = config.robot.split(data.columns["observation.state"], config.robot.state_groups)
    groups = list(config.topics.command)
    n = len(config.robot.group("arm_left").joints)
    last_before_pause = 6.99  # the last command stamp before 7.0 s (i / 100 - 0.02)
    expected = np.where(
        ((t_s >= last_before_pause) & (t_s < 8.3))[:, None],
        joint_value(groups.index("arm_left") + 0.5, np.full_like(t_s, last_before_pause), n),
        joint_value(groups.index("arm_left") + 0.5, t_s, n),
    )
    np.testing.assert_allclose(action["arm_left"], expected, atol=1e-5)
    # The left gripper before its first command (6.5 s): its measured position.
    early = t_s < 6.5
    assert early.any() and (~early).any()
    np.testing.assert_allclose(action["gripper_left"][early], state["gripper_left"][early], atol=1e-6)
    commanded = joint_value(groups.index("gripper_left") + 0.5, t_s, 1)
    in_use = ~early & ((t_s < last_before_pause) | (t_s >= 8.3))
    np.testing.assert_allclose(action["gripper_left"][in_use], commanded[in_use], atol=1e-5)


def test_a_rejected_episode_is_reported_and_the_batch_goes_on_unless_strict(tmp_path, config):
    recorder = EpisodeRecorder(tmp_path / "bags", topic_specs(config), flush_period_s=0.2)
    good, _ = record(recorder, episode_messages(config, seconds=1.0))
    paused, _ = record(recorder, teleop_messages(config, 8.0, [(0.0, 2.0), (6.5, 8.0)]))
    silent, _ = record(recorder, teleop_messages(config, 2.0, []))
    last, _ = record(recorder, episode_messages(config, seconds=1.0))
    before = {b.name: _tree_digest(b.path) for b in (good, paused, silent, last)}
    root = tmp_path / "dataset"
    verdicts: list[dict] = []
    added = convert_bags(find_bags([tmp_path / "bags"]), root, config, log=lambda *_: None, verdicts=verdicts)
    assert added == [0, 1]
    assert [v["verdict"] for v in verdicts] == ["converted", "rejected", "rejected", "converted"]
    assert "no command for 4.5" in verdicts[1]["reason"] and "--max-pause-s 3.0" in verdicts[1]["reason"]
    assert "has no messages" in verdicts[2]["reason"]  # no command at all
    # The quick check (no image decoded) gives the same verdicts.
    assert [check_bag(b.path, config) for b in (good, paused, silent)] == [
        "",
        *(v["reason"] for v in verdicts[1:3]),
    ]
    assert {b.name: _tree_digest(b.path) for b in (good, paused, silent, last)} == before
    # Run again: the converted are skipped, the rejected judged (and reported) again.
    verdicts.clear()
    assert (
        convert_bags(find_bags([tmp_path / "bags"]), root, config, log=lambda *_: None, verdicts=verdicts)
        == []
    )
    assert [v["verdict"] for v in verdicts] == ["skipped", "rejected", "rejected", "skipped"]
    assert len((root / "meta" / "fastwam_conversion.jsonl").read_text().splitlines()) == 8
    # A longer --max-pause-s bridges the pause.
    assert convert_bags([paused.path], root, config, max_pause_s=5.0, log=lambda *_: None) == [2]
    # --strict stops at the first rejection; the CLI exits 1 when any episode was rejected.
    with pytest.raises(BagError, match="has no messages"):
        convert_bags([silent.path, last.path], tmp_path / "strict", config, strict=True, log=lambda *_: None)
    assert not (tmp_path / "strict" / "meta" / "info.json").exists()
    args = ["convert", str(tmp_path / "bags"), "--dataset", str(tmp_path / "cli"), "--config", str(CONFIG)]
    assert main([*args, "--report", str(tmp_path / "verdicts.jsonl")]) == 1
    cli = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert [v["verdict"] for v in cli] == ["converted", "rejected", "rejected", "converted"]
    assert LeRobotDataset(tmp_path / "cli").episode_indices == [0, 1]


def test_an_empty_episode_is_discarded_unless_kept(tmp_path, config):
    recorder = EpisodeRecorder(tmp_path / "a", topic_specs(config))
    recorder.start("fold")
    episode = recorder.stop(save=True, task_success=True)
    assert episode.info["discarded"] == "empty" and not episode.path.exists()
    assert recorder.episodes_saved == 0
    kept = EpisodeRecorder(tmp_path / "b", topic_specs(config), keep_empty=True)
    kept.start("fold")
    episode = kept.stop(save=True, task_success=True)
    assert "discarded" not in episode.info and read_episode_json(episode.path)["status"] == "saved"


def test_output_directory_is_checked(tmp_path):
    from fastwam.data.episode_bag import check_output_dir

    assert check_output_dir(tmp_path / "new" / "episodes") == tmp_path / "new" / "episodes"
    assert list((tmp_path / "new" / "episodes").iterdir()) == []  # the probe file is gone
    (tmp_path / "file").write_text("")
    with pytest.raises(EpisodeError, match="file/episodes cannot be created"):
        check_output_dir(tmp_path / "file" / "episodes")
    with pytest.raises(EpisodeError, match="min_free_space_mb"):
        check_output_dir(tmp_path, min_free_bytes=2**62)
