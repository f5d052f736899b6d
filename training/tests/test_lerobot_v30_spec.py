"""Reading v3.0 datasets laid out exactly as LeRobot 0.4 writes them (not as our writer does).

The fixture below is built by hand from LeRobot's source (huggingface/lerobot, src/lerobot/datasets),
independently of our writer:
- info.json: utils.py `create_empty_dataset_info` (v3.0 fields: chunks_size, data_files_size_in_mb,
  video_files_size_in_mb, data_path, video_path; fps an int) and `DEFAULT_FEATURES`; the video
  feature's `info` block as video_utils.py `get_video_info` fills it.
- data/chunk-XXX/file-YYY.parquet: lerobot_dataset.py `_save_episode_data` appends each episode's
  `datasets` table (utils.py `get_hf_features_from_features`: shape (1,) -> Value, (D,) ->
  Sequence(length=D) = fixed_size_list) to the current file until `data_files_size_in_mb`, then
  `update_chunk_file_indices` moves to the next file, and to the next chunk after `chunks_size`.
- videos/<key>/chunk-XXX/file-YYY.mp4: `_save_episode_video` concatenates episodes into a file per
  camera with its own rollover; each episode's from_timestamp / to_timestamp in that file.
- meta/episodes/chunk-XXX/file-YYY.parquet: `LeRobotDatasetMetadata.save_episode` /
  `_save_episode_metadata` rows (episode_index, tasks, length, data/*, dataset_from/to_index,
  videos/<key>/*, stats/<feature>/<stat>, meta/episodes/*) written with pa.Table.from_pydict.
- meta/tasks.parquet: `save_episode_tasks` builds pd.DataFrame({"task_index": ...}, index=tasks)
  and utils.py `write_tasks` calls DataFrame.to_parquet: column task_index (int64) and the index
  "__index_level_0__", which pandas 3 writes as large_string (what LeRobot 0.4.4 produced on the
  machine of issue 20). data/lerobot_tasks_pandas3.parquet and data/lerobot_tasks_pandas2.parquet
  are those two lines run by real pandas (3.1.1 and 2.2.3, pyarrow 26.0.1):
      tasks = ["pick up the cube", "fold the towel"]
      pd.DataFrame({"task_index": range(len(tasks))}, index=tasks).to_parquet(path)
- the `huggingface` schema metadata as `datasets` 4.1.1 (LeRobot 0.4 requires datasets>=4) writes
  it for a Sequence(length=4) feature: {"feature": {...}, "length": 4, "_type": "List"} (checked
  with datasets 4.1.1's Dataset.from_dict(..., features=...).with_format("arrow")).
Each camera's file is encoded in one go here (LeRobot stream-copies per-episode mp4s together; the
frame times are the same), with the lossless codec so that every decoded pixel can be compared.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastwam.camera import CameraLayout
from fastwam.data.lerobot import DatasetError, LeRobotDataset
from fastwam.data.video import encode_video
from fastwam.data.windows import DatasetKeys, WindowDataset, WindowSpec
from fastwam_training.synthetic import CAMERAS, episode_arrays

FPS = 15
NAMES = ["joint1", "joint2", "joint3", "gripper"]
LENGTHS = (6, 5, 7, 4, 6)
# The task of each episode, as a task_index into TASKS (the table lists them out of index order).
TASKS = {1: "fold the towel", 0: "pick up the cube"}
EPISODE_TASK = (0, 1, 1, 0, 1)
# Which (chunk, file) holds each episode, chosen as LeRobot's rollover would with chunks_size=2:
# several episodes per file, files spread over chunks, cameras rolled over independently.
DATA_FILES = ((0, 0), (0, 0), (0, 1), (1, 0), (1, 0))
VIDEO_FILES = {
    CAMERAS[0]: ((0, 0), (0, 0), (0, 0), (0, 1), (0, 1)),
    CAMERAS[1]: ((0, 0),) * 2 + ((0, 1),) * 3,
}
META_FILES = ((0, 0), (0, 0), (0, 0), (0, 1), (0, 1))


def text_type(name: str) -> pa.DataType:
    kinds = {"string": pa.string(), "large_string": pa.large_string(), "string_view": pa.string_view()}
    return kinds.get(name, pa.string())


DATA = Path(__file__).with_name("data")


def write_lerobot_v30(root, task_column="__index_level_0__", task_type="large_string"):
    root.mkdir(parents=True)
    episodes = [episode_arrays(e, n) for e, n in enumerate(LENGTHS)]
    starts = np.cumsum((0, *LENGTHS))
    # data files
    features = {
        "observation.state": {"dtype": "float32", "shape": [4], "names": NAMES},
        "action": {"dtype": "float32", "shape": [4], "names": NAMES},
    }
    hf = {
        key: {"feature": {"dtype": "float32", "_type": "Value"}, "length": 4, "_type": "List"}
        for key in features
    }
    scalars = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64"}
    scalars["task_index"] = "int64"
    hf.update({key: {"dtype": dtype, "_type": "Value"} for key, dtype in scalars.items()})
    schema = pa.schema(
        [pa.field(k, pa.list_(pa.float32(), 4)) for k in features]
        + [pa.field(k, pa.from_numpy_dtype(np.dtype(d))) for k, d in scalars.items()],
        metadata={b"huggingface": json.dumps({"info": {"features": hf}}).encode()},
    )
    for chunk_file in sorted(set(DATA_FILES)):
        rows = [e for e, where in enumerate(DATA_FILES) if where == chunk_file]
        columns = {
            "observation.state": np.concatenate([episodes[e]["state"] for e in rows]),
            "action": np.concatenate([episodes[e]["action"] for e in rows]),
            # add_frame: timestamp = frame_index / fps
            "timestamp": np.concatenate([np.arange(LENGTHS[e]) / FPS for e in rows]).astype(np.float32),
            "frame_index": np.concatenate([np.arange(LENGTHS[e]) for e in rows]),
            "episode_index": np.concatenate([np.full(LENGTHS[e], e) for e in rows]),
            "index": np.concatenate([np.arange(starts[e], starts[e + 1]) for e in rows]),
            "task_index": np.concatenate([np.full(LENGTHS[e], EPISODE_TASK[e]) for e in rows]),
        }
        arrays = [
            pa.FixedSizeListArray.from_arrays(
                pa.array(columns[k].reshape(-1)), type=pa.list_(pa.float32(), 4)
            )
            for k in features
        ] + [pa.array(columns[k].astype(np.dtype(d))) for k, d in scalars.items()]
        path = root / "data/chunk-{:03d}/file-{:03d}.parquet".format(*chunk_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)
    # video files (per camera, episodes back to back) and the episodes' offsets in them
    offsets = {}
    for key, placement in VIDEO_FILES.items():
        for chunk_file in sorted(set(placement)):
            rows = [e for e, where in enumerate(placement) if where == chunk_file]
            clip = np.concatenate([episodes[e]["frames"][key] for e in rows])
            path = root / "videos/{}/chunk-{:03d}/file-{:03d}.mp4".format(key, *chunk_file)
            encode_video(path, clip, FPS, "h264_lossless")
            t = 0.0
            for e in rows:
                offsets[key, e] = (t, t + LENGTHS[e] / FPS)
                t += LENGTHS[e] / FPS
    # meta/episodes rows, in save_episode's key order
    meta_rows = []
    for e, n in enumerate(LENGTHS):
        row = {"episode_index": e, "tasks": [TASKS[EPISODE_TASK[e]]], "length": n}
        row.update(
            {
                "data/chunk_index": DATA_FILES[e][0],
                "data/file_index": DATA_FILES[e][1],
                "dataset_from_index": int(starts[e]),
                "dataset_to_index": int(starts[e + 1]),
            }
        )
        for key in CAMERAS:
            row[f"videos/{key}/chunk_index"] = VIDEO_FILES[key][e][0]
            row[f"videos/{key}/file_index"] = VIDEO_FILES[key][e][1]
            row[f"videos/{key}/from_timestamp"], row[f"videos/{key}/to_timestamp"] = offsets[key, e]
        action = episodes[e]["action"]
        row.update(
            {
                "stats/action/min": action.min(0).tolist(),
                "stats/action/max": action.max(0).tolist(),
                "stats/action/mean": action.mean(0).tolist(),
                "stats/action/std": action.std(0).tolist(),
                "stats/action/count": [n],
            }
        )
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = META_FILES[e]
        meta_rows.append(row)
    for chunk_file in sorted(set(META_FILES)):
        rows = [r for r, where in zip(meta_rows, META_FILES, strict=True) if where == chunk_file]
        path = root / "meta/episodes/chunk-{:03d}/file-{:03d}.parquet".format(*chunk_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pydict({k: [r[k] for r in rows] for k in rows[0]}), path)
    # tasks.parquet, as pandas 3 writes LeRobot's tasks frame
    pandas_meta = {
        "index_columns": [task_column],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64"},
            {
                "name": None if task_column == "__index_level_0__" else task_column,
                "field_name": task_column,
                "pandas_type": "unicode",
                "numpy_type": "str",
            },
        ],
        "pandas_version": "3.0.0",
    }
    table = pa.table(
        {
            "task_index": pa.array(list(TASKS), pa.int64()),
            task_column: pa.array(list(TASKS.values()), text_type(task_type)),
        },
        schema=pa.schema(
            [pa.field("task_index", pa.int64()), pa.field(task_column, text_type(task_type))],
            metadata={b"pandas": json.dumps(pandas_meta).encode()},
        ),
    )
    pq.write_table(table, root / "meta/tasks.parquet")
    if task_type.startswith("pandas"):  # the file real pandas wrote (same two tasks, same indices)
        shutil.copyfile(DATA / f"lerobot_tasks_{task_type}.parquet", root / "meta/tasks.parquet")
    video_info = {
        "video.height": 32,
        "video.width": 32,
        "video.codec": "h264",
        "video.pix_fmt": "gbrp",
        "video.is_depth_map": False,
        "video.fps": FPS,
        "video.channels": 3,
        "has_audio": False,
    }
    info = {
        "codebase_version": "v3.0",
        "robot_type": "synthetic_arm",
        "total_episodes": len(LENGTHS),
        "total_frames": int(starts[-1]),
        "total_tasks": len(TASKS),
        "chunks_size": 2,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": FPS,
        "splits": {"train": f"0:{len(LENGTHS)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            **features,
            **{
                key: {
                    "dtype": "video",
                    "shape": [32, 32, 3],
                    "names": ["height", "width", "channels"],
                    "info": video_info,
                }
                for key in CAMERAS
            },
            **{key: {"dtype": dtype, "shape": [1], "names": None} for key, dtype in scalars.items()},
        },
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return root


@pytest.mark.parametrize(
    "task_column, task_type",
    [
        ("__index_level_0__", "pandas3"),  # written by pandas 3.1.1 (large_string)
        ("__index_level_0__", "pandas2"),  # written by pandas 2.2.3 (string)
        ("__index_level_0__", "large_string"),  # pandas 3 (LeRobot 0.4.4 as issue 20 found it)
        ("__index_level_0__", "string"),  # pandas 2
        ("__index_level_0__", "string_view"),
        ("task", "large_string"),  # a named index
    ],
)
def test_lerobot_written_v30_reads_frame_by_frame(tmp_path, task_column, task_type):
    root = write_lerobot_v30(tmp_path / "ds", task_column, task_type)
    ds = LeRobotDataset(root)
    assert ds.version == "v3.0" and ds.fps == FPS and ds.episode_indices == list(range(len(LENGTHS)))
    assert ds.tasks == {0: "pick up the cube", 1: "fold the towel"}
    assert ds.total_frames == sum(LENGTHS)
    for e, n in enumerate(LENGTHS):
        src = episode_arrays(e, n)
        record = ds.episode(e)
        assert record.data_file.relative_to(
            root
        ).as_posix() == "data/chunk-{:03d}/file-{:03d}.parquet".format(*DATA_FILES[e])
        data = ds.read_episode(e, ["observation.state", "action"])
        np.testing.assert_array_equal(data.columns["observation.state"], src["state"])
        np.testing.assert_array_equal(data.columns["action"], src["action"])
        assert [ds.tasks[int(t)] for t in data.task_index] == [TASKS[EPISODE_TASK[e]]] * n
        for key in CAMERAS:
            frames = ds.read_frames(e, key, data.timestamps)
            np.testing.assert_array_equal(frames, src["frames"][key])  # every pixel of every frame
    ds.check_videos()
    # and through the training windows
    layout = CameraLayout.row(["front", "wrist"], 32, 32)
    keys = DatasetKeys(
        {"front": CAMERAS[0], "wrist": CAMERAS[1]}, state_names=tuple(NAMES), action_names=tuple(NAMES)
    )
    windows = WindowDataset(ds, layout, keys, WindowSpec(action_horizon=4, video_frames=1, video_stride=1))
    sample = windows[int(np.cumsum(LENGTHS)[2]) + 1]  # episode 3, frame 1: second data chunk
    assert (sample["episode_index"], sample["frame_index"]) == (3, 1)
    np.testing.assert_array_equal(sample["action"].numpy(), episode_arrays(3, 4)["action"][[1, 2, 3, 3]])
    assert sample["instruction"] == "pick up the cube"


def test_tasks_parquet_without_task_strings_is_refused(tmp_path):
    root = write_lerobot_v30(tmp_path / "ds")
    pq.write_table(pa.table({"task_index": pa.array([0, 1], pa.int64())}), root / "meta/tasks.parquet")
    with pytest.raises(DatasetError, match="tasks.parquet: expected one column of task strings"):
        LeRobotDataset(root)


def test_episodes_past_total_episodes_are_not_read(tmp_path):
    """Rows of an episode whose info.json update never happened (a writer killed mid-commit)."""
    root = write_lerobot_v30(tmp_path / "ds")
    info = json.loads((root / "meta/info.json").read_text())
    info["total_episodes"] = 4
    (root / "meta/info.json").write_text(json.dumps(info))
    ds = LeRobotDataset(root)
    assert ds.episode_indices == [0, 1, 2, 3]
    data = ds.read_episode(3, ["action"])  # shares its data file with the uncommitted episode 4
    np.testing.assert_array_equal(data.columns["action"], episode_arrays(3, 4)["action"])


def test_our_writer_writes_the_layout_lerobot_writes(tmp_path):
    """Our v3.0 writer's files against the LeRobot-layout fixture: the same info.json, data-file
    schema (types and `huggingface` metadata), episode-metadata columns and types, tasks layout."""
    from fastwam_training.synthetic import make_v30_dataset

    spec = write_lerobot_v30(tmp_path / "spec", "__index_level_0__", "string")
    ours = make_v30_dataset(tmp_path / "ours", LENGTHS, chunks_size=2)
    info_spec, info_ours = (json.loads((r / "meta/info.json").read_text()) for r in (spec, ours))
    assert set(info_spec) == set(info_ours)
    assert info_ours["features"] == info_spec["features"]
    for key in ("codebase_version", "fps", "chunks_size", "data_path", "video_path"):
        assert info_ours[key] == info_spec[key] and type(info_ours[key]) is type(info_spec[key])
    data_spec, data_ours = (pq.read_schema(r / "data/chunk-000/file-000.parquet") for r in (spec, ours))
    assert data_ours.equals(data_spec, check_metadata=False)
    hf = b"huggingface"
    assert json.loads(data_ours.metadata[hf]) == json.loads(data_spec.metadata[hf])
    meta_spec, meta_ours = (
        pq.read_schema(r / "meta/episodes/chunk-000/file-000.parquet") for r in (spec, ours)
    )
    for name in meta_spec.names:  # the fixture carries the action's stats only; ours every feature's
        assert meta_ours.field(name).type == meta_spec.field(name).type, name
    assert [n for n in meta_ours.names if not n.startswith("stats/")] == meta_spec.names[
        :15
    ] + meta_spec.names[-2:]
    tasks_spec, tasks_ours = (pq.read_table(r / "meta/tasks.parquet") for r in (spec, ours))
    assert tasks_ours.schema.equals(tasks_spec.schema, check_metadata=False)
    pandas = json.loads(tasks_ours.schema.metadata[b"pandas"])
    assert pandas["index_columns"] == ["__index_level_0__"]


def test_we_append_to_a_dataset_lerobot_wrote(tmp_path):
    """Our writer continues a LeRobot-written dataset: new files after LeRobot's last ones (as
    LeRobot does on resume), its tasks kept, every old and new episode read back exactly."""
    from fastwam.data.lerobot import open_writer

    root = write_lerobot_v30(tmp_path / "ds", "__index_level_0__", "pandas3")
    writer = open_writer(root, FPS, "synthetic_arm", CAMERAS, NAMES, NAMES, video_codec="h264_lossless")
    assert writer.version == "v3.0" and writer.num_episodes == len(LENGTHS)
    new = episode_arrays(5, 8)
    new["task"] = "stack the cups"
    assert writer.add_episode(new["frames"], new["state"], new["action"], new["timestamps"], new["task"]) == 5
    ds = LeRobotDataset(root)
    assert ds.tasks == {0: "pick up the cube", 1: "fold the towel", 2: "stack the cups"}
    record = ds.episode(5)
    assert record.data_file.relative_to(root).as_posix() == "data/chunk-001/file-001.parquet"
    assert record.video_files[CAMERAS[0]].relative_to(root).as_posix().endswith("chunk-001/file-000.mp4")
    for e, n in enumerate((*LENGTHS, 8)):
        src = new if e == 5 else episode_arrays(e, n)
        data = ds.read_episode(e, ["action"])
        np.testing.assert_array_equal(data.columns["action"], src["action"])
        np.testing.assert_array_equal(
            ds.read_frames(e, CAMERAS[1], data.timestamps), src["frames"][CAMERAS[1]]
        )
    # LeRobot's stats.json was absent: rebuilt from the episodes' stats columns, then extended
    stats = json.loads((root / "meta/stats.json").read_text())
    assert stats["action"]["count"] == [sum(LENGTHS) + 8]
    everything = np.concatenate(
        [episode_arrays(e, n)["action"] for e, n in enumerate(LENGTHS)] + [new["action"]]
    )
    np.testing.assert_allclose(stats["action"]["mean"], everything.mean(0), rtol=1e-5)
