"""LeRobot datasets on disk, read: v2.1 and v3.0, whichever tool wrote them.

v2.1 (LeRobot 0.3.x): one parquet and one mp4 per camera per episode,
    data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet
    videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4
    meta/info.json, meta/episodes.jsonl, meta/tasks.jsonl, meta/episodes_stats.jsonl
v3.0 (LeRobot 0.4.x): many episodes per file, files rolled over at a size limit, 1000 files a chunk,
    data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet
    videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4
    meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet (where each episode lives,
        its length, tasks and statistics), meta/tasks.parquet (task strings as the pandas index,
        column task_index), meta/info.json, meta/stats.json
    (lerobot src/lerobot/datasets/utils.py at commit 00448aa: DEFAULT_CHUNK_SIZE,
    DEFAULT_DATA_FILE_SIZE_IN_MB, DEFAULT_VIDEO_FILE_SIZE_IN_MB, CHUNK_FILE_PATTERN and the path
    templates, lines 49-66; create_empty_dataset_info for info.json's fields.)

info.json's total_episodes is the commit point: metadata of later episodes (a writer stopped
mid-commit) is ignored, and rows of other episodes in a shared v3.0 data file are filtered out.
Frame source times live in a sidecar (meta/fastwam_source_timestamps/<data file path>) unless the
dataset declares a `source_timestamp` feature (fastwam.data.lerobot says why).

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

from fastwam.data.video import VideoError, decode_frames

V21 = "v2.1"
V30 = "v3.0"
DEFAULT_CHUNKS_SIZE = 1000  # files per chunk directory (utils.py DEFAULT_CHUNK_SIZE)
V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V30_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
SOURCE_TIMES_DIR = "meta/fastwam_source_timestamps"
SOURCE_TIMESTAMP = "source_timestamp"
# Columns every LeRobot frame carries besides the features proper (utils.py DEFAULT_FEATURES).
INDEX_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


class DatasetError(ValueError):
    """Bad or inconsistent dataset content. The message names the episode and file."""


def integer_fps(value: Any, what: str = "fps") -> int:
    """A frame rate as LeRobot stores it: a positive whole number (15 or 15.0, never 29.97).

    LeRobot's info.json and video encoder take an int fps; a fractional rate would be truncated
    silently, so it is refused here, naming where it came from."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not np.isfinite(number) or number <= 0 or not number.is_integer():
        raise ValueError(
            f"{what}: {value!r} is not a whole number of frames per second; LeRobot datasets store "
            "an integer fps (record or resample at an integer rate, e.g. 15)"
        )
    return int(number)


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
        self.info: dict[str, Any] = read_json(info_path)
        for key in ("codebase_version", "fps", "features"):
            if key not in self.info:
                raise DatasetError(f"{info_path}: missing field {key!r}")
        self.version = str(self.info["codebase_version"])
        try:
            self.fps = integer_fps(self.info["fps"], f"{info_path}: fps")
        except ValueError as error:
            raise DatasetError(str(error)) from error
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
        """Load the vector features `keys` of one episode, checking rows, shapes and finiteness.

        `source_timestamp` may be asked for whether or not it is a feature (from the column, or
        else from the source-time sidecar our writers keep); it comes as float64 seconds [T, 1]."""
        record = self.episode(index)
        where = f"episode {index} ({record.data_file})"
        if not record.data_file.is_file():
            raise DatasetError(f"{where}: data file missing")
        sources = SOURCE_TIMESTAMP in keys  # float64 (seconds since the epoch need it), see below
        keys = [k for k in keys if k != SOURCE_TIMESTAMP]
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
        table = self._read_table(record.data_file, wanted, where)
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
        if sources:
            columns[SOURCE_TIMESTAMP] = self.source_timestamps(index)[:, None]
        task_index = _scalar_column(table, "task_index", where).astype(np.int64)
        unknown = sorted(set(task_index.tolist()) - set(self.tasks))
        if unknown:
            raise DatasetError(f"{where}: task_index {unknown} not in the dataset's task list")
        return EpisodeData(index, record.length, timestamps, task_index, columns)

    def source_timestamps(self, index: int) -> np.ndarray:
        """Source times (float64 [T], seconds) of episode `index`'s frames, as given to the writer."""
        record = self.episode(index)
        if SOURCE_TIMESTAMP in self.features:
            table = self._read_table(
                record.data_file, ["episode_index", SOURCE_TIMESTAMP], str(record.data_file)
            )
        else:
            path = source_times_path(self.root, record.data_file)
            if not path.is_file():
                raise DatasetError(f"episode {index}: no source timestamps ({path} missing)")
            table = self._read_table(path, ["episode_index", SOURCE_TIMESTAMP], str(path))
        table = table.filter(pc.equal(table["episode_index"], index))
        values = _scalar_column(table, SOURCE_TIMESTAMP, f"episode {index}").astype(np.float64)
        if len(values) != record.length:
            raise DatasetError(
                f"episode {index}: {len(values)} source timestamps but the episode has {record.length} frames"
            )
        return values

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

    def _read_table(self, path: Path, columns: list[str], where: str) -> pa.Table:
        cache_key = (path, tuple(columns))
        if self._last_table is not None and self._last_table[0] == cache_key:
            return self._last_table[1]  # v3.0: consecutive episodes share a file; read it once
        try:
            table = pq.read_table(path, columns=columns)
        except (pa.ArrowException, OSError) as error:
            raise DatasetError(f"{where}: unreadable parquet: {error}") from error
        self._last_table = (cache_key, table)
        return table

    # -- v2.1 / v3.0 metadata readers -------------------------------------------------------
    def _read_v21_meta(self) -> tuple[dict[int, str], dict[int, EpisodeRecord]]:
        meta = self.root / "meta"
        tasks = {}
        for row in read_jsonl(meta / "tasks.jsonl"):
            tasks[int(row["task_index"])] = str(row["task"])
        chunks_size = int(self.info.get("chunks_size", DEFAULT_CHUNKS_SIZE))
        data_path = self.info.get("data_path", V21_DATA_PATH)
        video_path = self.info.get("video_path") or V21_VIDEO_PATH
        episodes = {}
        total = int(self.info.get("total_episodes", -1))
        for row in read_jsonl(meta / "episodes.jsonl"):
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
        tasks = read_v30_tasks(meta / "tasks.parquet")
        files = sorted((meta / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"{meta / 'episodes'}: no episode metadata files")
        data_path = self.info.get("data_path")
        video_path = self.info.get("video_path")
        if not data_path or (self.video_keys and not video_path):
            raise DatasetError(f"{meta / 'info.json'}: missing data_path/video_path")
        total = int(self.info.get("total_episodes", -1))
        episodes = {}
        for path in files:
            try:
                # Only the location columns: the stats/* columns are many and not needed here.
                names = pq.read_schema(path).names
                wanted = [n for n in names if not n.startswith("stats/")]
                rows = pq.read_table(path, columns=wanted).to_pylist()
            except (pa.ArrowException, OSError) as error:
                raise DatasetError(f"{path}: unreadable parquet: {error}") from error
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
                if 0 <= total <= index:
                    continue  # written by a writer that stopped before committing info.json
                if index in episodes:
                    raise DatasetError(f"{path}: episode {index} listed twice in meta/episodes")
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


def read_v30_tasks(path: Path) -> dict[int, str]:
    """meta/tasks.parquet -> {task_index: task}.

    LeRobot writes the tasks DataFrame (index: task strings, column task_index) with pandas'
    to_parquet (utils.py write_tasks; lerobot_dataset.py save_episode_tasks builds the frame), so
    the text lands in the index column "__index_level_0__" (or "task" if the index was named),
    as string (pandas 2) or large_string (pandas 3) or string_view; the schema's pandas metadata
    names the index column."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"{path}: unreadable parquet: {error}") from error
    texts = [n for n in table.column_names if n != "task_index" and _is_text(table.schema.field(n).type)]
    pandas_meta = (table.schema.metadata or {}).get(b"pandas")
    if pandas_meta:
        index_columns = [c for c in json.loads(pandas_meta).get("index_columns", []) if isinstance(c, str)]
        texts = [n for n in texts if n in index_columns] or texts
    if len(texts) > 1:
        texts = [n for n in texts if n in ("task", "__index_level_0__")]
    if "task_index" not in table.column_names or len(texts) != 1:
        raise DatasetError(
            f"{path}: expected one column of task strings and a task_index column, got {table.schema}"
        )
    indices = table["task_index"].to_pylist()
    strings = table[texts[0]].to_pylist()
    if any(i is None for i in indices) or any(t is None for t in strings):
        raise DatasetError(f"{path}: missing task strings or task indices")
    tasks = {int(i): str(t) for i, t in zip(indices, strings, strict=True)}
    if len(tasks) != len(indices):
        raise DatasetError(f"{path}: repeated task_index values {sorted(indices)}")
    return tasks


def _is_text(kind: pa.DataType) -> bool:
    is_view = getattr(pa.types, "is_string_view", lambda _t: False)
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_view(kind)


def source_times_path(root: Path, data_file: Path) -> Path:
    return root / SOURCE_TIMES_DIR / data_file.relative_to(root)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: cannot read JSON: {error}") from error


def read_jsonl(path: Path, missing_ok: bool = False) -> list[dict[str, Any]]:
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
