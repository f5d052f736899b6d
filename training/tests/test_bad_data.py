"""Bad data fails loudly, naming episode and file; nothing is skipped or replaced by another sample."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastwam.camera import CameraLayout
from fastwam.data.lerobot import DatasetError, LeRobotDataset
from fastwam.data.stats import load_or_compute_stats
from fastwam.data.video import encode_video
from fastwam.data.windows import DatasetKeys, WindowDataset, WindowSpec
from fastwam_training.synthetic import CAMERAS, make_v21_dataset

NAMES = ("joint1", "joint2", "joint3", "gripper")
LAYOUT = CameraLayout.row(["front", "wrist"], 32, 32)
KEYS = DatasetKeys({"front": CAMERAS[0], "wrist": CAMERAS[1]}, state_names=NAMES, action_names=NAMES)
SPEC = WindowSpec(action_horizon=4, video_frames=5, video_stride=1)


@pytest.fixture
def root(tmp_path):
    return make_v21_dataset(tmp_path / "ds", (8, 6))


def _windows(root, **kwargs):
    return WindowDataset(LeRobotDataset(root), LAYOUT, KEYS, SPEC, **kwargs)


def _rewrite_parquet(path, fn):
    table = pq.read_table(path)
    pq.write_table(fn(table), path)


def test_corrupt_video_names_episode_and_file(root):
    video = root / f"videos/chunk-000/{CAMERAS[1]}/episode_000001.mp4"
    data = bytearray(video.read_bytes())
    data[len(data) // 3 :] = b"\x00garbage" * ((len(data) - len(data) // 3) // 8) + b"\x00" * (
        (len(data) - len(data) // 3) % 8
    )
    video.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"episode 1.*episode_000001\.mp4"):
        windows = _windows(root, check_videos=False)
        for i in range(len(windows)):  # every sample of episode 1 must fail, none be replaced
            windows[i]


def test_unreadable_video_fails_at_startup(root):
    video = root / f"videos/chunk-000/{CAMERAS[0]}/episode_000000.mp4"
    video.write_bytes(b"not a video at all")
    with pytest.raises(DatasetError, match=rf"episode 0, camera '{CAMERAS[0]}'.*episode_000000\.mp4"):
        _windows(root)


def test_missing_video(root):
    (root / f"videos/chunk-000/{CAMERAS[0]}/episode_000001.mp4").unlink()
    with pytest.raises(DatasetError, match=r"episode 1.*video file not found.*episode_000001\.mp4"):
        _windows(root)


def test_video_shorter_than_episode(root):
    video = root / f"videos/chunk-000/{CAMERAS[0]}/episode_000000.mp4"
    encode_video(video, np.zeros((5, 32, 32, 3), np.uint8), 15, "h264_lossless")
    with pytest.raises(DatasetError, match=r"episode 0.*episode_000000\.mp4.*5 frames.*needs 8"):
        _windows(root)
    # Without the start-up check the missing frames are still an error when a sample needs them.
    windows = _windows(root, check_videos=False)
    with pytest.raises(DatasetError, match=r"episode 0.*no frame at t="):
        windows[4]


def test_missing_column(root):
    path = root / "data/chunk-000/episode_000001.parquet"
    _rewrite_parquet(path, lambda t: t.drop_columns(["action"]))
    with pytest.raises(
        DatasetError, match=r"episode 1 \(.*episode_000001\.parquet\): missing columns \['action'\]"
    ):
        _windows(root)


def test_nan_in_state(root):
    path = root / "data/chunk-000/episode_000000.parquet"

    def poison(table):
        rows = table["observation.state"].to_pylist()
        rows[5][2] = float("nan")
        index = table.schema.get_field_index("observation.state")
        return table.set_column(index, "observation.state", pa.array(rows, pa.list_(pa.float32())))

    _rewrite_parquet(path, poison)
    with pytest.raises(
        DatasetError,
        match=r"episode 0 .*episode_000000\.parquet.*'observation.state'.*non-finite.*frame 5, dim 2",
    ):
        _windows(root)


def test_length_mismatch(root):
    path = root / "meta/episodes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["length"] = 9
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        DatasetError,
        match=r"episode 1 .*episode_000001\.parquet.*6 rows but the episode metadata says length 9",
    ):
        _windows(root)


def test_ragged_vector_column(root):
    path = root / "data/chunk-000/episode_000000.parquet"

    def ragged(table):
        rows = table["action"].to_pylist()
        rows[2] = rows[2][:3]
        return table.set_column(
            table.schema.get_field_index("action"), "action", pa.array(rows, pa.list_(pa.float32()))
        )

    _rewrite_parquet(path, ragged)
    with pytest.raises(DatasetError, match=r"episode 0 .*'action' has rows of different lengths"):
        _windows(root)


def test_feature_missing_from_dataset(root):
    keys = DatasetKeys(
        {"front": CAMERAS[0], "wrist": "observation.images.top"}, state_names=NAMES, action_names=NAMES
    )
    with pytest.raises(
        DatasetError, match=r"info\.json.*camera feature 'observation.images.top' \(for 'wrist'\) missing"
    ):
        WindowDataset(LeRobotDataset(root), LAYOUT, keys, SPEC)
    keys = DatasetKeys(dict(KEYS.cameras), state="observation.joints", state_names=NAMES, action_names=NAMES)
    with pytest.raises(DatasetError, match=r"state feature 'observation.joints' missing"):
        WindowDataset(LeRobotDataset(root), LAYOUT, keys, SPEC)


def test_config_joint_names_must_match(root):
    names = ("joint1", "joint3", "joint2", "gripper")
    keys = DatasetKeys(dict(KEYS.cameras), state_names=NAMES, action_names=names)
    with pytest.raises(
        DatasetError, match=r"action feature 'action' joint names .* differ from the config's"
    ):
        WindowDataset(LeRobotDataset(root), LAYOUT, keys, SPEC)
    keys = DatasetKeys(dict(KEYS.cameras), state_names=NAMES, action_names=NAMES[:3])
    with pytest.raises(DatasetError, match=r"has 4 dims, the config names 3 joints"):
        WindowDataset(LeRobotDataset(root), LAYOUT, keys, SPEC)


def test_camera_layout_key_without_dataset_feature(root):
    layout = CameraLayout.row(["front", "wrist", "top"], 32, 32)
    with pytest.raises(ValueError, match=r"layout keys \['top'\] have no dataset feature"):
        WindowDataset(LeRobotDataset(root), layout, KEYS, SPEC)


def test_missing_metadata_files(root):
    (root / "meta/tasks.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"tasks\.jsonl: missing"):
        LeRobotDataset(root)
    with pytest.raises(DatasetError, match="no meta/info.json"):
        LeRobotDataset(root / "nowhere")


def test_stats_are_loaded_not_recomputed_and_checked(root):
    ds = LeRobotDataset(root)
    stats, path = load_or_compute_stats(ds, KEYS, progress=False)
    assert path == root / "meta/fastwam_stats.json" and stats["action"].count == 14
    np.testing.assert_allclose(
        stats["action"].q99,
        np.percentile(
            ds.read_episode(0, ["action"]).columns["action"].tolist()
            + ds.read_episode(1, ["action"]).columns["action"].tolist(),
            99,
            axis=0,
        ),
        rtol=1e-5,
    )
    # A stale file (here: edited mean) is loaded as is, never silently recomputed ...
    data = json.loads(path.read_text())
    data["action"]["mean"] = [9.0] * 4
    path.write_text(json.dumps(data))
    assert load_or_compute_stats(ds, KEYS, progress=False)[0]["action"].mean.tolist() == [9.0] * 4
    # ... unless asked explicitly.
    assert (
        load_or_compute_stats(ds, KEYS, recompute=True, progress=False)[0]["action"].mean.tolist()
        != [9.0] * 4
    )
    # Statistics of another dataset (wrong dims or frame count) are an error.
    data = json.loads(path.read_text())
    data["action"] = {k: (v[:3] if isinstance(v, list) else v) for k, v in data["action"].items()}
    path.write_text(json.dumps(data))
    with pytest.raises(
        DatasetError, match=r"fastwam_stats\.json.*'action' statistics have 3 dims.*recompute"
    ):
        load_or_compute_stats(ds, KEYS, progress=False)
    data = json.loads(path.read_text())
    load_or_compute_stats(ds, KEYS, recompute=True, progress=False)
    data = json.loads(path.read_text())
    data["state"]["count"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="cover 99 frames, the dataset has 14"):
        load_or_compute_stats(ds, KEYS, progress=False)
