"""LeRobot v2.1 writer/reader and v3.0 reader: file layout, metadata, and window alignment."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from fastwam.camera import CameraLayout
from fastwam.data.lerobot import LeRobotDataset, LeRobotV21Writer
from fastwam.data.windows import DatasetKeys, WindowDataset, WindowSpec
from fastwam_training.synthetic import CAMERAS, episode_arrays, make_v21_dataset, make_v30_dataset

LENGTHS = (12, 7)
NAMES = ("joint1", "joint2", "joint3", "gripper")
LAYOUT = CameraLayout.row(["front", "wrist"], 32, 32)
KEYS = DatasetKeys({"front": CAMERAS[0], "wrist": CAMERAS[1]}, state_names=NAMES, action_names=NAMES)
SPEC = WindowSpec(action_horizon=8, video_frames=5, video_stride=2)


def test_v21_writer_layout_and_metadata(tmp_path):
    root = make_v21_dataset(tmp_path / "ds", LENGTHS)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["total_videos"]) == (
        2,
        19,
        2,
        4,
    )
    assert info["data_path"] == "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    assert (
        info["video_path"] == "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    )
    assert info["splits"] == {"train": "0:2"}
    assert info["features"]["observation.state"] == {"dtype": "float32", "shape": [4], "names": list(NAMES)}
    cam = info["features"][CAMERAS[0]]
    assert cam["dtype"] == "video" and cam["shape"] == [32, 32, 3]
    assert cam["info"]["video.fps"] == 15.0 and cam["info"]["video.codec"] == "h264"
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert key in info["features"]
    for e in range(2):
        assert (root / f"data/chunk-000/episode_{e:06d}.parquet").is_file()
        for cam_key in CAMERAS:
            assert (root / f"videos/chunk-000/{cam_key}/episode_{e:06d}.mp4").is_file()
    episodes = [json.loads(line) for line in (root / "meta/episodes.jsonl").read_text().splitlines()]
    assert episodes == [
        {"episode_index": 0, "tasks": ["pick up the cube"], "length": 12},
        {"episode_index": 1, "tasks": ["fold the towel"], "length": 7},
    ]
    tasks = [json.loads(line) for line in (root / "meta/tasks.jsonl").read_text().splitlines()]
    assert tasks == [
        {"task_index": 0, "task": "pick up the cube"},
        {"task_index": 1, "task": "fold the towel"},
    ]
    stats = [json.loads(line) for line in (root / "meta/episodes_stats.jsonl").read_text().splitlines()]
    assert [s["episode_index"] for s in stats] == [0, 1]
    s0 = stats[0]["stats"]
    arrays = episode_arrays(0, 12)
    np.testing.assert_allclose(s0["action"]["mean"], arrays["action"].mean(0), rtol=1e-5)
    assert s0["action"]["count"] == [12]
    assert np.array(s0[CAMERAS[0]]["mean"]).shape == (3, 1, 1)
    table = pq.read_table(root / "data/chunk-000/episode_000001.parquet")
    assert table["index"].to_pylist() == list(range(12, 19))
    assert table["episode_index"].to_pylist() == [1] * 7
    assert table["task_index"].to_pylist() == [1] * 7
    np.testing.assert_allclose(table["timestamp"].to_numpy(), np.arange(7) / 15, atol=1e-6)
    np.testing.assert_allclose(table["source_timestamp"].to_numpy(), 1000 + np.arange(7) / 15)


def test_v21_writer_appends_and_recovers_from_uncommitted_episode(tmp_path):
    root = make_v21_dataset(tmp_path / "ds", LENGTHS)
    # A crash after the metadata lines but before info.json: the lines must be ignored, not trusted.
    with (root / "meta/episodes.jsonl").open("a") as f:
        f.write(json.dumps({"episode_index": 2, "tasks": ["ghost"], "length": 99}) + "\n")
    assert LeRobotDataset(root).episode_indices == [0, 1]
    writer = LeRobotV21Writer(root, 15, "synthetic_arm", CAMERAS, NAMES, NAMES, video_codec="h264_lossless")
    arrays = episode_arrays(5, 9)
    index = writer.add_episode(
        arrays["frames"], arrays["state"], arrays["action"], arrays["timestamps"], "pick up the cube"
    )
    assert index == 2
    ds = LeRobotDataset(root)
    assert ds.episode_indices == [0, 1, 2] and ds.episode(2).length == 9 and ds.total_frames == 28
    assert ds.tasks == {0: "pick up the cube", 1: "fold the towel"}
    data = ds.read_episode(2, ["action"])
    np.testing.assert_array_equal(data.columns["action"], arrays["action"])
    with pytest.raises(ValueError, match="fps"):
        LeRobotV21Writer(root, 30, "synthetic_arm", CAMERAS, NAMES, NAMES)
    with pytest.raises(ValueError, match="names"):
        LeRobotV21Writer(root, 15, "synthetic_arm", CAMERAS, NAMES, ("a", "b", "c", "d"))


def test_writer_rejects_bad_episodes(tmp_path):
    writer = LeRobotV21Writer(tmp_path / "ds", 15, "r", CAMERAS, NAMES, NAMES)
    arrays = episode_arrays(0, 6)
    state = arrays["state"].copy()
    state[3, 1] = np.nan
    with pytest.raises(ValueError, match="state has non-finite"):
        writer.add_episode(arrays["frames"], state, arrays["action"], arrays["timestamps"], "t")
    with pytest.raises(ValueError, match=r"action must be \[6, 4\]"):
        writer.add_episode(arrays["frames"], arrays["state"], arrays["action"][:5], arrays["timestamps"], "t")
    with pytest.raises(ValueError, match="strictly increasing"):
        writer.add_episode(
            arrays["frames"], arrays["state"], arrays["action"], arrays["timestamps"][::-1], "t"
        )
    assert writer.num_episodes == 0 and not (tmp_path / "ds/meta/info.json").exists()


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_windows_align_with_source_arrays(tmp_path, version):
    make = make_v21_dataset if version == "v2.1" else make_v30_dataset
    ds = LeRobotDataset(make(tmp_path / "ds", LENGTHS))
    assert ds.version == version and ds.episode_indices == [0, 1] and ds.fps == 15
    windows = WindowDataset(ds, LAYOUT, KEYS, SPEC)
    assert len(windows) == sum(LENGTHS)
    sources = {e: episode_arrays(e, n) for e, n in enumerate(LENGTHS)}
    checked = 0
    for i in range(len(windows)):
        sample = windows[i]
        e, t = sample["episode_index"], sample["frame_index"]
        src, n = sources[e], LENGTHS[e]
        if t not in (0, 3, n - 5, n - 1):
            continue
        steps = np.minimum(t + np.arange(8), n - 1)
        np.testing.assert_array_equal(sample["action"].numpy(), src["action"][steps])
        np.testing.assert_array_equal(sample["action_mask"].numpy(), t + np.arange(8) < n)
        np.testing.assert_array_equal(sample["state"].numpy(), src["state"][t])
        frames = np.minimum(t + 2 * np.arange(5), n - 1)
        np.testing.assert_array_equal(sample["frame_mask"].numpy(), t + 2 * np.arange(5) < n)
        expected = LAYOUT.compose(
            {"front": src["frames"][CAMERAS[0]][frames], "wrist": src["frames"][CAMERAS[1]][frames]}
        )
        np.testing.assert_array_equal(sample["video"].numpy(), expected)  # lossless codec: exact
        assert sample["instruction"] == src["task"]
        checked += 1
    assert checked == 8


@pytest.mark.parametrize("codec", ["h264", "av1"])  # av1: LeRobot's default (libsvtav1 / dav1d)
def test_lossy_codecs_frames_are_close(tmp_path, codec):
    ds = LeRobotDataset(make_v21_dataset(tmp_path / "ds", (10,), codec=codec))
    assert ds.features[CAMERAS[1]]["info"]["video.codec"] == codec
    src = episode_arrays(0, 10)["frames"][CAMERAS[1]]
    frames = ds.read_frames(0, CAMERAS[1], np.array([9, 0, 4]) / 15)
    diff = np.abs(frames.astype(np.int16) - src[[9, 0, 4]].astype(np.int16))
    assert diff.mean() < 2.0 and diff.max() < 40


def test_v30_episode_offsets_and_tasks(tmp_path):
    ds = LeRobotDataset(make_v30_dataset(tmp_path / "ds", (5, 6, 4)))
    assert ds.tasks == {0: "pick up the cube", 1: "fold the towel"}
    assert [ds.episode(e).video_offsets[CAMERAS[0]] for e in range(3)] == [0.0, 5 / 15, 11 / 15]
    data = ds.read_episode(2, ["observation.state", "action"])
    np.testing.assert_array_equal(data.columns["observation.state"], episode_arrays(2, 4)["state"])
    last = ds.read_frames(2, CAMERAS[0], [3 / 15])
    np.testing.assert_array_equal(last[0], episode_arrays(2, 4)["frames"][CAMERAS[0]][3])
