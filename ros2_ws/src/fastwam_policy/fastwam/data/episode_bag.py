"""Demonstration episodes as rosbag2 MCAP bags, written incrementally so nothing is lost.

One episode is one rosbag2 bag directory (metadata.yaml + one .mcap, standard type names such as
sensor_msgs/msg/CompressedImage, rosbag2 metadata version 8 so Humble's and Jazzy's `ros2 bag`,
Foxglove and the rosbags/mcap readers open it) plus `episode.json` beside them:

    <output>/episode_000003_20261124-061502/
        episode_000003_20261124-061502.mcap   chunks of CDR messages
        metadata.yaml                         written on a clean close (its presence = complete bag)
        episode.json                          instruction, status, task_success, times, per-topic counts

`episode.json` is written when the episode starts (status "recording") and rewritten atomically
when it ends ("saved", or "failed" with the error). Messages are appended by a writer thread and
the open MCAP chunk is closed, flushed (and fsync'ed) every `flush_period_s`, so a recorder killed
with SIGKILL loses at most that last period: `recover_episode` rebuilds a complete bag from every
chunk that reached the disk and marks the episode partial. Nothing here imports ROS: messages
arrive already CDR-serialized (rclpy raw subscriptions or rclpy.serialization.serialize_message).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

EPISODE_FILE = "episode.json"
EPISODE_FORMAT = "fastwam-episode/1"
# rosbag2 metadata version 8 keeps offered_qos_profiles a YAML string, which Humble's reader parses;
# version 9 (a YAML list) breaks `ros2 bag info` on Humble. Jazzy reads both.
BAG_VERSION = 8
EPISODE_DIR = re.compile(r"^episode_(\d{6})_")
# Episode statuses in episode.json.
RECORDING, SAVED, FAILED, RECOVERED = "recording", "saved", "failed", "recovered"

_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


class EpisodeError(RuntimeError):
    """An episode cannot be started, written, closed or recovered; the message names the path."""


@dataclass(frozen=True)
class TopicSpec:
    """One recorded topic: its name, ROS 2 type name and the QoS its publisher offers (for playback)."""

    topic: str
    msgtype: str  # e.g. "sensor_msgs/msg/CompressedImage"
    reliable: bool = False
    transient_local: bool = False
    depth: int = 100

    def qos(self) -> Qos:
        return Qos(
            QosHistory.KEEP_LAST,
            self.depth,
            QosReliability.RELIABLE if self.reliable else QosReliability.BEST_EFFORT,
            QosDurability.TRANSIENT_LOCAL if self.transient_local else QosDurability.VOLATILE,
            QosTime(0, 0),
            QosTime(0, 0),
            QosLiveliness.AUTOMATIC,
            QosTime(0, 0),
            False,
        )


def message_definition(msgtype: str) -> tuple[str, str]:
    """(ros2msg text with dependencies, RIHS01 hash) of a standard message type."""
    try:
        msgdef, _ = _TYPESTORE.generate_msgdef(msgtype, ros_version=2)
        return msgdef, _TYPESTORE.hash_rihs01(msgtype)
    except Exception as error:  # rosbags raises its own TypesysError subclasses
        raise EpisodeError(f"unknown message type {msgtype!r}: {error}") from error


class EpisodeBagWriter:
    """A rosbag2 MCAP bag written message by message, with explicit chunk flushes.

    rosbags' MCAP writer keeps the open chunk in memory until it reaches 1 MiB; `flush` closes it
    early and pushes it to the disk, which bounds what a crash can lose.
    """

    def __init__(self, path: Path, topics: Sequence[TopicSpec], fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        try:
            self._writer.open()
        except (WriterError, OSError) as error:
            raise EpisodeError(f"cannot create episode bag {self.path}: {error}") from error
        storage = self._writer.storage
        if not (hasattr(storage, "close_chunk") and hasattr(storage, "chunk") and hasattr(storage, "bio")):
            raise EpisodeError(
                "this rosbags version's MCAP writer lacks close_chunk/chunk/bio; pin rosbags==0.11.9"
            )
        self._connections = []
        for spec in topics:
            self.add_topic(spec)

    def add_topic(self, spec: TopicSpec) -> int:
        """Register a topic; returns the index `write` takes."""
        msgdef, rihs01 = message_definition(spec.msgtype)
        self._connections.append(
            self._writer.add_connection(
                spec.topic, spec.msgtype, msgdef=msgdef, rihs01=rihs01, offered_qos_profiles=[spec.qos()]
            )
        )
        return len(self._connections) - 1

    @property
    def mcap_path(self) -> Path:
        return self._writer.storage.path if self._writer.storage else self.path / f"{self.path.name}.mcap"

    def write(self, topic_index: int, timestamp_ns: int, data: bytes | memoryview) -> None:
        self._writer.write(self._connections[topic_index], int(timestamp_ns), data)

    def flush(self) -> None:
        """Close the pending chunk (if it holds messages) and push it to the disk."""
        storage = self._writer.storage
        if storage is None:
            return
        # The first chunk also carries the schema and channel records, so a recovered file has them.
        # A chunk without messages would get an inverted time range: keep it open until one comes.
        if storage.chunk.msgs:
            storage.close_chunk()
        storage.bio.flush()
        if self.fsync:
            os.fsync(storage.bio.fileno())

    def close(self, custom_data: Mapping[str, str] | None = None) -> None:
        """Write the MCAP summary and metadata.yaml: the bag is complete."""
        for key, value in (custom_data or {}).items():
            self._writer.set_custom_data(key, str(value))
        self._writer.close()

    def abandon(self) -> None:
        """Release the file after a write error, keeping whatever reached the disk for recovery."""
        storage, self._writer.storage = self._writer.storage, None
        if storage is not None:
            # The write that failed already said why; what is on the disk stays as it is.
            with contextlib.suppress(OSError):
                storage.bio.close()


@dataclass
class TopicCounters:
    received: int = 0  # handed to the recorder while recording
    written: int = 0
    dropped: int = 0  # publisher sequence gaps + queue overflow + write failures
    last_seq: int | None = None
    single_publisher: bool = True


@dataclass
class RecorderStatus:
    """Snapshot of the recorder for the ~/status message."""

    recording: bool
    episode: str
    instruction: str
    elapsed_s: float
    episodes_saved: int
    topics: list[str]
    counts: list[int]
    rates_hz: list[float]
    dropped: list[int]
    error: str


@dataclass
class RecordedEpisode:
    """An episode the recorder is writing or has written: its bag directory and metadata."""

    name: str
    path: Path
    info: dict[str, Any] = field(default_factory=dict)


_STOP = object()


class EpisodeRecorder:
    """Episode lifecycle and the writer thread; the ROS node only forwards messages and service calls.

    `submit` is called from subscription callbacks and never touches the disk: messages go into a
    queue drained by one writer thread. A write error (disk full, directory gone) stops the episode
    with `error` set; messages already on disk stay there and earlier episodes are never touched.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        topics: Sequence[TopicSpec],
        flush_period_s: float = 1.0,
        fsync: bool = True,
        max_queue_bytes: int = 512 * 2**20,
        metadata: Mapping[str, Any] | None = None,
        keep_empty: bool = False,
    ) -> None:
        if not topics:
            raise ValueError("the recorder needs at least one topic")
        self.output_dir = Path(output_dir)
        self.topics = list(topics)
        self.flush_period_s = float(flush_period_s)
        self.fsync = fsync
        self.max_queue_bytes = int(max_queue_bytes)
        self.metadata = dict(metadata or {})
        self.keep_empty = keep_empty  # False: an episode that recorded no message is discarded
        self.counters = [TopicCounters() for _ in self.topics]
        self.error = ""
        self.episodes_saved = 0
        self.last_episode = ""
        self._lock = threading.Lock()
        self._recording = False
        self._episode: RecordedEpisode | None = None
        self._writer: EpisodeBagWriter | None = None
        self._instruction = ""
        self._start_ns = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued_bytes = 0
        self._closed = threading.Event()
        self._closed.set()
        self._rate_marks: list[tuple[float, list[int]]] = []
        self._thread: threading.Thread | None = None
        self._drain_by: float | None = None  # monotonic time after which queued messages are dropped

    # -- called from the node ------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self._recording

    def start(self, instruction: str) -> RecordedEpisode:
        """Create the next episode bag and start accepting messages. Raises EpisodeError."""
        with self._lock:
            if self._recording:
                raise EpisodeError(f"already recording episode {self._episode.name if self._episode else ''}")
            if not self._closed.wait(timeout=30.0):
                raise EpisodeError("the previous episode is still being closed")
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                index = next_episode_index(self.output_dir)
                name = f"episode_{index:06d}_{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
                path = self.output_dir / name
                writer = EpisodeBagWriter(path, self.topics, fsync=self.fsync)
            except (OSError, EpisodeError) as error:
                self.error = f"cannot start an episode in {self.output_dir}: {error}"
                raise EpisodeError(self.error) from error
            self._start_ns = time.time_ns()
            episode = RecordedEpisode(name, path)
            episode.info = {
                "format": EPISODE_FORMAT,
                "episode": name,
                "index": index,
                "instruction": instruction,
                "status": RECORDING,
                "task_success": None,
                "start_time_ns": self._start_ns,
                "stop_time_ns": None,
                **self.metadata,
            }
            try:
                write_episode_json(path, episode.info)
            except OSError as error:
                writer.abandon()
                self.error = f"cannot write {path / EPISODE_FILE}: {error}"
                raise EpisodeError(self.error) from error
            for c in self.counters:
                c.received = c.written = c.dropped = 0
            self._episode, self._writer, self._instruction = episode, writer, instruction
            self.last_episode = name
            self.error = ""
            self._queued_bytes = 0
            self._rate_marks = [(time.monotonic(), [0] * len(self.topics))]
            self._close_error = ""
            self._queue = queue.SimpleQueue()  # per episode: stale messages never leak into the next
            self._closed.clear()
            self._thread = threading.Thread(
                target=self._write_loop, args=(writer, episode, self._queue), daemon=True
            )
            self._thread.start()
            self._recording = True
            return episode

    def stop(
        self,
        save: bool,
        task_success: bool | None,
        timeout_s: float = 60.0,
        reason: str = "request",
        drain_s: float | None = None,
    ) -> RecordedEpisode:
        """End the episode: finalize it (save) or delete it. Raises EpisodeError.

        task_success None = unknown (e.g. saved by a shutdown); `reason` is stored as stopped_by.
        drain_s: messages still queued that long after the call are dropped (counted) so that the
        bag is closed in time (a shutdown); None: all are written. An episode that recorded no
        message is discarded unless keep_empty: its info then says discarded "empty".
        """
        with self._lock:
            episode = self._episode
            if episode is None:
                if self.error:
                    last = f" (episode {self.last_episode} failed: {self.error})" if self.last_episode else ""
                    last = last or f" (the last start failed: {self.error})"
                else:
                    last = ""
                raise EpisodeError("not recording" + last)
            self._recording = False
            self._drain_by = None if drain_s is None else time.monotonic() + drain_s
            self._queue.put((_STOP, save, task_success, reason))
            if not self._closed.wait(timeout=timeout_s):
                raise EpisodeError(f"episode {episode.name}: closing took longer than {timeout_s} s")
            self._episode = None
            if self._close_error:
                raise EpisodeError(self._close_error)
            if save and not episode.info.get("discarded"):
                self.episodes_saved += 1
            return episode

    def submit(self, topic_index: int, timestamp_ns: int, data: bytes, seq: int | None = None) -> None:
        """Queue one serialized message (any thread). `seq`: the publisher's sequence number if known."""
        counter = self.counters[topic_index]
        gap = 0
        if seq is not None:
            # Sequence numbers are per publisher; gaps mean something only with one publisher.
            if counter.last_seq is not None and seq > counter.last_seq + 1 and counter.single_publisher:
                gap = seq - counter.last_seq - 1
            counter.last_seq = seq
        if not self._recording:
            return
        counter.received += 1
        counter.dropped += gap
        if self._queued_bytes + len(data) > self.max_queue_bytes:
            counter.dropped += 1  # the disk cannot keep up; counted, never silently lost
            return
        self._queued_bytes += len(data)
        self._queue.put((topic_index, timestamp_ns, data))

    def set_publisher_count(self, topic_index: int, count: int) -> None:
        self.counters[topic_index].single_publisher = count <= 1

    def status(self) -> RecorderStatus:
        now = time.monotonic()
        counts = [c.written for c in self.counters]
        rates = [0.0] * len(counts)
        if self._recording and self._rate_marks:
            # Rates over the last ~2 s of status calls (the node calls this at 1 Hz).
            then, old = self._rate_marks[0]
            if now - then > 0.1:
                rates = [(n - o) / (now - then) for n, o in zip(counts, old)]
            self._rate_marks.append((now, counts))
            self._rate_marks = [m for m in self._rate_marks if now - m[0] <= 2.5] or self._rate_marks[-1:]
        episode = self._episode
        return RecorderStatus(
            recording=self._recording,
            episode=episode.name if episode else self.last_episode,
            instruction=self._instruction,
            elapsed_s=(time.time_ns() - self._start_ns) / 1e9 if self._recording else 0.0,
            episodes_saved=self.episodes_saved,
            topics=[t.topic for t in self.topics],
            counts=counts,
            rates_hz=rates,
            dropped=[c.dropped for c in self.counters],
            error=self.error,
        )

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Save a running episode (success unknown) on a clean shutdown rather than lose it, within
        about timeout_s: what is still queued after half of it is dropped (counted in the bag's
        episode.json) so the bag is closed in time; past timeout_s the bag is left as the disk has it
        (recoverable up to its last flushed chunk)."""
        if self._recording:
            with contextlib.suppress(EpisodeError):  # reported through self.error; bag stays recoverable
                self.stop(
                    save=True,
                    task_success=None,
                    reason="shutdown",
                    timeout_s=timeout_s,
                    drain_s=timeout_s / 2,
                )

    # -- writer thread ---------------------------------------------------------------------------
    _close_error = ""

    def _write_loop(
        self, writer: EpisodeBagWriter, episode: RecordedEpisode, items: queue.SimpleQueue
    ) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                item = items.get(timeout=max(0.05, self.flush_period_s / 4))
            except queue.Empty:
                item = None
            if item is not None and item[0] is _STOP:
                self._finish(writer, episode, save=item[1], task_success=item[2], failed="", reason=item[3])
                return
            try:
                if item is not None:
                    index, stamp, data = item
                    self._queued_bytes -= len(data)
                    if self._drain_by is not None and time.monotonic() > self._drain_by:
                        self.counters[index].dropped += 1  # closing on a deadline: counted, not written
                        continue
                    writer.write(index, stamp, data)
                    self.counters[index].written += 1
                if time.monotonic() - last_flush >= self.flush_period_s:
                    writer.flush()
                    last_flush = time.monotonic()
            except (OSError, WriterError, struct.error) as error:
                # Disk full, directory removed, ...: stop cleanly. What reached the disk stays there
                # (recover_episode rebuilds it); earlier episodes live in other directories.
                self._recording = False
                failed = f"episode {episode.name}: write to {writer.path} failed: {error}; recording stopped"
                self.error = failed
                if item is not None:
                    self.counters[item[0]].dropped += 1
                writer.abandon()
                while True:  # count what was still queued as dropped
                    try:
                        rest = items.get_nowait()
                    except queue.Empty:
                        break
                    if rest[0] is not _STOP:
                        self.counters[rest[0]].dropped += 1
                self._finish(writer, episode, save=False, task_success=None, failed=failed, reason="error")
                return

    def _finish(self, writer, episode, save: bool, task_success, failed: str, reason: str) -> None:
        try:
            stop_ns = time.time_ns()
            counts = {
                t.topic: {"msgtype": t.msgtype, "count": c.written, "dropped": c.dropped}
                for t, c in zip(self.topics, self.counters)
            }
            episode.info.update(
                stop_time_ns=stop_ns,
                duration_s=(stop_ns - episode.info["start_time_ns"]) / 1e9,
                topics=counts,
                task_success=None if task_success is None or not save else bool(task_success),
                stopped_by=reason,
            )
            if failed:
                episode.info.update(status=FAILED, error=failed, partial=True, task_success=None)
                # Disk still full: episode.json keeps saying "recording"; recovery handles both.
                with contextlib.suppress(OSError):
                    write_episode_json(episode.path, episode.info)
                self._episode = None
                return
            if save and not self.keep_empty and not any(c.written for c in self.counters):
                save = False  # nothing to learn from; the caller sees info["discarded"]
                episode.info["discarded"] = "empty"
            if not save:
                writer.abandon()
                shutil.rmtree(episode.path, ignore_errors=True)
                return
            try:
                writer.close(
                    {
                        "fastwam.instruction": episode.info["instruction"],
                        "fastwam.task_success": json.dumps(episode.info["task_success"]),
                        "fastwam.episode": episode.name,
                    }
                )
                episode.info.update(status=SAVED, partial=False)
                write_episode_json(episode.path, episode.info)
            except (OSError, WriterError, struct.error) as error:
                writer.abandon()
                self._close_error = self.error = (
                    f"episode {episode.name}: closing {episode.path} failed: {error}"
                )
        finally:
            self._closed.set()


def check_output_dir(path: str | os.PathLike[str], min_free_bytes: int = 0) -> Path:
    """The recorder's output directory, made if missing, proven writable (a file created, synced
    and removed: permission bits alone do not say it for root or read-only mounts) and with at
    least min_free_bytes free. Raises EpisodeError naming the directory and the problem."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EpisodeError(f"output directory {path} cannot be created: {error}") from error
    probe = path / f".write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0")
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        raise EpisodeError(f"output directory {path} is not writable: {error}") from error
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise EpisodeError(
            f"output directory {path} has {free / 2**20:.0f} MiB free, less than the {min_free_bytes / 2**20:.0f} "
            "MiB required (parameter min_free_space_mb)"
        )
    return path


# -- episode files ---------------------------------------------------------------------------------
def write_episode_json(path: Path, info: Mapping[str, Any]) -> None:
    target = Path(path) / EPISODE_FILE
    tmp = target.with_name(f".{EPISODE_FILE}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(info, indent=2, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)  # the previous episode.json stays whole until this instant
    finally:
        tmp.unlink(missing_ok=True)


def read_episode_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """episode.json of a bag directory, or None for bags recorded without the recorder."""
    file = Path(path) / EPISODE_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise EpisodeError(f"{file} is not valid JSON: {error}") from error


def next_episode_index(output_dir: Path) -> int:
    indices = [int(m.group(1)) for p in output_dir.iterdir() if (m := EPISODE_DIR.match(p.name))]
    return max(indices, default=-1) + 1


def is_complete_bag(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / "metadata.yaml").is_file()


def find_incomplete_episodes(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Episode directories without metadata.yaml: killed or failed mid-episode."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted(
        p for p in output_dir.iterdir() if p.is_dir() and EPISODE_DIR.match(p.name) and not is_complete_bag(p)
    )


def recover_episode(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Rebuild a complete bag from what an interrupted episode left on disk; returns its episode.json.

    Every message of every chunk that reached the disk is copied into a fresh bag (same directory
    and file names, so `ros2 bag` and the converter read it like any other); the truncated original
    is kept beside it as `<name>.mcap.partial`. The episode is marked status "recovered", partial.
    """
    from mcap.exceptions import McapError
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    path = Path(path)
    if is_complete_bag(path):
        raise EpisodeError(f"{path} is a complete bag (metadata.yaml present); nothing to recover")
    source = path / f"{path.name}.mcap"
    kept = path / f"{path.name}.mcap.partial"
    if not source.is_file() and kept.is_file():
        source = kept  # an earlier recovery was interrupted after setting the original aside
    if not source.is_file():
        raise EpisodeError(f"{path}: no MCAP file {source.name} to recover from")
    info = read_episode_json(path) or {"format": EPISODE_FORMAT, "episode": path.name, "instruction": ""}
    staging = path.parent / f".recover-{path.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    index_of: dict[int, int] = {}  # MCAP channel id -> rebuilt bag topic index
    specs: list[TopicSpec] = []
    counts: dict[str, int] = {}
    last_ns, truncated = None, False
    try:
        rebuilt = EpisodeBagWriter(staging / path.name, [], fsync=True)
        with open(source, "rb") as f:
            try:
                # Streams record by record (chunks decompressed one at a time): memory stays small.
                for record in StreamReader(f, skip_magic=False).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record
                    elif isinstance(record, Channel):
                        channels[record.id] = record
                    elif isinstance(record, Message):
                        cid = record.channel_id
                        if cid not in index_of:
                            channel = channels.get(cid)
                            if channel is None or channel.schema_id not in schemas:
                                continue  # cannot happen with our writer: channels precede messages
                            specs.append(TopicSpec(channel.topic, schemas[channel.schema_id].name))
                            index_of[cid] = rebuilt.add_topic(specs[-1])
                            counts[channel.topic] = 0
                        rebuilt.write(index_of[cid], record.log_time, record.data)
                        counts[channels[cid].topic] += 1
                        last_ns = record.log_time if last_ns is None else max(last_ns, record.log_time)
            except (McapError, EOFError, struct.error, ValueError):
                truncated = True  # the interrupted tail; everything before it was read
        if not specs:
            raise EpisodeError(f"{source}: no complete message chunk reached the disk; nothing to recover")
        rebuilt.close({"fastwam.instruction": str(info.get("instruction", "")), "fastwam.partial": "true"})
        if source != kept:
            os.replace(source, kept)
        os.replace(staging / path.name / f"{path.name}.mcap", path / f"{path.name}.mcap")
        os.replace(staging / path.name / "metadata.yaml", path / "metadata.yaml")  # commit point
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    previous_topics = info.get("topics") or {}
    info.update(
        status=RECOVERED,
        partial=True,
        truncated_tail=truncated,
        previous_status=info.get("status"),
        topics={
            s.topic: {**previous_topics.get(s.topic, {}), "msgtype": s.msgtype, "count": counts[s.topic]}
            for s in specs
        },
        recovered_messages=sum(counts.values()),
        stop_time_ns=info.get("stop_time_ns") or last_ns,
    )
    write_episode_json(path, info)
    return info
