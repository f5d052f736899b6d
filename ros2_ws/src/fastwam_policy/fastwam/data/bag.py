"""Episode bags (rosbag2, MCAP or sqlite3) -> LeRobot datasets (v3.0 by default, v2.1 by option).

Reads the topics named in the robot config (fastwam_policy/config/r1_lite.yaml) from a bag made by
the recorder node or by a plain `ros2 bag record` of the same topics, and aligns every stream to
the reference (head) camera's timestamps:
    cameras   nearest frame (JPEG/PNG CompressedImage or raw Image), decoded to RGB by
              fastwam.image_decoding, the policy node's decoder
    state     feedback JointState positions, linearly interpolated, laid out as robot.state_groups
    action    commanded /motion_target positions, laid out as robot.action_groups (policy below)
The head camera is subsampled to the dataset fps (config control.rate_hz unless given), and the
episode is appended through the shared LeRobot writer (fastwam.data.lerobot), which writes
H.264 videos with PyAV and per-episode stats; the global statistics (meta/fastwam_stats.json) are
recomputed after each run.

Real teleoperation (the policy for streams that start late, pause or end early). An operator
starts the recording, takes the controls seconds later, pauses, and lets go before stopping it:
  - idle head and tail: the frames before the first command (of any group) and after the last are
    trimmed, however long; the verdict says by how much. Nothing was commanded there, so there is
    no action to learn from them.
  - inside the commanded span, a group's target is its commands linearly interpolated where they
    are at most --max-gap-s apart; across a longer pause, the last command held until the next
    (what the robot's controller does with its last target); before the group's own first command,
    its measured position (the robot holds where it is); after its last command, the last command.
  - a pause of every command stream longer than --max-pause-s inside the span rejects the episode:
    a long idle stretch mid-demonstration would teach the policy to stand still (record it as two
    episodes instead). So does a commanded span of fewer than 2 frames (nothing commanded).
  - sensors are not filled in: a camera or feedback stream that starts more than --max-trim-s
    after the head camera, ends that much before it, or has a gap over --max-gap-s (cameras:
    --max-skew-s) rejects the episode, naming the stream.
Every bag gets a verdict: converted (frames, trimmed head/tail seconds, pauses held), skipped
(already in the dataset, unfinished, not a success with --only-success) or rejected (why). Each is
printed and appended as one JSON line to the report (default <dataset>/meta/fastwam_conversion.jsonl).
A rejected episode never stops the batch (the exit status is then 1) unless --strict, which stops
at the first. The converter only reads bags: nothing recorded is deleted or modified.

    python -m fastwam.data.bag convert BAG_OR_DIR... --dataset DIR --config r1_lite.yaml
    python -m fastwam.data.bag recover EPISODE_OR_OUTPUT_DIR...
    python -m fastwam.data.bag info BAG
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from fastwam import image_decoding
from fastwam.camera import resize_image
from fastwam.data.episode_bag import (
    EPISODE_DIR,
    FAILED,
    RECORDING,
    EpisodeError,
    find_incomplete_episodes,
    is_complete_bag,
    read_episode_json,
    recover_episode,
)
from fastwam.robot_config import RobotConfig, load_robot_config

CAMERA_FEATURE = "observation.images.{key}"
SOURCES_FILE = "meta/fastwam_sources.jsonl"  # dataset episode -> bag, success label, alignment facts
_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)  # sensor_msgs types are identical in Humble and Jazzy


class BagError(ValueError):
    """A bag cannot be converted; the message names the bag, topic and what is wrong."""


@dataclass
class CameraStream:
    stamps: np.ndarray  # int64 [N] ns, sorted
    messages: list[Any]  # CompressedImage / Image, in stamp order, decoded only when selected


@dataclass
class JointStream:
    stamps: np.ndarray  # int64 [N] ns, strictly increasing
    positions: np.ndarray  # float64 [N, n_joints]


@dataclass
class EpisodeStreams:
    bag: Path
    cameras: dict[str, CameraStream]
    feedback: dict[str, JointStream]
    command: dict[str, JointStream]
    episode: dict[str, Any] | None  # episode.json, None for plain `ros2 bag record` bags


@dataclass
class AlignedEpisode:
    frames: dict[str, np.ndarray]  # camera key -> uint8 [T, H, W, 3]
    state: np.ndarray  # float64 [T, S]
    action: np.ndarray  # float64 [T, A]
    timestamps: np.ndarray  # float64 [T], reference camera stamps in seconds since info["start_time_ns"]
    info: dict[str, Any] = field(default_factory=dict)


# -- reading ----------------------------------------------------------------------------------------
def read_episode_streams(
    bag: str | os.PathLike[str], config: RobotConfig, time_source: str = "header"
) -> EpisodeStreams:
    """Read the config's camera, feedback and command topics from one bag.

    time_source "header": message header stamps, falling back to the bag's receive time for a topic
    whose stamps are all zero (teleop commands often leave them unset); "receive": bag time only.
    """
    bag = Path(bag)
    if time_source not in ("header", "receive"):
        raise ValueError(f"time_source must be 'header' or 'receive', got {time_source!r}")
    if not is_complete_bag(bag):
        hint = (
            " (an interrupted episode: run `python -m fastwam.data.bag recover` first)"
            if (bag / "episode.json").is_file()
            else ""
        )
        raise BagError(f"{bag}: not a rosbag2 bag directory (no metadata.yaml){hint}")
    topics = config.topics
    wanted: dict[str, tuple[str, str]] = {}  # topic -> (kind, key)
    for key, cam in topics.cameras.items():
        wanted[cam.topic] = ("camera", key)
    for group in config.robot.state_groups:
        wanted[topics.feedback[group]] = ("feedback", group)
    for group in config.robot.action_groups:
        if topics.command[group] in wanted:
            raise BagError(f"robot config: topic {topics.command[group]} is both feedback and command")
        wanted[topics.command[group]] = ("command", group)
    raw: dict[str, list[tuple[int, Any]]] = {t: [] for t in wanted}
    try:
        with Reader(bag) as reader:
            present = {c.topic for c in reader.connections}
            missing = sorted(set(wanted) - present)
            if missing:
                raise BagError(f"{bag}: topics {missing} are not in the bag (it has {sorted(present)})")
            connections = [c for c in reader.connections if c.topic in wanted]
            for connection, timestamp, data in reader.messages(connections=connections):
                try:
                    message = _TYPESTORE.deserialize_cdr(data, connection.msgtype)
                except Exception as error:  # rosbags raises assorted errors on corrupt CDR
                    raise BagError(
                        f"{bag}: cannot deserialize a {connection.msgtype} on {connection.topic}: {error}"
                    ) from error
                raw[connection.topic].append((timestamp, message))
    except BagError:
        raise
    except Exception as error:  # rosbags ReaderError and OSError for unreadable files
        raise BagError(f"{bag}: cannot read the bag: {error}") from error
    streams = EpisodeStreams(bag, {}, {}, {}, read_episode_json(bag))
    for topic, (kind, key) in wanted.items():
        entries = raw[topic]
        if not entries:
            raise BagError(f"{bag}: topic {topic} ({kind} {key}) has no messages")
        stamps = _stamps(entries, time_source)
        order = np.argsort(stamps, kind="stable")
        stamps = stamps[order]
        messages = [entries[i][1] for i in order]
        if kind == "camera":
            streams.cameras[key] = CameraStream(stamps, messages)
        else:
            n = len(config.robot.group(key).joints)
            positions = np.stack(
                [
                    _joint_positions(m, config.robot.group(key).joints, n, topic, i)
                    for i, m in enumerate(messages)
                ]
            )
            keep = np.concatenate([[True], np.diff(stamps) > 0])  # np.interp needs increasing times
            stream = JointStream(stamps[keep], positions[keep])
            (streams.feedback if kind == "feedback" else streams.command)[key] = stream
    return streams


def _stamps(entries: list[tuple[int, Any]], time_source: str) -> np.ndarray:
    receive = np.array([t for t, _ in entries], dtype=np.int64)
    if time_source == "receive":
        return receive
    header = np.array(
        [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for _, m in entries], dtype=np.int64
    )
    return receive if not header.any() else header


def _joint_positions(message, joints: Sequence[str], n: int, topic: str, index: int) -> np.ndarray:
    position = np.asarray(message.position, dtype=np.float64)
    names = list(message.name)
    if names and all(j in names for j in joints):
        if len(names) != len(position):
            raise BagError(f"topic {topic} message {index}: {len(names)} names but {len(position)} positions")
        return position[[names.index(j) for j in joints]]
    # The R1 Lite leaves names empty: the order is positional.
    if len(position) < n:
        raise BagError(f"topic {topic} message {index}: {len(position)} positions, the group needs {n}")
    return position[:n]


# -- alignment --------------------------------------------------------------------------------------
def align_episode(
    streams: EpisodeStreams,
    config: RobotConfig,
    fps: float,
    reference: str | None = None,
    max_skew_s: float = 0.25,
    max_gap_s: float = 0.5,
    max_trim_s: float = 1.0,
    max_pause_s: float = 3.0,
    resize_to_layout: bool = False,
    decode: bool = True,
) -> AlignedEpisode:
    """Resample every stream at the reference camera's frames (subsampled to `fps`) over the
    commanded span (the module docstring's policy); raises BagError when the episode is rejected.

    resize_to_layout: store each camera at its size in the config's camera layout (what the model
    sees) instead of the native resolution: smaller datasets, faster conversion and loading.
    decode=False: every check, no image decoded (frames left empty): a quick verdict.
    """
    bag = streams.bag
    reference = reference or ("head" if "head" in streams.cameras else config.cameras.keys[0])
    if reference not in streams.cameras:
        raise BagError(f"{bag}: reference camera {reference!r} is not among {sorted(streams.cameras)}")
    ref = streams.cameras[reference].stamps
    # Sensors: frames must lie where every feedback stream has samples (they are interpolated);
    # one that starts late or stops early by more than max_trim_s is a fault, not idle time.
    for group, stream in streams.feedback.items():
        late, early = (stream.stamps[0] - ref[0]) / 1e9, (ref[-1] - stream.stamps[-1]) / 1e9
        if max(late, early) > max_trim_s:
            what = f"starts {late:.2f} s after" if late > early else f"ends {early:.2f} s before"
            raise BagError(
                f"{bag}: feedback {group} {what} the {reference} camera (more than --max-trim-s "
                f"{max_trim_s}): a sensor stream is not filled in"
            )
    if not streams.command:
        raise BagError(f"{bag}: the robot config names no command topics")
    # Commands: the span from the first command of any group to the last. A group without a
    # feedback stream of its name has no measured position to stand for its target before its
    # own first command, so the span starts no earlier than that.
    first = {g: int(s.stamps[0]) for g, s in streams.command.items()}
    last = {g: int(s.stamps[-1]) for g, s in streams.command.items()}
    command_start = max(
        [min(first.values()), *(first[g] for g in streams.command if g not in streams.feedback)]
    )
    command_end = max(last.values())
    start = max([int(ref[0]), command_start, *(int(s.stamps[0]) for s in streams.feedback.values())])
    end = min([int(ref[-1]), command_end, *(int(s.stamps[-1]) for s in streams.feedback.values())])
    inside = np.nonzero((ref >= start) & (ref <= end))[0]
    if len(inside) < 2:
        raise BagError(
            f"{bag}: fewer than 2 {reference} frames lie in the commanded span "
            f"({(command_end - command_start) / 1e9:.2f} s of commands in a "
            f"{(ref[-1] - ref[0]) / 1e9:.2f} s recording): nothing to learn from"
        )
    # A pause of every command stream at once inside the span: an idle stretch of the operator.
    union = np.unique(np.concatenate([s.stamps for s in streams.command.values()]))
    union = union[(union >= ref[inside[0]]) & (union <= ref[inside[-1]])]
    edges = np.concatenate([[ref[inside[0]]], union, [ref[inside[-1]]]])
    pauses = np.diff(edges) / 1e9
    longest = int(pauses.argmax())
    if pauses[longest] > max_pause_s:
        at = (edges[longest] - ref[0]) / 1e9
        raise BagError(
            f"{bag}: no command for {pauses[longest]:.2f} s from {at:.2f} s into the recording (more than "
            f"--max-pause-s {max_pause_s}): an idle stretch mid-demonstration; record it as two episodes"
        )
    span_s = (ref[inside[-1]] - ref[inside[0]]) / 1e9
    camera_rate = (len(inside) - 1) / span_s if span_s > 0 else float("inf")
    step = max(1, int(round(camera_rate / fps)))
    chosen = inside[::step]
    times = ref[chosen]  # int64 ns [T]
    info: dict[str, Any] = {
        "bag": bag.name,
        "reference_camera": reference,
        "reference_rate_hz": round(camera_rate, 3),
        "subsample_step": step,
        "frames": int(len(times)),
        "trimmed_start_s": round((ref[inside[0]] - ref[0]) / 1e9, 4),
        "trimmed_end_s": round((ref[-1] - ref[inside[-1]]) / 1e9, 4),
        # How much of the trimming is the operator's idle head / tail (no command yet / any more).
        "idle_head_s": round(max(0, command_start - int(ref[0])) / 1e9, 4),
        "idle_tail_s": round(max(0, int(ref[-1]) - command_end) / 1e9, 4),
    }
    # Every camera and feedback stream needs a message near each chosen frame: a stalled one is
    # refused, not stretched over the gap (cameras take their nearest frame, feedback is interpolated).
    nearest: dict[tuple[str, str], np.ndarray] = {}
    for kind, kind_streams, limit_s, hint in (
        ("camera", streams.cameras, max_skew_s, "camera stalled? (--max-skew-s to relax)"),
        ("feedback of group", streams.feedback, max_gap_s, "publisher stalled? (--max-gap-s to relax)"),
    ):
        for key, stream in kind_streams.items():
            index = nearest[kind, key] = _nearest(stream.stamps, times)
            distance = np.abs(stream.stamps[index] - times) / 1e9
            if distance.max() > limit_s:
                k = int(distance.argmax())
                raise BagError(
                    f"{bag}: {kind} {key} has no message within {limit_s} s of {reference} frame {k} "
                    f"(nearest {distance[k]:.3f} s away); {hint}"
                )
            if kind == "camera":
                info[f"max_skew_s.{key}"] = round(float(distance.max()), 4)
    feedback = {g: _interp(s.stamps, s.positions, times) for g, s in streams.feedback.items()}
    targets, held = {}, {}
    for group, stream in streams.command.items():
        targets[group], held[group] = _command_targets(stream, times, max_gap_s, feedback.get(group))
    info["command_pauses_held"] = {g: h for g, h in held.items() if h["count"]}
    state = config.robot.join(feedback, config.robot.state_groups)
    action = config.robot.join(targets, config.robot.action_groups)
    # Decoding last: a rejected episode costs no JPEG decoding.
    frames = {}
    for key, stream in streams.cameras.items() if decode else ():
        size = _view_sizes(config)[key] if resize_to_layout else None
        frames[key] = _decode_frames(stream, nearest["camera", key], key, bag, size)
    # Seconds since the first frame: float32 readers keep microseconds (epoch seconds would not).
    info["start_time_ns"] = int(times[0])
    return AlignedEpisode(frames, state, action, (times - times[0]).astype(np.float64) / 1e9, info)


def _nearest(stamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    right = (
        np.clip(np.searchsorted(stamps, times), 1, len(stamps) - 1)
        if len(stamps) > 1
        else np.zeros(len(times), int)
    )
    if len(stamps) == 1:
        return right
    left = right - 1
    return np.where(np.abs(stamps[left] - times) <= np.abs(stamps[right] - times), left, right)


def _interp(stamps: np.ndarray, positions: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Per-joint linear interpolation at `times`, the end values held outside the samples."""
    t = (stamps - times[0]).astype(np.float64)  # relative ns keep float64 precision
    x = (times - times[0]).astype(np.float64)
    return np.stack([np.interp(x, t, positions[:, j]) for j in range(positions.shape[1])], axis=-1)


def _command_targets(
    stream: JointStream, times: np.ndarray, max_gap_s: float, measured: np.ndarray | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """One group's targets at `times`: interpolated between commands at most max_gap_s apart, the
    last command held across a longer pause and after the last, the measured position before the
    first. Returns them with the held pauses inside [times[0], times[-1]] (count, longest)."""
    stamps, positions = stream.stamps, stream.positions
    long = np.nonzero(np.diff(stamps) > max_gap_s * 1e9)[0]
    inside = long[(stamps[long + 1] > times[0]) & (stamps[long] < times[-1])]
    pauses = (stamps[inside + 1] - stamps[inside]) / 1e9
    if len(long):
        # A copy of the command before each pause, 1 ns before the next command: a held target.
        stamps = np.insert(stamps, long + 1, stamps[long + 1] - 1)
        positions = np.insert(positions, long + 1, positions[long], axis=0)
    targets = _interp(stamps, positions, times)
    before = times < stream.stamps[0]
    if before.any():
        assert measured is not None  # align_episode starts the span at the first command otherwise
        targets[before] = measured[before]
    held = {"count": int(len(pauses)), "longest_s": round(float(pauses.max()), 3) if len(pauses) else 0.0}
    return targets, held


def _view_sizes(config: RobotConfig) -> dict[str, tuple[int, int]]:
    # A windowed view stores its whole resized image: the window is cut at composition, from the
    # same pixels as at run time.
    return {view.key: view.stored_size for row in config.cameras.rows for view in row}


def _decode_frames(
    stream: CameraStream, index: np.ndarray, key: str, bag: Path, size: tuple[int, int] | None
) -> np.ndarray:
    decoded: dict[int, np.ndarray] = {}
    clip = []
    for i in index.tolist():
        if i not in decoded:
            try:
                image = image_decoding.decode(stream.messages[i])
            except image_decoding.ImageError as error:
                raise BagError(f"{bag}: camera {key} message {i}: {error}") from error
            if size is not None:
                image = resize_image(image, *size)
            decoded[i] = image
        clip.append(decoded[i])
    shapes = {f.shape for f in clip}
    if len(shapes) != 1:
        raise BagError(f"{bag}: camera {key} changes image size within the episode: {sorted(shapes)}")
    return np.stack(clip)


# -- conversion -------------------------------------------------------------------------------------
def find_bags(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Bag directories from bags themselves or from recorder output directories (episodes sorted)."""
    bags = []
    for p in map(Path, paths):
        if is_complete_bag(p) or (p / "episode.json").is_file():
            bags.append(p)
        elif p.is_dir():
            found = sorted(
                c for c in p.iterdir() if c.is_dir() and (is_complete_bag(c) or EPISODE_DIR.match(c.name))
            )
            if not found:
                raise BagError(f"{p}: neither a bag nor a directory of episode bags")
            bags.extend(found)
        else:
            raise BagError(f"{p}: no such bag directory")
    return bags


CONVERTED, SKIPPED, REJECTED = "converted", "skipped", "rejected"
REPORT_FILE = "meta/fastwam_conversion.jsonl"  # one verdict per bag per run, appended


def convert_bags(
    bags: Sequence[str | os.PathLike[str]],
    dataset: str | os.PathLike[str],
    config: RobotConfig,
    fps: float | None = None,
    codec: str = "h264",
    instruction: str | None = None,
    time_source: str = "header",
    only_success: bool = False,
    max_skew_s: float = 0.25,
    max_gap_s: float = 0.5,
    max_trim_s: float = 1.0,
    max_pause_s: float = 3.0,
    resize_to_layout: bool = False,
    update_stats: bool = True,
    log=print,
    strict: bool = False,
    report: str | os.PathLike[str] | None = None,
    verdicts: list[dict[str, Any]] | None = None,
    dataset_format: str | None = None,
) -> list[int]:
    """Append each bag as an episode; returns the new dataset episode indices.

    A new dataset is written as `dataset_format` (v3.0 unless "v2.1"); an existing one keeps its
    format. The fps must be a whole number (LeRobot stores an integer fps): a fractional one is a
    ValueError before any bag is read.

    Bags already in the dataset (by name, meta/fastwam_sources.jsonl) are skipped, so re-running
    over a growing recording directory appends only the new episodes. Unfinished or failed
    episodes are skipped with a message (recover them first). A bag that cannot be converted is
    rejected before anything of it is written, and the batch goes on (strict: BagError at the
    first). Every bag's verdict is logged, appended to `report` (default <dataset>/REPORT_FILE)
    and, when given, to `verdicts`.
    """
    from fastwam.data.lerobot import integer_fps, open_writer

    fps = integer_fps(fps or config.control.rate_hz, "dataset fps (--fps, else the config's control.rate_hz)")
    dataset = Path(dataset)
    report = Path(report) if report is not None else dataset / REPORT_FILE
    run = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    writer = open_writer(
        dataset,
        version=dataset_format,
        fps=fps,
        robot_type=config.robot.name,
        camera_keys=[CAMERA_FEATURE.format(key=k) for k in config.cameras.keys],
        state_names=config.robot.state_joint_names,
        action_names=config.robot.action_joint_names,
        video_codec=codec,
    )
    sources_path = dataset / SOURCES_FILE
    sources = (
        [json.loads(line) for line in sources_path.read_text().splitlines()] if sources_path.is_file() else []
    )
    sources = [s for s in sources if s["episode_index"] < writer.num_episodes]  # drop uncommitted lines
    done = {s["bag"] for s in sources}
    added = []

    def verdict(bag: Path, kind: str, text: str, **facts: Any) -> dict[str, Any]:
        entry = {"run": run, "bag": str(bag), "verdict": kind, **facts}
        if kind != CONVERTED:
            entry["reason"] = text
        _append_line(report, entry)
        if verdicts is not None:
            verdicts.append(entry)
        log(f"{kind} {bag.name}: {text}" if kind != CONVERTED else f"{bag.name}: {text}")
        return entry

    for bag in map(Path, bags):
        if bag.name in done:
            verdict(bag, SKIPPED, f"already in {dataset}")
            continue
        try:
            episode = read_episode_json(bag)
        except EpisodeError as error:  # an unreadable episode.json
            verdict(bag, REJECTED, str(error))
            if strict:
                raise BagError(str(error)) from error
            continue
        status = (episode or {}).get("status")
        if status in (RECORDING, FAILED) and not is_complete_bag(bag):
            verdict(
                bag,
                SKIPPED,
                f"episode {status} and unfinished; run `python -m fastwam.data.bag recover {bag}`",
            )
            continue
        if only_success and episode is not None and not episode.get("task_success"):
            verdict(bag, SKIPPED, "not labelled a success")
            continue
        started = time.monotonic()
        try:
            task = instruction or (episode or {}).get("instruction") or ""
            if not task:
                raise BagError(f"{bag}: no instruction (no episode.json with one); pass --instruction")
            streams = read_episode_streams(bag, config, time_source)
            read_s = time.monotonic() - started
            aligned = align_episode(
                streams,
                config,
                fps,
                max_skew_s=max_skew_s,
                max_gap_s=max_gap_s,
                max_trim_s=max_trim_s,
                max_pause_s=max_pause_s,
                resize_to_layout=resize_to_layout,
            )
        except BagError as error:
            verdict(bag, REJECTED, str(error))
            if strict:
                raise
            continue
        align_s = time.monotonic() - started - read_s
        # The source line goes in first, under the index the episode will get: lines past the
        # dataset's committed episode count are ignored on reopening, and a crash right after the
        # writer commits can no longer leave the bag unlisted (and converted twice on the next run).
        record = {
            "episode_index": writer.num_episodes,
            **aligned.info,
            "task": task,
            "task_success": (episode or {}).get("task_success"),
            "partial": bool((episode or {}).get("partial", False)),
        }
        _write_lines(sources_path, [*sources, record])
        index = writer.add_episode(
            {CAMERA_FEATURE.format(key=k): v for k, v in aligned.frames.items()},
            state=aligned.state,
            action=aligned.action,
            timestamps=aligned.timestamps,
            task=task,
        )
        assert index == record["episode_index"], (index, record["episode_index"])
        # Conversion cost: bag reading, alignment + JPEG decoding, dataset writing (video encoding).
        record["seconds"] = {
            "read": round(read_s, 3),
            "align_decode": round(align_s, 3),
            "write": round(time.monotonic() - started - read_s - align_s, 3),
        }
        sources.append(record)
        _write_lines(sources_path, sources)
        done.add(bag.name)
        added.append(index)
        info = aligned.info
        duration = len(aligned.timestamps) / fps
        held = sum(h["count"] for h in info["command_pauses_held"].values())
        trimmed = f", trimmed {info['trimmed_start_s']:.2f} s head / {info['trimmed_end_s']:.2f} s tail"
        verdict(
            bag,
            CONVERTED,
            f"converted -> episode {index}: {info['frames']} frames ({duration:.1f} s){trimmed}"
            + (f", {held} command pause(s) held" if held else "")
            + f" in {time.monotonic() - started:.1f} s",
            episode_index=index,
            frames=info["frames"],
            **{
                k: info[k]
                for k in (
                    "trimmed_start_s",
                    "trimmed_end_s",
                    "idle_head_s",
                    "idle_tail_s",
                    "command_pauses_held",
                )
            },
        )
    if added and update_stats:
        update_dataset_stats(dataset, config)
    return added


def check_bag(
    bag: str | os.PathLike[str],
    config: RobotConfig,
    fps: float | None = None,
    time_source: str = "header",
    **limits,
) -> str:
    """Why convert_bags would reject this bag with these limits (align_episode's keywords), or ""
    when it would convert it. Reads the bag, decodes no image."""
    try:
        streams = read_episode_streams(bag, config, time_source)
        align_episode(streams, config, float(fps or config.control.rate_hz), decode=False, **limits)
    except (BagError, EpisodeError) as error:
        return str(error)
    return ""


def update_dataset_stats(dataset: str | os.PathLike[str], config: RobotConfig) -> Path:
    """Recompute the global action/state statistics file over all episodes (after appending)."""
    from fastwam.data.lerobot import LeRobotDataset
    from fastwam.data.stats import load_or_compute_stats
    from fastwam.data.windows import DatasetKeys

    keys = DatasetKeys(cameras={k: CAMERA_FEATURE.format(key=k) for k in config.cameras.keys})
    _, path = load_or_compute_stats(LeRobotDataset(dataset), keys, recompute=True, progress=False)
    return path


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    os.replace(tmp, path)


def _append_line(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True, default=str) + "\n")


def bag_info(bag: str | os.PathLike[str]) -> dict[str, Any]:
    bag = Path(bag)
    out: dict[str, Any] = {
        "bag": str(bag),
        "complete": is_complete_bag(bag),
        "episode": read_episode_json(bag),
    }
    if out["complete"]:
        with Reader(bag) as reader:
            out["duration_s"] = reader.duration / 1e9
            out["topics"] = {c.topic: {"type": c.msgtype, "count": c.msgcount} for c in reader.connections}
    return out


# -- CLI --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bag_to_lerobot", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="append episode bags to a LeRobot dataset (v3.0, or v2.1)")
    c.add_argument("bags", nargs="+", help="bag directories or recorder output directories")
    c.add_argument("--dataset", required=True, help="LeRobot dataset root (created or appended to)")
    c.add_argument("--config", required=True, help="robot config YAML (fastwam_policy/config/r1_lite.yaml)")
    c.add_argument(
        "--fps", type=float, help="dataset fps, a whole number (default: the config's control.rate_hz)"
    )
    c.add_argument(
        "--format",
        choices=("v3.0", "v2.1"),
        help="format of a new dataset (default v3.0; an existing dataset keeps its own)",
    )
    c.add_argument("--codec", default="h264", help="video codec: h264 (default), h264_lossless, av1")
    c.add_argument("--instruction", help="task text (required for bags without episode.json; overrides it)")
    c.add_argument("--time-source", choices=("header", "receive"), default="header")
    c.add_argument("--only-success", action="store_true", help="skip episodes not labelled successful")
    c.add_argument("--max-skew-s", type=float, default=0.25, help="max camera distance from a head frame")
    c.add_argument(
        "--max-gap-s",
        type=float,
        default=0.5,
        help="feedback: max sample distance from a frame (else rejected); commands: further apart, the "
        "last one is held instead of interpolated",
    )
    c.add_argument(
        "--max-trim-s",
        type=float,
        default=1.0,
        help="max a feedback stream may start after / end before the head camera (idle command head and "
        "tail are trimmed without limit)",
    )
    c.add_argument(
        "--max-pause-s",
        type=float,
        default=3.0,
        help="max time with no command at all inside the commanded span (longer: rejected)",
    )
    c.add_argument("--strict", action="store_true", help="stop at the first rejected episode")
    c.add_argument("--report", help="verdicts file, JSON lines (default: <dataset>/" + REPORT_FILE + ")")
    c.add_argument(
        "--resize-to-layout",
        action="store_true",
        help="store cameras at their camera-layout size (e.g. head 256x320, wrists 128x160), not native",
    )
    r = sub.add_parser("recover", help="rebuild interrupted episode bags from their written chunks")
    r.add_argument("paths", nargs="+", help="episode directories or recorder output directories")
    i = sub.add_parser("info", help="print a bag's topics, counts and episode.json")
    i.add_argument("bag")
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            config = load_robot_config(args.config)
            verdicts: list[dict[str, Any]] = []
            added = convert_bags(
                find_bags(args.bags),
                args.dataset,
                config,
                fps=args.fps,
                codec=args.codec,
                dataset_format=args.format,
                instruction=args.instruction,
                time_source=args.time_source,
                only_success=args.only_success,
                max_skew_s=args.max_skew_s,
                max_gap_s=args.max_gap_s,
                max_trim_s=args.max_trim_s,
                max_pause_s=args.max_pause_s,
                resize_to_layout=args.resize_to_layout,
                strict=args.strict,
                report=args.report,
                verdicts=verdicts,
            )
            rejected = [v for v in verdicts if v["verdict"] == REJECTED]
            report = args.report or str(Path(args.dataset) / REPORT_FILE)
            print(
                f"added {len(added)} episode(s) to {args.dataset}; {len(rejected)} rejected; verdicts in {report}"
            )
            if rejected:
                return 1
        elif args.command == "recover":
            targets = []
            for p in map(Path, args.paths):
                targets.extend(
                    [p]
                    if (p / "episode.json").is_file() or EPISODE_DIR.match(p.name)
                    else find_incomplete_episodes(p)
                )
            if not targets:
                print("nothing to recover")
            for p in targets:
                info = recover_episode(p)
                print(f"recovered {p}: {info['recovered_messages']} messages (partial)")
        else:
            print(json.dumps(bag_info(args.bag), indent=2, default=str))
    except (BagError, EpisodeError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
