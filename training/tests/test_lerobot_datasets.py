"""LeRobot v2.1 and v3.0 writers and reader: file layout, metadata, appending, and window alignment."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastwam.camera import CameraLayout
from fastwam.data.lerobot import (
    DatasetError,
    LeRobotDataset,
    LeRobotV21Writer,
    LeRobotV30Writer,
    integer_fps,
    open_writer,
)
from fastwam.data.lerobot_stats import QUANTILE_KEYS
from fastwam.data.windows import DatasetKeys, WindowDataset, WindowSpec
from fastwam_training.synthetic import CAMERAS, episode_arrays, make_v21_dataset, make_v30_dataset

LENGTHS = (12, 7)
NAMES = ("joint1", "joint2", "joint3", "gripper")
LAYOUT = CameraLayout.row(["front", "wrist"], 32, 32)
KEYS = DatasetKeys({"front": CAMERAS[0], "wrist": CAMERAS[1]}, state_names=NAMES, action_names=NAMES)
SPEC = WindowSpec(action_horizon=8, video_frames=5, video_stride=2)
# Limits small enough that the v3.0 writer rolls data, metadata and video files over (and chunks,
# at 2 files a chunk) within a few 32x32 episodes.
SMALL = {"chunks_size": 2, "data_files_size_in_mb": 0.004, "video_files_size_in_mb": 0.004}


def check_episodes_exact(root, lengths, first_seed_episode=0):
    """Every episode reads back exactly: columns, source times, tasks and every decoded pixel."""
    ds = LeRobotDataset(root)
    assert ds.episode_indices == list(range(len(lengths)))
    for e, n in enumerate(lengths):
        src = episode_arrays(e + first_seed_episode, n)
        data = ds.read_episode(e, ["observation.state", "action", "source_timestamp"])
        np.testing.assert_array_equal(data.columns["observation.state"], src["state"])
        np.testing.assert_array_equal(data.columns["action"], src["action"])
        np.testing.assert_allclose(
            data.columns["source_timestamp"][:, 0], src["timestamps"], rtol=0, atol=1e-9
        )
        np.testing.assert_allclose(data.timestamps, np.arange(n) / 15, atol=1e-6)
        assert {ds.tasks[int(t)] for t in data.task_index} == {src["task"]} == set(ds.episode(e).tasks)
        for key in CAMERAS:
            np.testing.assert_array_equal(ds.read_frames(e, key, data.timestamps), src["frames"][key])
    ds.check_videos()
    return ds


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
    assert "source_timestamp" not in info["features"]  # a feature LeRobot's recorder cannot append to
    cam = info["features"][CAMERAS[0]]
    assert cam["dtype"] == "video" and cam["shape"] == [32, 32, 3]
    assert type(info["fps"]) is int and type(cam["info"]["video.fps"]) is int and info["fps"] == 15
    assert cam["info"]["video.codec"] == "h264"
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
    assert s0["action"]["count"] == [12] and set(s0["action"]) == {"min", "max", "mean", "std", "count"}
    assert np.array(s0[CAMERAS[0]]["mean"]).shape == (3, 1, 1)
    assert s0[CAMERAS[0]]["count"] == [12]  # all 12 frames sampled (fewer than 100)
    assert s0["frame_index"] == {
        "min": [0],
        "max": [11],
        "mean": [5.5],
        "std": [pytest.approx(3.452052529)],
        "count": [12],
    }
    table = pq.read_table(root / "data/chunk-000/episode_000001.parquet")
    # The column types LeRobot's `datasets` features give: fixed-size lists, with their metadata.
    assert table.schema.field("action").type == pa.list_(pa.float32(), 4)
    assert table.schema.field("timestamp").type == pa.float32()
    hf = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert hf["action"] == {
        "feature": {"dtype": "float32", "_type": "Value"},
        "length": 4,
        "_type": "Sequence",
    }
    assert hf["index"] == {"dtype": "int64", "_type": "Value"}
    assert table["index"].to_pylist() == list(range(12, 19))
    assert table["episode_index"].to_pylist() == [1] * 7
    assert table["task_index"].to_pylist() == [1] * 7
    np.testing.assert_allclose(table["timestamp"].to_numpy(), np.arange(7) / 15, atol=1e-6)
    check_episodes_exact(root, LENGTHS)


def test_v30_writer_layout_rollover_and_metadata(tmp_path):
    lengths = (12, 7, 9, 5, 6)
    root = make_v30_dataset(tmp_path / "ds", lengths, **SMALL)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and type(info["fps"]) is int and info["fps"] == 15
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (5, 39, 2)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (
        2,
        0.004,
        0.004,
    )
    assert "total_videos" not in info and "source_timestamp" not in info["features"]
    assert type(info["features"][CAMERAS[0]]["info"]["video.fps"]) is int
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(".tmp") or "/." in f]
    data_files = [f for f in files if f.startswith("data/")]
    assert len(data_files) >= 3 and any(f.startswith("data/chunk-001/") for f in data_files)
    assert len([f for f in files if f.startswith(f"videos/{CAMERAS[0]}/")]) >= 2
    # meta/episodes as LeRobot writes it: one row per episode, location columns then statistics.
    tables = [pq.read_table(root / f) for f in files if f.startswith("meta/episodes/")]
    rows = [r for t in tables for r in t.to_pylist()]
    assert [r["episode_index"] for r in rows] == list(range(5))
    schema = tables[0].schema
    assert schema.names[:7] == [
        "episode_index",
        "tasks",
        "length",
        "data/chunk_index",
        "data/file_index",
        "dataset_from_index",
        "dataset_to_index",
    ]
    assert schema.names[-2:] == ["meta/episodes/chunk_index", "meta/episodes/file_index"]
    assert schema.field("tasks").type == pa.list_(pa.string()) and schema.field("length").type == pa.int64()
    assert schema.field(f"videos/{CAMERAS[0]}/from_timestamp").type == pa.float64()
    stat_keys = ["min", "max", "mean", "std", "count", *QUANTILE_KEYS]
    for key in ("observation.state", "action", CAMERAS[0], "timestamp", "frame_index", "index", "task_index"):
        assert [n.rsplit("/", 1)[1] for n in schema.names if n.startswith(f"stats/{key}/")] == stat_keys
    assert schema.field(f"stats/{CAMERAS[0]}/mean").type == pa.list_(pa.list_(pa.list_(pa.float64())))
    assert schema.field("stats/frame_index/min").type == pa.list_(pa.int64())
    starts = np.cumsum((0, *lengths))
    for r, n, start in zip(rows, lengths, starts, strict=False):
        assert (r["length"], r["dataset_from_index"], r["dataset_to_index"]) == (n, start, start + n)
        for key in CAMERAS:
            assert r[f"videos/{key}/to_timestamp"] - r[f"videos/{key}/from_timestamp"] == pytest.approx(
                n / 15
            )
        assert r["stats/action/count"] == [n]
    # The aggregate in meta/stats.json: count-weighted, over all frames.
    stats = json.loads((root / "meta/stats.json").read_text())
    assert stats["action"]["count"] == [39]
    all_actions = np.concatenate([episode_arrays(e, n)["action"] for e, n in enumerate(lengths)])
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], all_actions.std(0), rtol=1e-5)
    # tasks.parquet: the pandas layout LeRobot's write_tasks produces.
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column_names == ["task_index", "__index_level_0__"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["__index_level_0__"]
    ds = check_episodes_exact(root, lengths)
    assert ds.tasks == {0: "pick up the cube", 1: "fold the towel"}
    assert len({ds.episode(e).data_file for e in range(5)}) == len(data_files)


def test_v30_files_shared_below_the_limits(tmp_path):
    """With LeRobot's default limits every episode goes into the same data and video files."""
    root = make_v30_dataset(tmp_path / "ds", (5, 6, 4))
    ds = LeRobotDataset(root)
    assert {ds.episode(e).data_file.name for e in range(3)} == {"file-000.parquet"}
    assert [ds.episode(e).video_offsets[CAMERAS[0]] for e in range(3)] == pytest.approx(
        [0.0, 5 / 15, 11 / 15]
    )
    data = ds.read_episode(2, ["observation.state", "action"])
    np.testing.assert_array_equal(data.columns["observation.state"], episode_arrays(2, 4)["state"])
    last = ds.read_frames(2, CAMERAS[0], [3 / 15])
    np.testing.assert_array_equal(last[0], episode_arrays(2, 4)["frames"][CAMERAS[0]][3])


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_writer_appends_to_a_reopened_dataset(tmp_path, version):
    root = tmp_path / "ds"
    make = make_v21_dataset if version == "v2.1" else make_v30_dataset
    make(root, LENGTHS)
    writer = open_writer(root, 15, "synthetic_arm", CAMERAS, NAMES, NAMES, video_codec="h264_lossless")
    assert writer.version == version and writer.num_episodes == 2  # an existing dataset keeps its format
    arrays = episode_arrays(2, 9)
    index = writer.add_episode(
        arrays["frames"], arrays["state"], arrays["action"], arrays["timestamps"], arrays["task"]
    )
    assert index == 2
    ds = check_episodes_exact(root, (*LENGTHS, 9))
    assert ds.total_frames == 28 and ds.tasks == {0: "pick up the cube", 1: "fold the towel"}
    if version == "v3.0":  # a reopened dataset continues in new files, as LeRobot does on resume
        assert ds.episode(2).data_file != ds.episode(1).data_file
        assert ds.episode(2).video_offsets[CAMERAS[0]] == 0.0
    with pytest.raises(ValueError, match="fps"):
        open_writer(root, 30, "synthetic_arm", CAMERAS, NAMES, NAMES)
    with pytest.raises(ValueError, match="names"):
        open_writer(root, 15, "synthetic_arm", CAMERAS, NAMES, ("a", "b", "c", "d"))
    other = "v3.0" if version == "v2.1" else "v2.1"
    with pytest.raises(DatasetError, match=f"cannot append {other}"):
        open_writer(root, 15, "synthetic_arm", CAMERAS, NAMES, NAMES, version=other)


def test_v21_reader_ignores_uncommitted_metadata_lines(tmp_path):
    root = make_v21_dataset(tmp_path / "ds", LENGTHS)
    # Metadata lines of an episode whose info.json update never happened must be ignored.
    with (root / "meta/episodes.jsonl").open("a") as f:
        f.write(json.dumps({"episode_index": 2, "tasks": ["ghost"], "length": 99}) + "\n")
    assert LeRobotDataset(root).episode_indices == [0, 1]
    writer = LeRobotV21Writer(root, 15, "synthetic_arm", CAMERAS, NAMES, NAMES, video_codec="h264_lossless")
    arrays = episode_arrays(2, 9)
    writer.add_episode(
        arrays["frames"], arrays["state"], arrays["action"], arrays["timestamps"], arrays["task"]
    )
    check_episodes_exact(root, (*LENGTHS, 9))


def test_new_datasets_are_v30_and_v21_is_an_option(tmp_path):
    assert open_writer(tmp_path / "a", 15, "r", CAMERAS, NAMES, NAMES).version == "v3.0"
    assert open_writer(tmp_path / "b", 15, "r", CAMERAS, NAMES, NAMES, version="v2.1").version == "v2.1"
    with pytest.raises(ValueError, match="choose v3.0"):
        open_writer(tmp_path / "c", 15, "r", CAMERAS, NAMES, NAMES, version="v2.0")


def test_fps_must_be_a_whole_number(tmp_path):
    assert integer_fps(15) == 15 and integer_fps(15.0) == 15 and integer_fps("30") == 30
    for bad in (29.97, 15.5, 0, -15, "fast", None, True, float("nan")):
        with pytest.raises(ValueError, match="whole number of frames per second"):
            integer_fps(bad, "--fps")
    with pytest.raises(ValueError, match="writer fps: 14.985"):
        open_writer(tmp_path / "ds", 14.985, "r", CAMERAS, NAMES, NAMES)
    # A dataset whose info.json has a fractional fps is refused by the reader, naming the file.
    root = make_v21_dataset(tmp_path / "ds21", (4,))
    info = json.loads((root / "meta/info.json").read_text())
    info["fps"] = 14.985
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"info.json: fps: 14.985"):
        LeRobotDataset(root)


@pytest.mark.parametrize("writer_class", [LeRobotV21Writer, LeRobotV30Writer])
def test_writer_rejects_bad_episodes(tmp_path, writer_class):
    writer = writer_class(tmp_path / "ds", 15, "r", CAMERAS, NAMES, NAMES)
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
    if version == "v2.1":
        root = make_v21_dataset(tmp_path / "ds", LENGTHS)
    else:
        root = make_v30_dataset(tmp_path / "ds", LENGTHS, **SMALL)
    ds = LeRobotDataset(root)
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
    # Three episodes in one v3.0 video file: the remuxed file decodes like its parts.
    ds = LeRobotDataset(make_v30_dataset(tmp_path / "ds", (10, 6, 8), codec=codec))
    assert ds.features[CAMERAS[1]]["info"]["video.codec"] == codec
    for e, n in enumerate((10, 6, 8)):
        src = episode_arrays(e, n)["frames"][CAMERAS[1]]
        picks = [n - 1, 0, n // 2]
        frames = ds.read_frames(e, CAMERAS[1], np.array(picks) / 15)
        diff = np.abs(frames.astype(np.int16) - src[picks].astype(np.int16))
        assert diff.mean() < 2.0 and diff.max() < 40


def test_legacy_source_timestamp_feature_is_kept_when_appending(tmp_path):
    """v2.1 datasets written before the sidecar declare `source_timestamp` as a float64 feature:
    appending keeps writing the column (every file of a dataset has the same columns)."""
    root = make_v21_dataset(tmp_path / "ds", (6,))
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["source_timestamp"] = {"dtype": "float64", "shape": [1], "names": None}
    (root / "meta/info.json").write_text(json.dumps(info))
    path = root / "data/chunk-000/episode_000000.parquet"
    table = pq.read_table(path)
    table = table.append_column("source_timestamp", pa.array(episode_arrays(0, 6)["timestamps"]))
    pq.write_table(table, path)
    writer = LeRobotV21Writer(root, 15, "synthetic_arm", CAMERAS, NAMES, NAMES, video_codec="h264_lossless")
    arrays = episode_arrays(1, 5)
    writer.add_episode(
        arrays["frames"], arrays["state"], arrays["action"], arrays["timestamps"], arrays["task"]
    )
    written = pq.read_table(root / "data/chunk-000/episode_000001.parquet")
    np.testing.assert_allclose(written["source_timestamp"].to_numpy(), arrays["timestamps"])
    assert not (root / "meta/fastwam_source_timestamps/data/chunk-000/episode_000001.parquet").exists()
    check_episodes_exact(root, (6, 5))


def test_bag_converter_refuses_a_fractional_fps_before_writing(tmp_path):
    from pathlib import Path

    from fastwam.data.bag import convert_bags
    from fastwam.robot_config import load_robot_config

    repo = Path(__file__).resolve().parents[2]
    config = load_robot_config(repo / "ros2_ws/src/fastwam_policy/config/r1_lite.yaml")
    with pytest.raises(ValueError, match=r"--fps.*14.5 is not a whole number of frames per second"):
        convert_bags([], tmp_path / "ds", config, fps=14.5)
    assert not (tmp_path / "ds").exists()


def test_extra_columns_round_trip_and_must_stay_the_same(tmp_path):
    writer = LeRobotV30Writer(tmp_path / "ds", 15, "r", CAMERAS, NAMES, NAMES, video_codec="h264_lossless")
    a, b = episode_arrays(0, 6), episode_arrays(1, 5)
    grip = np.linspace(0, 1, 6)
    writer.add_episode(
        a["frames"], a["state"], a["action"], a["timestamps"], a["task"], extra={"effort": grip}
    )
    with pytest.raises(
        ValueError, match=r"episode 1: extra columns \[\] differ from the dataset's \['effort'\]"
    ):
        writer.add_episode(b["frames"], b["state"], b["action"], b["timestamps"], b["task"])
    writer.add_episode(
        b["frames"], b["state"], b["action"], b["timestamps"], b["task"], extra={"effort": grip[:5]}
    )
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.features["effort"] == {"dtype": "float32", "shape": [1], "names": None}
    np.testing.assert_allclose(ds.read_episode(1, ["effort"]).columns["effort"][:, 0], grip[:5], rtol=1e-6)
