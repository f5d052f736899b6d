"""LeRobot datasets written as LeRobot writes them: v3.0 (the default for new datasets) and v2.1.

Formats and the reader: fastwam.data.lerobot_reader (its names are importable from here too).
Writers append episode by episode to the dataset at `root`, creating it if it has none; every
episode is committed atomically (fastwam.data.dataset_commit): a writer killed mid-episode leaves
the dataset as of its last complete episode, for our reader and LeRobot's alike.

fps is a whole number (LeRobot stores an int; a fractional rate would be truncated). Per-frame
source times (`timestamps` given to add_episode) are kept in a sidecar,
meta/fastwam_source_timestamps/<data file path>, not as a frame feature: a feature LeRobot's
recorder does not produce stops LeRobot from appending to the dataset (its add_frame checks every
frame against the declared features). Datasets that already declare a `source_timestamp` feature
keep writing it as a column. Statistics are LeRobot's (fastwam.data.lerobot_stats).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fastwam.data.dataset_commit import StagedCommit, recover_interrupted_write
from fastwam.data.lerobot_reader import (
    DEFAULT_CHUNKS_SIZE,
    INDEX_FEATURES,
    SOURCE_TIMESTAMP,
    V21,
    V21_DATA_PATH,
    V21_VIDEO_PATH,
    V30,
    V30_DATA_PATH,
    V30_VIDEO_PATH,
    DatasetError,
    EpisodeData,
    EpisodeRecord,
    LeRobotDataset,
    integer_fps,
    read_json,
    read_jsonl,
    read_v30_tasks,
    source_times_path,
)
from fastwam.data.lerobot_stats import (
    aggregate_stats,
    image_stats,
    stats_from_lists,
    stats_to_lists,
    vector_stats,
)
from fastwam.data.video import VIDEO_CODECS, concat_videos, encode_video

__all__ = [
    "DEFAULT_VERSION",
    "INDEX_FEATURES",
    "V21",
    "V30",
    "DatasetError",
    "EpisodeData",
    "EpisodeRecord",
    "LeRobotDataset",
    "LeRobotV21Writer",
    "LeRobotV30Writer",
    "integer_fps",
    "open_writer",
    "read_v30_tasks",
]

DEFAULT_VERSION = V30
DEFAULT_DATA_FILE_SIZE_IN_MB = 100  # utils.py DEFAULT_DATA_FILE_SIZE_IN_MB
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 500  # utils.py DEFAULT_VIDEO_FILE_SIZE_IN_MB (v3.0 / lerobot 0.4)
V30_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"


def open_writer(
    root: str | os.PathLike[str],
    fps: int,
    robot_type: str,
    camera_keys: Sequence[str],
    state_names: Sequence[str],
    action_names: Sequence[str],
    version: str | None = None,
    **options: Any,
) -> LeRobotV21Writer | LeRobotV30Writer:
    """A writer appending to the dataset at `root`, creating it (as `version`, v3.0 by default).

    An existing dataset keeps its version: asking for another one is an error (convert it with
    LeRobot's converter, lerobot/datasets/v30/convert_dataset_v21_to_v30.py, instead)."""
    info_path = Path(root) / "meta" / "info.json"
    existing = read_json(info_path).get("codebase_version") if info_path.is_file() else None
    if version is not None and version not in (V21, V30):
        raise ValueError(f"dataset format {version!r}: choose {V30} (default) or {V21}")
    if existing is not None and version is not None and existing != version:
        raise DatasetError(f"{info_path}: the dataset is {existing}; cannot append {version} episodes to it")
    chosen = existing or version or DEFAULT_VERSION
    cls = LeRobotV21Writer if chosen == V21 else LeRobotV30Writer
    return cls(root, fps, robot_type, camera_keys, state_names, action_names, **options)


class _EpisodeWriter:
    """What both formats' writers share: checks, frame columns, statistics, the atomic commit."""

    version = ""
    quantile_stats = False
    # How the `huggingface` schema metadata names a fixed-length list: "List" is what `datasets` 4
    # (required by LeRobot 0.4) writes; "Sequence" its older name, which datasets 3 and 4 both read.
    hf_list_type = "Sequence"

    def __init__(
        self,
        root: str | os.PathLike[str],
        fps: int,
        robot_type: str,
        camera_keys: Sequence[str],
        state_names: Sequence[str],
        action_names: Sequence[str],
        video_codec: str = "h264",
        state_key: str = "observation.state",
        action_key: str = "action",
        chunks_size: int = DEFAULT_CHUNKS_SIZE,
    ) -> None:
        if video_codec not in VIDEO_CODECS:
            raise ValueError(f"unknown video codec {video_codec!r}; choose one of {sorted(VIDEO_CODECS)}")
        if not camera_keys or len(set(camera_keys)) != len(camera_keys):
            raise ValueError(f"camera_keys must be non-empty and unique, got {list(camera_keys)}")
        if int(chunks_size) < 1:
            raise ValueError(f"chunks_size must be positive, got {chunks_size}")
        self.root = Path(root)
        self.fps = integer_fps(fps, "writer fps")
        self.robot_type = robot_type
        self.camera_keys = tuple(camera_keys)
        self.state_names = tuple(state_names)
        self.action_names = tuple(action_names)
        self.video_codec = video_codec
        self.state_key = state_key
        self.action_key = action_key
        self.chunks_size = int(chunks_size)
        self._meta = self.root / "meta"
        recover_interrupted_write(self.root)
        self.tasks: dict[str, int] = {}
        if (self._meta / "info.json").is_file():
            self.info = read_json(self._meta / "info.json")
            self._check_existing()
            self._open_existing()
        else:
            self.info = self._new_info()

    @property
    def num_episodes(self) -> int:
        return int(self.info["total_episodes"])

    def add_episode(
        self,
        frames: Mapping[str, np.ndarray],
        state: np.ndarray,
        action: np.ndarray,
        timestamps: np.ndarray,
        task: str,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> int:
        """Write one episode and commit it; returns its episode index.

        frames: camera key -> uint8 RGB [T, H, W, 3]; state [T, S]; action [T, A]; timestamps [T]
        source times in seconds (strictly increasing; kept in the source-time sidecar, while the
        frames' `timestamp` is the video clock i / fps as LeRobot requires); extra: more per-frame
        columns, name -> [T] or [T, D] numbers, written as float32 features: the first episode
        declares them, and every later episode must give the same ones (LeRobot's frames all carry
        every feature).
        """
        index = self.num_episodes
        length, state, action, timestamps, columns = self._check_episode(
            index, frames, state, action, timestamps, extra
        )
        if not task or not isinstance(task, str):
            raise ValueError(f"episode {index}: task must be a non-empty string")
        declared = sorted(self._extra_features())
        if index > 0 and sorted(columns) != declared:
            raise ValueError(
                f"episode {index}: extra columns {sorted(columns)} differ from the dataset's {declared}"
            )
        features = {k: dict(v) for k, v in self.info["features"].items()}
        for key in self.camera_keys:
            self._declare_video(key, frames[key].shape[1], frames[key].shape[2])
        for name, values in columns.items():
            self._declare_vector(name, values.shape[1], None)
        staged = StagedCommit(self.root)
        try:
            self._write_episode(staged, index, length, frames, state, action, timestamps, task, columns)
            staged.commit()
        except BaseException:
            staged.abandon()
            self.info["features"] = features  # nothing of the episode was committed
            raise
        self._committed()
        return index

    def _extra_features(self) -> list[str]:
        builtin = {self.state_key, self.action_key, SOURCE_TIMESTAMP, *INDEX_FEATURES}
        return [
            k for k, ft in self.info["features"].items() if k not in builtin and ft.get("dtype") != "video"
        ]

    # -- per-format parts --------------------------------------------------------------------
    def _new_info(self) -> dict[str, Any]:
        raise NotImplementedError

    def _open_existing(self) -> None:
        raise NotImplementedError

    def _write_episode(self, staged, index, length, frames, state, action, timestamps, task, columns) -> None:
        raise NotImplementedError

    def _committed(self) -> None:
        """Move the in-memory state forward once an episode's files are all in place."""

    # -- shared ------------------------------------------------------------------------------
    def _empty_info(self, layout: dict[str, Any], data_path: str, video_path: str) -> dict[str, Any]:
        """A new dataset's info.json in the order of LeRobot's create_empty_dataset_info (utils.py):
        version, robot, the zero totals, the version's file `layout` fields, fps, splits, the path
        templates, features."""
        return {
            "codebase_version": self.version,
            "robot_type": self.robot_type,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": 0,
            **layout,
            "fps": self.fps,
            "splits": {},
            "data_path": data_path,
            "video_path": video_path,
            "features": self._base_features(),
        }

    def _info_with_episode(self, index: int, total_frames: int, tasks: int, **totals: int) -> dict[str, Any]:
        """info.json once episode `index` (the last) is in: the totals both versions keep, the
        version's own `totals`, the train split."""
        info = dict(self.info)
        info.update(
            total_episodes=index + 1,
            total_frames=total_frames,
            total_tasks=tasks,
            splits={"train": f"0:{index + 1}"},
            **totals,
        )
        return info

    def _base_features(self) -> dict[str, Any]:
        return {
            self.state_key: {
                "dtype": "float32",
                "shape": [len(self.state_names)],
                "names": list(self.state_names),
            },
            self.action_key: {
                "dtype": "float32",
                "shape": [len(self.action_names)],
                "names": list(self.action_names),
            },
            **{k: dict(v) for k, v in INDEX_FEATURES.items()},
        }

    def _check_existing(self) -> None:
        where = self._meta / "info.json"
        info = self.info
        if info.get("codebase_version") != self.version:
            raise DatasetError(
                f"{where}: this writer appends to {self.version} datasets, this is {info.get('codebase_version')}"
            )
        try:
            have_fps = integer_fps(info.get("fps"), f"{where}: fps")
        except ValueError as error:
            raise DatasetError(str(error)) from error
        if have_fps != self.fps:
            raise DatasetError(f"{where}: dataset fps is {info['fps']}, writer fps {self.fps}")
        features = info["features"]
        for key, names in ((self.state_key, self.state_names), (self.action_key, self.action_names)):
            have = features.get(key, {}).get("names")
            if have != list(names):
                raise DatasetError(
                    f"{where}: feature {key!r} names {have} differ from the writer's {list(names)}"
                )
        videos = sorted(k for k, f in features.items() if f.get("dtype") == "video")
        if videos and videos != sorted(self.camera_keys):
            raise DatasetError(
                f"{where}: dataset cameras {videos} differ from the writer's {sorted(self.camera_keys)}"
            )
        self.chunks_size = int(info.get("chunks_size", self.chunks_size))

    def _frame_table(
        self, index, first_frame, length, state, action, columns, task_index, sources
    ) -> pa.Table:
        """The episode's rows, one column per non-video feature in info.json's order, typed as
        LeRobot's `datasets` features make them: shape [1] -> a scalar column, shape [D] ->
        fixed_size_list<D> (utils.py get_hf_features_from_features), with the `huggingface`
        schema metadata that `datasets` writes."""
        values: dict[str, np.ndarray] = {
            self.state_key: state,
            self.action_key: action,
            **columns,
            SOURCE_TIMESTAMP: sources,
            "timestamp": (np.arange(length) / self.fps).astype(np.float32),
            "frame_index": np.arange(length, dtype=np.int64),
            "episode_index": np.full(length, index, dtype=np.int64),
            "index": np.arange(first_frame, first_frame + length, dtype=np.int64),
            "task_index": np.full(length, task_index, dtype=np.int64),
        }
        arrays, fields, hf = [], [], {}
        for key, ft in self.info["features"].items():
            if ft["dtype"] in ("video", "image"):
                continue
            dtype = np.dtype(ft["dtype"])
            data = np.asarray(values[key]).astype(dtype)
            if list(ft["shape"]) == [1]:
                array = pa.array(data.reshape(length))
                hf[key] = {"dtype": ft["dtype"], "_type": "Value"}
            else:
                width = int(np.prod(ft["shape"]))
                array = pa.FixedSizeListArray.from_arrays(
                    pa.array(data.reshape(-1)), type=pa.list_(pa.from_numpy_dtype(dtype), width)
                )
                hf[key] = {
                    "feature": {"dtype": ft["dtype"], "_type": "Value"},
                    "length": width,
                    "_type": self.hf_list_type,
                }
            arrays.append(array)
            fields.append(pa.field(key, array.type))
        schema = pa.schema(fields, metadata={b"huggingface": json.dumps({"info": {"features": hf}}).encode()})
        return pa.Table.from_arrays(arrays, schema=schema)

    def _episode_stats(
        self, table: pa.Table, frames: Mapping[str, np.ndarray]
    ) -> dict[str, dict[str, np.ndarray]]:
        """LeRobot's per-episode statistics of every feature, in info.json's order
        (compute_stats.py compute_episode_stats; lerobot_stats.py says how)."""
        stats = {}
        for key, ft in self.info["features"].items():
            if ft["dtype"] == "video":
                stats[key] = image_stats(frames[key], quantiles=self.quantile_stats)
            else:
                column = table[key].combine_chunks()
                if pa.types.is_fixed_size_list(column.type):
                    data = column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), -1)
                else:
                    data = column.to_numpy(zero_copy_only=False)
                stats[key] = vector_stats(data, quantiles=self.quantile_stats)
        return stats

    def _source_table(self, index: int, timestamps: np.ndarray) -> pa.Table:
        return pa.table(
            {
                "episode_index": pa.array(np.full(len(timestamps), index, dtype=np.int64)),
                "frame_index": pa.array(np.arange(len(timestamps), dtype=np.int64)),
                SOURCE_TIMESTAMP: pa.array(np.asarray(timestamps, dtype=np.float64)),
            }
        )

    def _check_episode(self, index, frames, state, action, timestamps, extra):
        where = f"episode {index}"
        state = np.asarray(state, dtype=np.float32)
        action = np.asarray(action, dtype=np.float32)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        length = int(timestamps.shape[0]) if timestamps.ndim == 1 else -1
        if length <= 0:
            raise ValueError(
                f"{where}: timestamps must be a non-empty [T] array, got shape {timestamps.shape}"
            )
        if np.any(np.diff(timestamps) <= 0) or not np.isfinite(timestamps).all():
            raise ValueError(f"{where}: timestamps must be finite and strictly increasing")
        for name, values, names in (
            ("state", state, self.state_names),
            ("action", action, self.action_names),
        ):
            if values.shape != (length, len(names)):
                raise ValueError(f"{where}: {name} must be [{length}, {len(names)}], got {values.shape}")
            if not np.isfinite(values).all():
                raise ValueError(f"{where}: {name} has non-finite values")
        if set(frames) != set(self.camera_keys):
            raise ValueError(
                f"{where}: frames for cameras {sorted(frames)}, expected {sorted(self.camera_keys)}"
            )
        for key in self.camera_keys:
            clip = np.asarray(frames[key])
            if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[0] != length or clip.shape[-1] != 3:
                raise ValueError(
                    f"{where}: camera {key!r} frames must be uint8 [{length}, H, W, 3], got {clip.dtype} {clip.shape}"
                )
            height, width = clip.shape[1:3]
            have = self.info["features"].get(key, {}).get("shape")
            if have is not None and list(have[:2]) != [height, width]:
                raise ValueError(f"camera {key!r}: frames are {height}x{width}, the dataset's are {have[:2]}")
        columns = {}
        reserved = {self.state_key, self.action_key, SOURCE_TIMESTAMP, *INDEX_FEATURES, *self.camera_keys}
        for name, values in (extra or {}).items():
            if name in reserved:
                raise ValueError(f"{where}: extra column {name!r} clashes with a built-in feature")
            values = np.asarray(values, dtype=np.float32)
            values = values[:, None] if values.ndim == 1 else values
            if values.ndim != 2 or values.shape[0] != length:
                raise ValueError(
                    f"{where}: extra column {name!r} must be [{length}] or [{length}, D], got {values.shape}"
                )
            have = self.info["features"].get(name, {}).get("shape")
            if have is not None and list(have) != [values.shape[1]]:
                raise ValueError(f"extra column {name!r}: {values.shape[1]} dims, the dataset's has {have}")
            columns[name] = values
        return length, state, action, timestamps, columns

    def _declare_video(self, key: str, height: int, width: int) -> None:
        features = self.info["features"]
        if key in features:
            return
        spec = VIDEO_CODECS[self.video_codec]
        # The `info` block LeRobot's get_video_info fills (video_utils.py), with an integer fps.
        features[key] = {
            "dtype": "video",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": height,
                "video.width": width,
                "video.codec": spec.info_codec,
                "video.pix_fmt": "yuv420p" if spec.pix_fmt == "yuv420p" else "gbrp",
                "video.is_depth_map": False,
                "video.fps": self.fps,
                "video.channels": 3,
                "has_audio": False,
            },
        }

    def _declare_vector(self, key: str, dim: int, names: Sequence[str] | None) -> None:
        features = self.info["features"]
        if key not in features:
            features[key] = {"dtype": "float32", "shape": [dim], "names": list(names) if names else None}


class LeRobotV21Writer(_EpisodeWriter):
    """Append episodes to a LeRobot v2.1 dataset (LeRobot 0.3.x), creating it if `root` has none.

    One parquet and one mp4 per camera per episode; the episode's metadata lines and info.json
    (whose total_episodes is the commit point) are rewritten with it, all in one atomic commit."""

    version = V21
    quantile_stats = False  # LeRobot 0.3.x statistics: min max mean std count

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._episodes: list[dict[str, Any]] = []
        self._stats: list[dict[str, Any]] = []
        super().__init__(*args, **kwargs)

    def _new_info(self) -> dict[str, Any]:
        layout = {"total_videos": 0, "total_chunks": 0, "chunks_size": self.chunks_size}
        return self._empty_info(layout, V21_DATA_PATH, V21_VIDEO_PATH)

    def _open_existing(self) -> None:
        total = int(self.info["total_episodes"])
        # Lines past total_episodes belong to an episode whose info.json update never happened.
        self._episodes = [
            r
            for r in read_jsonl(self._meta / "episodes.jsonl", missing_ok=total == 0)
            if r["episode_index"] < total
        ]
        self._stats = [
            r
            for r in read_jsonl(self._meta / "episodes_stats.jsonl", missing_ok=total == 0)
            if r["episode_index"] < total
        ]
        if len(self._episodes) != total or len(self._stats) != total:
            raise DatasetError(
                f"{self._meta}: info.json has {total} episodes but episodes.jsonl has {len(self._episodes)} "
                f"and episodes_stats.jsonl {len(self._stats)}"
            )
        used = {t for r in self._episodes for t in r["tasks"]}
        rows = read_jsonl(self._meta / "tasks.jsonl", missing_ok=total == 0)
        tasks = {str(r["task"]): int(r["task_index"]) for r in rows if r["task"] in used}
        self.tasks = dict(sorted(tasks.items(), key=lambda item: item[1]))

    def _write_episode(self, staged, index, length, frames, state, action, timestamps, task, columns) -> None:
        if task not in self.tasks:
            self.tasks[task] = len(self.tasks)
        chunk = index // self.chunks_size
        first_frame = int(self.info["total_frames"])
        for key in self.camera_keys:
            path = self.root / V21_VIDEO_PATH.format(episode_chunk=chunk, video_key=key, episode_index=index)
            encode_video(staged.path(path), frames[key], self.fps, self.video_codec)
        table = self._frame_table(
            index, first_frame, length, state, action, columns, self.tasks[task], timestamps
        )
        data_path = self.root / V21_DATA_PATH.format(episode_chunk=chunk, episode_index=index)
        pq.write_table(table, staged.path(data_path))
        if SOURCE_TIMESTAMP not in self.info["features"]:
            sidecar = source_times_path(self.root, data_path)
            pq.write_table(self._source_table(index, timestamps), staged.path(sidecar))
        stats = stats_to_lists(self._episode_stats(table, frames))
        episodes = [*self._episodes, {"episode_index": index, "tasks": [task], "length": length}]
        all_stats = [*self._stats, {"episode_index": index, "stats": stats}]
        tasks = [
            {"task_index": i, "task": t} for t, i in sorted(self.tasks.items(), key=lambda item: item[1])
        ]
        staged.write_text(self._meta / "tasks.jsonl", _jsonl(tasks))
        staged.write_text(self._meta / "episodes_stats.jsonl", _jsonl(all_stats))
        staged.write_text(self._meta / "episodes.jsonl", _jsonl(episodes))
        info = self._info_with_episode(
            index,
            first_frame + length,
            len(self.tasks),
            total_videos=(index + 1) * len(self.camera_keys),
            total_chunks=chunk + 1,
        )
        staged.write_json(self._meta / "info.json", info)
        self._pending = (info, episodes, all_stats)

    def _committed(self) -> None:
        self.info, self._episodes, self._stats = self._pending


class LeRobotV30Writer(_EpisodeWriter):
    """Append episodes to a LeRobot v3.0 dataset (LeRobot 0.4.x), creating it if `root` has none.

    Episodes are appended to the current data file, video files and episode-metadata file until
    adding one would reach the size limit, then the next file is started (chunk-XXX/file-YYY,
    `chunks_size` files a chunk), as lerobot_dataset.py `_save_episode_data`,
    `_save_episode_video` and `LeRobotDatasetMetadata._save_episode_metadata` decide: data and
    episode metadata at `data_files_size_in_mb` (current size plus the episode's share at the file's
    average bytes per row), videos at `video_files_size_in_mb` (current size plus the episode's
    mp4). A reopened dataset continues in new files, as LeRobot does when it resumes. Growing a file
    rewrites it under a temporary name (parquet) or remuxes it with the new episode (mp4).
    """

    version = V30
    quantile_stats = True  # LeRobot 0.4.x statistics add q01 q10 q50 q90 q99
    hf_list_type = "List"

    def __init__(
        self,
        *args: Any,
        data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
        video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB,
        **kwargs: Any,
    ) -> None:
        if data_files_size_in_mb <= 0 or video_files_size_in_mb <= 0:
            raise ValueError("data_files_size_in_mb and video_files_size_in_mb must be positive")
        self.data_files_size_in_mb = data_files_size_in_mb
        self.video_files_size_in_mb = video_files_size_in_mb
        self._last: dict[str, Any] | None = None  # the latest committed episode's metadata row
        self._data_frames = 0  # frames in the current data file (0: start a new file)
        self._video_frames: dict[str, int] = {}  # frames in each camera's current video file
        self._meta_rows: list[dict[str, Any]] = []  # rows of the current episode-metadata file
        self._stats: dict[str, dict[str, np.ndarray]] | None = None
        super().__init__(*args, **kwargs)
        self.data_files_size_in_mb = self.info.get("data_files_size_in_mb", data_files_size_in_mb)
        self.video_files_size_in_mb = self.info.get("video_files_size_in_mb", video_files_size_in_mb)

    def _new_info(self) -> dict[str, Any]:
        # utils.py create_empty_dataset_info (v3.0): no total_videos / total_chunks any more.
        layout = {
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self.data_files_size_in_mb,
            "video_files_size_in_mb": self.video_files_size_in_mb,
        }
        return self._empty_info(layout, V30_DATA_PATH, V30_VIDEO_PATH)

    def _open_existing(self) -> None:
        total = int(self.info["total_episodes"])
        if total == 0:
            return
        self.tasks = {t: i for i, t in sorted(read_v30_tasks(self._meta / "tasks.parquet").items())}
        last = None
        for path in sorted((self._meta / "episodes").glob("chunk-*/file-*.parquet")):
            names = [n for n in pq.read_schema(path).names if not n.startswith("stats/")]
            for row in pq.read_table(path, columns=names).to_pylist():
                if row["episode_index"] == total - 1:
                    last = row
        if last is None:
            raise DatasetError(f"{self._meta / 'episodes'}: no metadata row for episode {total - 1}")
        self._last = last
        stats_path = self._meta / "stats.json"
        if stats_path.is_file():
            self._stats = stats_from_lists(read_json(stats_path))
        else:  # rebuilt from the episodes' own statistics (the stats/<feature>/<stat> columns)
            per_episode = []
            for path in sorted((self._meta / "episodes").glob("chunk-*/file-*.parquet")):
                for row in pq.read_table(path).to_pylist():
                    if row["episode_index"] < total:
                        ep: dict[str, dict[str, np.ndarray]] = {}
                        for name, value in row.items():
                            if name.startswith("stats/") and value is not None:
                                key, stat = name[len("stats/") :].rsplit("/", 1)
                                ep.setdefault(key, {})[stat] = np.asarray(value)
                        per_episode.append(ep)
            self._stats = aggregate_stats(per_episode) if per_episode else None

    def _write_episode(self, staged, index, length, frames, state, action, timestamps, task, columns) -> None:
        tasks = dict(self.tasks)
        if task not in tasks:
            tasks[task] = len(tasks)
        first_frame = int(self.info["total_frames"])
        table = self._frame_table(index, first_frame, length, state, action, columns, tasks[task], timestamps)
        row: dict[str, Any] = {"episode_index": index, "tasks": [task], "length": length}

        # 1. data (and the source-time sidecar, which follows the data file)
        chunk, file = self._data_location(length)
        data_path = self.root / V30_DATA_PATH.format(chunk_index=chunk, file_index=file)
        whole = pa.concat_tables([pq.read_table(data_path), table]) if self._data_frames else table
        pq.write_table(whole, staged.path(data_path))
        if SOURCE_TIMESTAMP not in self.info["features"]:
            sidecar = source_times_path(self.root, data_path)
            sources = self._source_table(index, timestamps)
            if self._data_frames and sidecar.is_file():
                sources = pa.concat_tables([pq.read_table(sidecar), sources])
            pq.write_table(sources, staged.path(sidecar))
        row.update(
            {
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": first_frame,
                "dataset_to_index": first_frame + length,
            }
        )
        # 2. videos: the episode encoded alone, then appended to the camera's current file
        video_frames = {}
        for key in self.camera_keys:
            chunk, file, start = self._write_video(staged, key, frames[key])
            video_frames[key] = start + length
            row.update(
                {
                    f"videos/{key}/chunk_index": chunk,
                    f"videos/{key}/file_index": file,
                    f"videos/{key}/from_timestamp": start / self.fps,
                    f"videos/{key}/to_timestamp": (start + length) / self.fps,
                }
            )
        # 3. statistics (episode's, then the dataset's aggregate: meta/stats.json)
        episode_stats = self._episode_stats(table, frames)
        for key, values in stats_to_lists(episode_stats).items():
            for name, value in values.items():
                row[f"stats/{key}/{name}"] = value
        stats = aggregate_stats([self._stats, episode_stats]) if self._stats else episode_stats
        # 4. episode metadata file, tasks, stats, info.json (last: the commit point)
        chunk, file = self._meta_location()
        row["meta/episodes/chunk_index"] = chunk
        row["meta/episodes/file_index"] = file
        meta_rows = [*self._meta_rows, row] if self._meta_rows else [row]
        meta_path = self.root / V30_EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        pq.write_table(_episodes_table(meta_rows), staged.path(meta_path))
        if tasks != self.tasks or not (self._meta / "tasks.parquet").is_file():
            pq.write_table(_tasks_table(tasks), staged.path(self._meta / "tasks.parquet"))
        staged.write_json(self._meta / "stats.json", stats_to_lists(stats))
        info = self._info_with_episode(index, first_frame + length, len(tasks))
        staged.write_json(self._meta / "info.json", info)
        self._pending = (info, tasks, row, meta_rows, stats, video_frames, self._data_frames + length)

    def _committed(self) -> None:
        info, tasks, row, meta_rows, stats, video_frames, data_frames = self._pending
        self.info, self.tasks, self._last, self._meta_rows, self._stats = info, tasks, row, meta_rows, stats
        self._video_frames, self._data_frames = video_frames, data_frames

    def _data_location(self, length: int) -> tuple[int, int]:
        """(chunk, file) of the data file the episode goes to; resets `_data_frames` for a new one."""
        if self._last is None:
            self._data_frames = 0
            return 0, 0
        here = (int(self._last["data/chunk_index"]), int(self._last["data/file_index"]))
        if self._data_frames:
            path = self.root / V30_DATA_PATH.format(chunk_index=here[0], file_index=here[1])
            size = _size_mb(path)
            if size + size / self._data_frames * length < self.data_files_size_in_mb:
                return here
        self._data_frames = 0
        return _next_file(*here, self.chunks_size)

    def _meta_location(self) -> tuple[int, int]:
        if self._last is None:
            self._meta_rows = []
            return 0, 0
        here = (int(self._last["meta/episodes/chunk_index"]), int(self._last["meta/episodes/file_index"]))
        if self._meta_rows:
            path = self.root / V30_EPISODES_PATH.format(chunk_index=here[0], file_index=here[1])
            size = _size_mb(path)
            if size + size / len(self._meta_rows) < self.data_files_size_in_mb:
                return here
        self._meta_rows = []
        return _next_file(*here, self.chunks_size)

    def _write_video(self, staged: StagedCommit, key: str, clip: np.ndarray) -> tuple[int, int, int]:
        """Stage camera `key`'s video file with the episode appended -> (chunk, file, first frame)."""
        frames_before = self._video_frames.get(key, 0)
        if self._last is None:
            here = None
        else:
            here = (int(self._last[f"videos/{key}/chunk_index"]), int(self._last[f"videos/{key}/file_index"]))
        final = None if here is None else self._video_path(key, *here)
        episode = (final or self._video_path(key, 0, 0)).with_name(f".episode-{key}.mp4.tmp")
        try:
            encode_video(episode, clip, self.fps, self.video_codec)
            fits = here is not None and frames_before > 0
            if fits and _size_mb(final) + _size_mb(episode) < self.video_files_size_in_mb:
                concat_videos([final, episode], staged.path(final), [frames_before, len(clip)], self.fps)
                return here[0], here[1], frames_before
            chunk, file = (0, 0) if here is None else _next_file(*here, self.chunks_size)
            os.replace(episode, staged.path(self._video_path(key, chunk, file)))
            return chunk, file, 0
        finally:
            episode.unlink(missing_ok=True)

    def _video_path(self, key: str, chunk: int, file: int) -> Path:
        path = self.root / V30_VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    """The file after (chunk, file): a new chunk every `chunks_size` files (update_chunk_file_indices)."""
    return (chunk + 1, 0) if file >= chunks_size - 1 else (chunk, file + 1)


def _size_mb(path: Path) -> float:
    return path.stat().st_size / 1024**2  # LeRobot's get_file_size_in_mb


def _episodes_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """meta/episodes rows as LeRobot writes them: pa.Table.from_pydict of python values (no schema
    metadata), so ints are int64, floats double, tasks list<string>, statistics (nested) lists."""
    return pa.Table.from_pydict({key: [r[key] for r in rows] for key in rows[0]})


def _tasks_table(tasks: Mapping[str, int]) -> pa.Table:
    """meta/tasks.parquet as pandas' DataFrame.to_parquet writes LeRobot's tasks frame (index: the
    task strings, column task_index): data column first, the index as "__index_level_0__", and
    the pandas metadata that makes pandas restore it as the index."""
    ordered = sorted(tasks.items(), key=lambda item: item[1])
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    schema = pa.schema(
        [pa.field("task_index", pa.int64()), pa.field("__index_level_0__", pa.string())],
        metadata={b"pandas": json.dumps(pandas_meta).encode()},
    )
    return pa.table(
        {"task_index": [i for _, i in ordered], "__index_level_0__": [t for t, _ in ordered]}, schema=schema
    )


def _jsonl(rows: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
