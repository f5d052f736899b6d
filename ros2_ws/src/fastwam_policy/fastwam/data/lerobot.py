"""LeRobot datasets as plain files: read v2.1 and v3.0, write v2.1.

v2.1: one parquet and one mp4 per camera per episode,
    data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet
    videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4
    meta/info.json, meta/episodes.jsonl, meta/tasks.jsonl, meta/episodes_stats.jsonl
v3.0: many episodes per file, located through meta/episodes/chunk-*/file-*.parquet,
    data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet
    videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4
    meta/info.json, meta/tasks.parquet (task strings as the index, column task_index)

Which features are cameras, state and action is the experiment's business (windows.py); this module
only reads what is there and fails loudly, naming episode and file, when something is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fastwam.data.video import VIDEO_CODECS, VideoError, decode_frames, encode_video

V21 = "v2.1"
V30 = "v3.0"
DEFAULT_CHUNKS_SIZE = 1000
V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
# Columns every LeRobot frame carries besides the features proper.
INDEX_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


class DatasetError(ValueError):
    """Bad or inconsistent dataset content. The message names the episode and file."""


@dataclass(frozen=True)
class EpisodeRecord:
    """Where one episode lives. v2.1 files hold one episode; v3.0 files hold many."""

    index: int
    length: int
    tasks: tuple[str, ...]
    data_file: Path
    video_files: Mapping[str, Path] = field(default_factory=dict)
    # Seconds into the video file at which the episode starts (non-zero only for v3.0).
    video_offsets: Mapping[str, float] = field(default_factory=dict)


@dataclass
class EpisodeData:
    """Numeric columns of one episode, validated: every array has `length` rows."""

    index: int
    length: int
    timestamps: np.ndarray  # float64 [T], seconds from episode start
    task_index: np.ndarray  # int64 [T]
    columns: dict[str, np.ndarray]  # feature key -> float32 [T, D]


class LeRobotDataset:
    """A LeRobot v2.1 or v3.0 dataset on disk: metadata, episode columns and video frames."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(f"not a LeRobot dataset (no meta/info.json): {self.root}")
        self.info: dict[str, Any] = _read_json(info_path)
        for key in ("codebase_version", "fps", "features"):
            if key not in self.info:
                raise DatasetError(f"{info_path}: missing field {key!r}")
        self.version = str(self.info["codebase_version"])
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.robot_type = self.info.get("robot_type")
        self._last_table: tuple[tuple[Path, tuple[str, ...]], pa.Table] | None = None
        if self.version in ("v2.0", V21):
            self.tasks, self.episodes = self._read_v21_meta()
        elif self.version == V30:
            self.tasks, self.episodes = self._read_v30_meta()
        else:
            raise DatasetError(
                f"{info_path}: unsupported codebase_version {self.version!r} (need v2.1 or v3.0)"
            )
        total = self.info.get("total_episodes")
        if total is not None and int(total) != len(self.episodes):
            raise DatasetError(
                f"{info_path}: total_episodes is {total} but the episode metadata lists {len(self.episodes)}"
            )

    # -- metadata ---------------------------------------------------------------------------
    @property
    def episode_indices(self) -> list[int]:
        return sorted(self.episodes)

    @property
    def video_keys(self) -> list[str]:
        return [key for key, ft in self.features.items() if ft.get("dtype") == "video"]

    @property
    def total_frames(self) -> int:
        return sum(ep.length for ep in self.episodes.values())

    def feature_dim(self, key: str) -> int:
        feature = self.feature(key)
        shape = feature.get("shape") or [1]
        return int(np.prod(shape))

    def feature_names(self, key: str) -> list[str] | None:
        """Per-dimension names; LeRobot writes a list or a one-entry dict such as {"motors": [...]}."""
        names = self.feature(key).get("names")
        if isinstance(names, Mapping):
            names = next(iter(names.values())) if len(names) == 1 else None
        return [str(n) for n in names] if isinstance(names, list) else None

    def feature(self, key: str) -> dict[str, Any]:
        if key not in self.features:
            raise DatasetError(
                f"{self.root / 'meta/info.json'}: no feature {key!r}; the dataset has {sorted(self.features)}"
            )
        return self.features[key]

    def episode(self, index: int) -> EpisodeRecord:
        if index not in self.episodes:
            raise DatasetError(f"{self.root}: no episode {index} (have {len(self.episodes)} episodes)")
        return self.episodes[index]

    # -- episode data -----------------------------------------------------------------------
    def read_episode(self, index: int, keys: Sequence[str]) -> EpisodeData:
        """Load the vector features `keys` of one episode, checking rows, shapes and finiteness."""
        record = self.episode(index)
        where = f"episode {index} ({record.data_file})"
        if not record.data_file.is_file():
            raise DatasetError(f"{where}: data file missing")
        for key in keys:
            self.feature(key)
        wanted = ["timestamp", "frame_index", "episode_index", "task_index", *keys]
        try:
            schema = pq.read_schema(record.data_file)
        except (pa.ArrowException, OSError) as error:
            raise DatasetError(f"{where}: unreadable parquet: {error}") from error
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise DatasetError(f"{where}: missing columns {missing} (file has {schema.names})")
        cache_key = (record.data_file, tuple(wanted))
        if self._last_table is not None and self._last_table[0] == cache_key:
            table = self._last_table[1]  # v3.0: consecutive episodes share a file; read it once
        else:
            try:
                table = pq.read_table(record.data_file, columns=wanted)
            except (pa.ArrowException, OSError) as error:
                raise DatasetError(f"{where}: unreadable parquet: {error}") from error
            self._last_table = (cache_key, table)
        if self.version == V30:
            table = table.filter(pc.equal(table["episode_index"], index))
        elif len(table) and not pc.all(pc.equal(table["episode_index"], index)).as_py():
            raise DatasetError(f"{where}: rows of another episode in this episode's file")
        if len(table) != record.length:
            raise DatasetError(
                f"{where}: {len(table)} rows but the episode metadata says length {record.length}"
            )
        frame_index = _scalar_column(table, "frame_index", where).astype(np.int64)
        if not np.array_equal(frame_index, np.arange(record.length)):
            raise DatasetError(f"{where}: frame_index is not 0..{record.length - 1} in order")
        timestamps = _scalar_column(table, "timestamp", where).astype(np.float64)
        if not np.isfinite(timestamps).all() or np.any(np.diff(timestamps) <= 0):
            raise DatasetError(f"{where}: timestamps are not finite and strictly increasing")
        columns = {}
        for key in keys:
            values = _vector_column(table, key, where)
            dim = self.feature_dim(key)
            if values.shape[1] != dim:
                raise DatasetError(
                    f"{where}: column {key!r} has {values.shape[1]} dims, info.json says {dim}"
                )
            bad = ~np.isfinite(values)
            if bad.any():
                row, col = (int(v) for v in np.argwhere(bad)[0])
                raise DatasetError(
                    f"{where}: column {key!r} has {int(bad.sum())} non-finite values (first at frame {row}, dim {col})"
                )
            columns[key] = values
        task_index = _scalar_column(table, "task_index", where).astype(np.int64)
        unknown = sorted(set(task_index.tolist()) - set(self.tasks))
        if unknown:
            raise DatasetError(f"{where}: task_index {unknown} not in the dataset's task list")
        return EpisodeData(index, record.length, timestamps, task_index, columns)

    def read_frames(self, index: int, video_key: str, timestamps: Sequence[float]) -> np.ndarray:
        """Decode camera `video_key` of episode `index` at episode timestamps -> uint8 [N, H, W, 3]."""
        record = self.episode(index)
        if video_key not in record.video_files:
            raise DatasetError(
                f"episode {index}: no video for camera {video_key!r} (have {sorted(record.video_files)})"
            )
        path = record.video_files[video_key]
        times = np.asarray(timestamps, dtype=np.float64) + record.video_offsets.get(video_key, 0.0)
        try:
            return decode_frames(path, times, self.fps)
        except VideoError as error:
            raise DatasetError(f"episode {index}, camera {video_key!r}: {error}") from error

    def check_videos(self, indices: Sequence[int] | None = None) -> None:
        """Open every video of the episodes and check it holds enough frames, before training starts."""
        from fastwam.data.video import video_info

        for index in indices if indices is not None else self.episode_indices:
            record = self.episode(index)
            for key in self.video_keys:
                if key not in record.video_files:
                    raise DatasetError(f"episode {index}: no video file for camera {key!r}")
                path = record.video_files[key]
                try:
                    facts = video_info(path)
                except VideoError as error:
                    raise DatasetError(f"episode {index}, camera {key!r}: {error}") from error
                offset = record.video_offsets.get(key, 0.0)
                needed = int(round(offset * self.fps)) + record.length
                if facts["frames"] and int(facts["frames"]) < needed:  # type: ignore[arg-type]
                    raise DatasetError(
                        f"episode {index}, camera {key!r} ({path}): video has {facts['frames']} frames, "
                        f"the episode needs {record.length}"
                        + (f" starting at frame {needed - record.length}" if offset else "")
                    )

    # -- v2.1 / v3.0 metadata readers -------------------------------------------------------
    def _read_v21_meta(self) -> tuple[dict[int, str], dict[int, EpisodeRecord]]:
        meta = self.root / "meta"
        tasks = {}
        for row in _read_jsonl(meta / "tasks.jsonl"):
            tasks[int(row["task_index"])] = str(row["task"])
        chunks_size = int(self.info.get("chunks_size", DEFAULT_CHUNKS_SIZE))
        data_path = self.info.get("data_path", V21_DATA_PATH)
        video_path = self.info.get("video_path") or V21_VIDEO_PATH
        episodes = {}
        total = int(self.info.get("total_episodes", -1))
        for row in _read_jsonl(meta / "episodes.jsonl"):
            index = int(row["episode_index"])
            if 0 <= total <= index:
                continue  # an episode whose write never committed (info.json is the commit point)
            chunk = index // chunks_size
            videos = {
                key: self.root / video_path.format(episode_chunk=chunk, video_key=key, episode_index=index)
                for key in self.video_keys
            }
            episodes[index] = EpisodeRecord(
                index=index,
                length=int(row["length"]),
                tasks=tuple(str(t) for t in row.get("tasks", ())),
                data_file=self.root / data_path.format(episode_chunk=chunk, episode_index=index),
                video_files=videos,
            )
        return tasks, episodes

    def _read_v30_meta(self) -> tuple[dict[int, str], dict[int, EpisodeRecord]]:
        meta = self.root / "meta"
        tasks_path = meta / "tasks.parquet"
        if not tasks_path.is_file():
            raise DatasetError(f"{tasks_path}: missing")
        table = pq.read_table(tasks_path)
        # pandas writes the task strings as the index: a column named "task" or "__index_level_0__".
        text_columns = [n for n in table.column_names if pa.types.is_string(table.schema.field(n).type)]
        if "task_index" not in table.column_names or len(text_columns) != 1:
            raise DatasetError(
                f"{tasks_path}: expected task strings and a task_index column, got {table.schema}"
            )
        tasks = {
            int(i): str(t)
            for i, t in zip(table["task_index"].to_pylist(), table[text_columns[0]].to_pylist(), strict=True)
        }
        files = sorted((meta / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"{meta / 'episodes'}: no episode metadata files")
        data_path = self.info.get("data_path")
        video_path = self.info.get("video_path")
        if not data_path or (self.video_keys and not video_path):
            raise DatasetError(f"{meta / 'info.json'}: missing data_path/video_path")
        episodes = {}
        for path in files:
            rows = pq.read_table(path).to_pylist()
            for row in rows:
                needed = ["episode_index", "length", "data/chunk_index", "data/file_index"]
                for key in self.video_keys:
                    needed += [
                        f"videos/{key}/chunk_index",
                        f"videos/{key}/file_index",
                        f"videos/{key}/from_timestamp",
                    ]
                missing = [k for k in needed if row.get(k) is None]
                if missing:
                    raise DatasetError(f"{path}: episode {row.get('episode_index')} lacks {missing}")
                index = int(row["episode_index"])
                episodes[index] = EpisodeRecord(
                    index=index,
                    length=int(row["length"]),
                    tasks=tuple(str(t) for t in row.get("tasks") or ()),
                    data_file=self.root
                    / data_path.format(
                        chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
                    ),
                    video_files={
                        key: self.root
                        / video_path.format(
                            video_key=key,
                            chunk_index=row[f"videos/{key}/chunk_index"],
                            file_index=row[f"videos/{key}/file_index"],
                        )
                        for key in self.video_keys
                    },
                    video_offsets={
                        key: float(row[f"videos/{key}/from_timestamp"]) for key in self.video_keys
                    },
                )
        return tasks, episodes


class LeRobotV21Writer:
    """Append episodes to a LeRobot v2.1 dataset, creating it if `root` has none.

    Every file is written to a temporary name and renamed into place, data and videos first and
    meta/info.json last: info.json's total_episodes is the commit point, so a crash mid-episode
    leaves the earlier episodes intact (reopening drops the half-written episode's metadata lines).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        fps: float,
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
        self.root = Path(root)
        self.fps = float(fps)
        self.robot_type = robot_type
        self.camera_keys = tuple(camera_keys)
        self.state_names = tuple(state_names)
        self.action_names = tuple(action_names)
        self.video_codec = video_codec
        self.state_key = state_key
        self.action_key = action_key
        self.chunks_size = int(chunks_size)
        self._meta = self.root / "meta"
        if (self._meta / "info.json").is_file():
            self._open_existing()
        else:
            self.info = self._new_info()
            self.tasks: dict[str, int] = {}
            self._episodes: list[dict[str, Any]] = []
            self._stats: list[dict[str, Any]] = []

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
        """Write one episode; returns its episode index.

        frames: camera key -> uint8 RGB [T, H, W, 3]; state [T, S]; action [T, A]; timestamps [T]
        source times in seconds (strictly increasing; kept in the `source_timestamp` column, while
        `timestamp` is the video clock i / fps as LeRobot requires); extra: more per-frame columns,
        name -> [T] or [T, D] numbers, written as float32 features (declared on first use).
        """
        index = self.num_episodes
        length, state, action, timestamps, columns = self._check_episode(
            index, frames, state, action, timestamps, extra
        )
        if not task:
            raise ValueError(f"episode {index}: task must be a non-empty string")
        if task not in self.tasks:
            self.tasks[task] = len(self.tasks)
        chunk = index // self.chunks_size
        first_frame = int(self.info["total_frames"])

        # 1. videos and parquet (temp + rename each)
        for key in self.camera_keys:
            clip = frames[key]
            self._declare_video(key, clip.shape[1], clip.shape[2])
            path = self.root / V21_VIDEO_PATH.format(episode_chunk=chunk, video_key=key, episode_index=index)
            encode_video(path, clip, self.fps, self.video_codec)
        frame_times = np.arange(length, dtype=np.float32) / np.float32(self.fps)
        table_columns: dict[str, pa.Array] = {
            self.state_key: _list_array(state),
            self.action_key: _list_array(action),
            "source_timestamp": pa.array(timestamps, pa.float64()),
            **{name: _list_array(values) for name, values in columns.items()},
            "timestamp": pa.array(frame_times, pa.float32()),
            "frame_index": pa.array(np.arange(length), pa.int64()),
            "episode_index": pa.array(np.full(length, index), pa.int64()),
            "index": pa.array(np.arange(first_frame, first_frame + length), pa.int64()),
            "task_index": pa.array(np.full(length, self.tasks[task]), pa.int64()),
        }
        for name, values in columns.items():
            self._declare_vector(name, values.shape[1], None)
        data_path = self.root / V21_DATA_PATH.format(episode_chunk=chunk, episode_index=index)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        _atomic(data_path, lambda tmp: pq.write_table(pa.table(table_columns), tmp))

        # 2. episode metadata, then info.json (the commit point)
        stats = {
            self.state_key: _vector_stats(state),
            self.action_key: _vector_stats(action),
            "source_timestamp": _vector_stats(timestamps[:, None]),
            **{name: _vector_stats(values) for name, values in columns.items()},
            **{key: _image_stats(frames[key]) for key in self.camera_keys},
            "timestamp": _vector_stats(frame_times[:, None]),
            "frame_index": _vector_stats(np.arange(length)[:, None]),
            "episode_index": _vector_stats(np.full((length, 1), index)),
            "index": _vector_stats(np.arange(first_frame, first_frame + length)[:, None]),
            "task_index": _vector_stats(np.full((length, 1), self.tasks[task])),
        }
        self._stats.append({"episode_index": index, "stats": stats})
        self._episodes.append({"episode_index": index, "tasks": [task], "length": length})
        self._write_meta()
        self.info["total_episodes"] = index + 1
        self.info["total_frames"] = first_frame + length
        self.info["total_tasks"] = len(self.tasks)
        self.info["total_videos"] = (index + 1) * len(self.camera_keys)
        self.info["total_chunks"] = chunk + 1
        self.info["splits"] = {"train": f"0:{index + 1}"}
        _write_json(self._meta / "info.json", self.info)
        return index

    # -- internals ---------------------------------------------------------------------------
    def _new_info(self) -> dict[str, Any]:
        features: dict[str, Any] = {
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
            "source_timestamp": {"dtype": "float64", "shape": [1], "names": None},
            **INDEX_FEATURES,
        }
        return {
            "codebase_version": V21,
            "robot_type": self.robot_type,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": 0,
            "total_videos": 0,
            "total_chunks": 0,
            "chunks_size": self.chunks_size,
            "fps": self.fps,
            "splits": {},
            "data_path": V21_DATA_PATH,
            "video_path": V21_VIDEO_PATH,
            "features": features,
        }

    def _open_existing(self) -> None:
        info = _read_json(self._meta / "info.json")
        where = self._meta / "info.json"
        if info.get("codebase_version") != V21:
            raise DatasetError(
                f"{where}: can only append to v2.1 datasets, this is {info.get('codebase_version')}"
            )
        if float(info["fps"]) != self.fps:
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
        self.info = info
        total = int(info["total_episodes"])
        # Lines past total_episodes belong to an episode whose info.json update never happened.
        self._episodes = [
            r
            for r in _read_jsonl(self._meta / "episodes.jsonl", missing_ok=total == 0)
            if r["episode_index"] < total
        ]
        self._stats = [
            r
            for r in _read_jsonl(self._meta / "episodes_stats.jsonl", missing_ok=total == 0)
            if r["episode_index"] < total
        ]
        if len(self._episodes) != total or len(self._stats) != total:
            raise DatasetError(
                f"{self._meta}: info.json has {total} episodes but episodes.jsonl has {len(self._episodes)} "
                f"and episodes_stats.jsonl {len(self._stats)}"
            )
        used = {t for r in self._episodes for t in r["tasks"]}
        rows = _read_jsonl(self._meta / "tasks.jsonl", missing_ok=total == 0)
        self.tasks = {str(r["task"]): int(r["task_index"]) for r in rows if r["task"] in used}
        self.tasks = {t: i for t, i in sorted(self.tasks.items(), key=lambda item: item[1])}

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
        columns = {}
        reserved = {self.state_key, self.action_key, "source_timestamp", *INDEX_FEATURES, *self.camera_keys}
        for name, values in (extra or {}).items():
            if name in reserved:
                raise ValueError(f"{where}: extra column {name!r} clashes with a built-in feature")
            values = np.asarray(values, dtype=np.float32)
            values = values[:, None] if values.ndim == 1 else values
            if values.ndim != 2 or values.shape[0] != length:
                raise ValueError(
                    f"{where}: extra column {name!r} must be [{length}] or [{length}, D], got {values.shape}"
                )
            columns[name] = values
        return length, state, action, timestamps, columns

    def _declare_video(self, key: str, height: int, width: int) -> None:
        features = self.info["features"]
        if key in features:
            if features[key]["shape"][:2] != [height, width]:
                raise ValueError(
                    f"camera {key!r}: frames are {height}x{width}, the dataset's are {features[key]['shape'][:2]}"
                )
            return
        spec = VIDEO_CODECS[self.video_codec]
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
        if key in features:
            if features[key]["shape"] != [dim]:
                raise ValueError(
                    f"extra column {key!r}: {dim} dims, the dataset's has {features[key]['shape']}"
                )
            return
        features[key] = {"dtype": "float32", "shape": [dim], "names": list(names) if names else None}

    def _write_meta(self) -> None:
        tasks = [
            {"task_index": i, "task": t} for t, i in sorted(self.tasks.items(), key=lambda item: item[1])
        ]
        _write_jsonl(self._meta / "tasks.jsonl", tasks)
        _write_jsonl(self._meta / "episodes_stats.jsonl", self._stats)
        _write_jsonl(self._meta / "episodes.jsonl", self._episodes)


# -- file helpers ---------------------------------------------------------------------------
def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n"))


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    _atomic(path, lambda tmp: tmp.write_text(text))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: cannot read JSON: {error}") from error


def _read_jsonl(path: Path, missing_ok: bool = False) -> list[dict[str, Any]]:
    if not path.is_file():
        if missing_ok:
            return []
        raise DatasetError(f"{path}: missing")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: invalid JSON line: {error}") from error
    return rows


def _scalar_column(table: pa.Table, key: str, where: str) -> np.ndarray:
    column = table[key].combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
        column = column.flatten()
        if len(column) != len(table):
            raise DatasetError(f"{where}: column {key!r} is not one value per frame")
    if column.null_count:
        raise DatasetError(f"{where}: column {key!r} has {column.null_count} missing values")
    return column.to_numpy(zero_copy_only=False)


def _vector_column(table: pa.Table, key: str, where: str) -> np.ndarray:
    """A list/fixed-size-list (or scalar) column -> float32 [T, D]."""
    column = table[key].combine_chunks()
    if column.null_count:
        raise DatasetError(f"{where}: column {key!r} has {column.null_count} missing rows")
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise DatasetError(
                f"{where}: column {key!r} has rows of different lengths {sorted(set(lengths.tolist()))}"
            )
        width = int(lengths[0]) if len(lengths) else 0
        values = column.flatten()
    elif pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        values = column.flatten()
    else:
        width, values = 1, column
    if values.null_count:
        raise DatasetError(f"{where}: column {key!r} has {values.null_count} missing values")
    return values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(table), width)


def _list_array(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values, dtype=np.float32)
    offsets = np.arange(0, values.size + 1, values.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1)))


def _vector_stats(values: np.ndarray) -> dict[str, list]:
    values = np.asarray(values, dtype=np.float64)
    return {
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
        "mean": values.mean(axis=0).tolist(),
        "std": values.std(axis=0).tolist(),
        "count": [int(values.shape[0])],
    }


def _image_stats(clip: np.ndarray, max_frames: int = 100) -> dict[str, list]:
    """Per-channel statistics in [0, 1], shaped [3, 1, 1] like LeRobot's (on a frame subsample).

    From each channel's 256-bin histogram: the same numbers as over the pixels in float64, without
    a float copy of the clip (half of an episode's conversion time before)."""
    step = max(1, len(clip) // max_frames)
    sample = clip[::step]
    pixels = np.ascontiguousarray(sample, dtype=np.uint8).reshape(-1, 3)
    levels = np.arange(256, dtype=np.float64) / 255.0
    out: dict[str, list] = {"min": [], "max": [], "mean": [], "std": []}
    for c in range(3):
        hist = np.bincount(pixels[:, c], minlength=256).astype(np.float64)
        present = np.flatnonzero(hist)
        mean = float(hist @ levels / hist.sum())
        out["min"].append([[float(levels[present[0]])]])
        out["max"].append([[float(levels[present[-1]])]])
        out["mean"].append([[mean]])
        out["std"].append([[float(np.sqrt(hist @ (levels - mean) ** 2 / hist.sum()))]])
    return {**out, "count": [int(len(sample))]}
