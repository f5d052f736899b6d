"""Episode bags (rosbag2, MCAP or sqlite3) -> LeRobot v2.1 datasets.

Reads the topics named in the robot config (fastwam_bringup/config/r1_lite.yaml) from a bag made by
the recorder node or by a plain `ros2 bag record` of the same topics, and aligns every stream to
the reference (head) camera's timestamps:
    cameras   nearest frame (JPEG/PNG CompressedImage or raw Image), decoded to RGB
    state     feedback JointState positions, linearly interpolated, laid out as robot.state_groups
    action    commanded /motion_target positions, linearly interpolated, as robot.action_groups
The head camera is subsampled to the dataset fps (config control.rate_hz unless given), the
episode is trimmed to the span every stream covers, and the episode is appended through the shared
LeRobot v2.1 writer (fastwam.data.lerobot), which writes H.264 videos with PyAV and per-episode
stats; the global statistics (meta/fastwam_stats.json) are recomputed after each run.

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

import cv2
import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

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
    resize_to_layout: bool = False,
) -> AlignedEpisode:
    """Resample every stream at the reference camera's frames (subsampled to `fps`).

    resize_to_layout: store each camera at its size in the config's camera layout (what the model
    sees) instead of the native resolution: smaller datasets, faster conversion and loading.
    """
    bag = streams.bag
    reference = reference or ("head" if "head" in streams.cameras else config.cameras.keys[0])
    if reference not in streams.cameras:
        raise BagError(f"{bag}: reference camera {reference!r} is not among {sorted(streams.cameras)}")
    ref = streams.cameras[reference].stamps
    # Joints are interpolated, so frames must lie where every joint stream has samples; cameras are
    # matched to the nearest frame and checked for skew instead. Trimming more than max_trim_s at
    # either end means a stream started late or stopped early: an error, not a silent cut.
    joints = {
        **{f"feedback {g}": s for g, s in streams.feedback.items()},
        **{f"command {g}": s for g, s in streams.command.items()},
    }
    for name, stream in joints.items():
        late, early = (stream.stamps[0] - ref[0]) / 1e9, (ref[-1] - stream.stamps[-1]) / 1e9
        if max(late, early) > max_trim_s:
            what = f"starts {late:.2f} s after" if late > early else f"ends {early:.2f} s before"
            raise BagError(
                f"{bag}: {name} {what} the {reference} camera (more than --max-trim-s {max_trim_s})"
            )
    start = max([ref[0], *(s.stamps[0] for s in joints.values())])
    end = min([ref[-1], *(s.stamps[-1] for s in joints.values())])
    inside = np.nonzero((ref >= start) & (ref <= end))[0]
    if len(inside) < 2:
        raise BagError(
            f"{bag}: fewer than 2 {reference} frames lie in the span all topics cover; episode too short"
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
    }
    frames = {}
    for key, stream in streams.cameras.items():
        index = _nearest(stream.stamps, times)
        skew = np.abs(stream.stamps[index] - times) / 1e9
        if skew.max() > max_skew_s:
            k = int(skew.argmax())
            raise BagError(
                f"{bag}: camera {key} has no frame within {max_skew_s} s of {reference} frame {k} "
                f"(nearest {skew[k]:.3f} s away); camera stalled? (--max-skew-s to relax)"
            )
        info[f"max_skew_s.{key}"] = round(float(skew.max()), 4)
        size = _view_sizes(config)[key] if resize_to_layout else None
        frames[key] = _decode_frames(stream, index, key, bag, size)
    state = config.robot.join(
        _interpolate(streams.feedback, times, max_gap_s, "feedback", bag), config.robot.state_groups
    )
    action = config.robot.join(
        _interpolate(streams.command, times, max_gap_s, "command", bag), config.robot.action_groups
    )
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


def _interpolate(
    streams: dict[str, JointStream], times: np.ndarray, max_gap_s: float, kind: str, bag: Path
) -> dict[str, np.ndarray]:
    out = {}
    for group, stream in streams.items():
        nearest = _nearest(stream.stamps, times)
        gap = np.abs(stream.stamps[nearest] - times) / 1e9
        if gap.max() > max_gap_s:
            k = int(gap.argmax())
            raise BagError(
                f"{bag}: {kind} of group {group} has no sample within {max_gap_s} s of frame {k} "
                f"({gap[k]:.3f} s); publisher stalled? (--max-gap-s to relax)"
            )
        t = (stream.stamps - times[0]).astype(np.float64)  # relative ns keep float64 precision
        x = (times - times[0]).astype(np.float64)
        out[group] = np.stack(
            [np.interp(x, t, stream.positions[:, j]) for j in range(stream.positions.shape[1])], axis=-1
        )
    return out


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
            image = _decode_image(stream.messages[i], f"{bag}: camera {key} message {i}")
            if size is not None:
                image = resize_image(image, *size)
            decoded[i] = image
        clip.append(decoded[i])
    shapes = {f.shape for f in clip}
    if len(shapes) != 1:
        raise BagError(f"{bag}: camera {key} changes image size within the episode: {sorted(shapes)}")
    return np.stack(clip)


def _decode_image(message, where: str) -> np.ndarray:
    """CompressedImage (JPEG/PNG) or Image (rgb8/bgr8/rgba8/bgra8/mono8) -> uint8 RGB [H, W, 3]."""
    data = np.asarray(message.data, dtype=np.uint8)
    if hasattr(message, "format"):  # sensor_msgs/CompressedImage
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            raise BagError(f"{where}: cannot decode the compressed image (format {message.format!r})")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
    encoding = message.encoding
    if encoding not in channels:
        raise BagError(f"{where}: unsupported image encoding {encoding!r} (supported: {sorted(channels)})")
    c = channels[encoding]
    try:
        rows = data.reshape(message.height, message.step)[:, : message.width * c]
        image = rows.reshape(message.height, message.width, c)
    except ValueError as error:
        raise BagError(
            f"{where}: image buffer does not match {message.height}x{message.width} {encoding}"
        ) from error
    convert = {
        "bgr8": cv2.COLOR_BGR2RGB,
        "rgba8": cv2.COLOR_RGBA2RGB,
        "bgra8": cv2.COLOR_BGRA2RGB,
        "mono8": cv2.COLOR_GRAY2RGB,
    }
    return cv2.cvtColor(image, convert[encoding]) if encoding in convert else np.ascontiguousarray(image)


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
    resize_to_layout: bool = False,
    update_stats: bool = True,
    log=print,
) -> list[int]:
    """Append each bag as an episode; returns the new dataset episode indices.

    Bags already in the dataset (by name, meta/fastwam_sources.jsonl) are skipped, so re-running
    over a growing recording directory appends only the new episodes. Unfinished or failed
    episodes are skipped with a message (recover them first); a bag that cannot be converted
    raises BagError before anything of it is written.
    """
    from fastwam.data.lerobot import LeRobotV21Writer

    fps = float(fps or config.control.rate_hz)
    dataset = Path(dataset)
    writer = LeRobotV21Writer(
        dataset,
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
    for bag in map(Path, bags):
        if bag.name in done:
            log(f"skip {bag}: already in {dataset}")
            continue
        episode = read_episode_json(bag)
        status = (episode or {}).get("status")
        if status in (RECORDING, FAILED) and not is_complete_bag(bag):
            log(
                f"skip {bag}: episode {status} and unfinished; run `python -m fastwam.data.bag recover {bag}`"
            )
            continue
        if only_success and episode is not None and not episode.get("task_success"):
            log(f"skip {bag}: not labelled a success")
            continue
        task = instruction or (episode or {}).get("instruction") or ""
        if not task:
            raise BagError(f"{bag}: no instruction (no episode.json with one); pass --instruction")
        started = time.monotonic()
        streams = read_episode_streams(bag, config, time_source)
        read_s = time.monotonic() - started
        aligned = align_episode(
            streams,
            config,
            fps,
            max_skew_s=max_skew_s,
            max_gap_s=max_gap_s,
            max_trim_s=max_trim_s,
            resize_to_layout=resize_to_layout,
        )
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
        duration = len(aligned.timestamps) / fps
        log(
            f"{bag.name} -> episode {index}: {record['frames']} frames ({duration:.1f} s) in {time.monotonic() - started:.1f} s"
        )
    if added and update_stats:
        update_dataset_stats(dataset, config)
    return added


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
    c = sub.add_parser("convert", help="append episode bags to a LeRobot v2.1 dataset")
    c.add_argument("bags", nargs="+", help="bag directories or recorder output directories")
    c.add_argument("--dataset", required=True, help="LeRobot dataset root (created or appended to)")
    c.add_argument("--config", required=True, help="robot config YAML (fastwam_bringup/config/r1_lite.yaml)")
    c.add_argument("--fps", type=float, help="dataset fps (default: the config's control.rate_hz)")
    c.add_argument("--codec", default="h264", help="video codec: h264 (default), h264_lossless, av1")
    c.add_argument("--instruction", help="task text (required for bags without episode.json; overrides it)")
    c.add_argument("--time-source", choices=("header", "receive"), default="header")
    c.add_argument("--only-success", action="store_true", help="skip episodes not labelled successful")
    c.add_argument("--max-skew-s", type=float, default=0.25, help="max camera distance from a head frame")
    c.add_argument("--max-gap-s", type=float, default=0.5, help="max joint-sample distance from a frame")
    c.add_argument(
        "--max-trim-s", type=float, default=1.0, help="max cut where joint streams start late/end early"
    )
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
            added = convert_bags(
                find_bags(args.bags),
                args.dataset,
                config,
                fps=args.fps,
                codec=args.codec,
                instruction=args.instruction,
                time_source=args.time_source,
                only_success=args.only_success,
                max_skew_s=args.max_skew_s,
                max_gap_s=args.max_gap_s,
                max_trim_s=args.max_trim_s,
                resize_to_layout=args.resize_to_layout,
            )
            print(f"added {len(added)} episode(s) to {args.dataset}")
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
