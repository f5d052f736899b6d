"""The robot config file (fastwam_policy/config/r1_lite.yaml): one YAML read by every node.

It holds the robot spec and camera layout (which a checkpoint must match), the ROS topic names,
the control settings and the input freshness limits. The policy node, the recorder, the simulated
robot and the single-process runner all load it through `load_robot_config`, so a topic or joint
order is changed in one place. Parsing is strict: unknown or missing keys are errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from fastwam.camera import CameraLayout
from fastwam.robot import RobotSpec

CAMERA_TRANSPORTS = ("compressed", "raw")


@dataclass(frozen=True)
class CameraTopic:
    topic: str
    transport: str = "compressed"  # sensor_msgs/CompressedImage (JPEG/PNG) or sensor_msgs/Image

    def __post_init__(self) -> None:
        if self.transport not in CAMERA_TRANSPORTS:
            raise ValueError(f"camera topic {self.topic}: transport must be one of {CAMERA_TRANSPORTS}")


@dataclass(frozen=True)
class TopicConfig:
    cameras: dict[str, CameraTopic]  # camera key -> topic
    feedback: dict[str, str]  # joint group -> sensor_msgs/JointState feedback topic
    command: dict[str, str]  # joint group -> sensor_msgs/JointState command topic (R1 Lite native)
    joint_trajectory: str = "~/joint_trajectory"  # whole chunk, for ros2_control robots


@dataclass(frozen=True)
class ControlConfig:
    rate_hz: float = 15.0
    # Request the next chunk when this many steps of the current one are left (covers inference time).
    replan_steps_left: int = 16
    # New chunks are cross-faded into the old one over this many steps.
    blend_steps: int = 4


@dataclass(frozen=True)
class FreshnessConfig:
    max_camera_age_s: float = 0.25
    max_camera_skew_s: float = 0.1
    max_joint_age_s: float = 0.25


@dataclass(frozen=True)
class RobotConfig:
    robot: RobotSpec
    cameras: CameraLayout
    topics: TopicConfig
    control: ControlConfig
    freshness: FreshnessConfig
    source: str = ""  # file it was loaded from, for error messages

    def __post_init__(self) -> None:
        problems = []
        if set(self.topics.cameras) != set(self.cameras.keys):
            problems.append(
                f"camera topics {sorted(self.topics.cameras)} != layout cameras {sorted(self.cameras.keys)}"
            )
        groups = {g.name for g in self.robot.groups}
        needed = set(self.robot.action_groups) | set(self.robot.state_groups)
        for label, mapping in (("feedback", self.topics.feedback), ("command", self.topics.command)):
            if set(mapping) - groups:
                problems.append(f"{label} topics name unknown groups {sorted(set(mapping) - groups)}")
        if needed - set(self.topics.feedback):
            problems.append(f"no feedback topic for groups {sorted(needed - set(self.topics.feedback))}")
        if set(self.robot.action_groups) - set(self.topics.command):
            problems.append(
                f"no command topic for groups {sorted(set(self.robot.action_groups) - set(self.topics.command))}"
            )
        if self.control.rate_hz <= 0 or self.control.blend_steps < 0 or self.control.replan_steps_left < 1:
            problems.append(f"invalid control settings {self.control}")
        if problems:
            raise ValueError(f"robot config {self.source or '<dict>'}: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> RobotConfig:
        where = source or "<dict>"
        _strict(
            where, "", data, {"robot", "cameras", "topics", "control", "freshness"}, {"control", "freshness"}
        )
        topics = data["topics"]
        _strict(
            where,
            "topics",
            topics,
            {"cameras", "feedback", "command", "joint_trajectory"},
            {"joint_trajectory"},
        )
        cameras = {}
        for key, spec in topics["cameras"].items():
            spec = {"topic": spec} if isinstance(spec, str) else spec
            _strict(where, f"topics.cameras.{key}", spec, {"topic", "transport"}, {"transport"})
            cameras[str(key)] = CameraTopic(**spec)
        return cls(
            robot=RobotSpec.from_dict(data["robot"]),
            cameras=CameraLayout.from_dict(data["cameras"]),
            topics=TopicConfig(
                cameras=cameras,
                feedback={str(k): str(v) for k, v in topics["feedback"].items()},
                command={str(k): str(v) for k, v in topics["command"].items()},
                **(
                    {"joint_trajectory": str(topics["joint_trajectory"])}
                    if "joint_trajectory" in topics
                    else {}
                ),
            ),
            control=_dataclass_from(where, "control", ControlConfig, data.get("control", {})),
            freshness=_dataclass_from(where, "freshness", FreshnessConfig, data.get("freshness", {})),
            source=source,
        )


def load_robot_config(path: str | os.PathLike[str]) -> RobotConfig:
    """Load a robot config YAML. `extends: other.yaml` (relative to this file) starts from another
    config: mappings merge key by key, anything else (lists, scalars) replaces the base value."""
    path = Path(path)
    return RobotConfig.from_dict(_load_yaml(path, ()), source=str(path))


def load_robot_and_cameras(path: str | os.PathLike[str]) -> tuple[RobotSpec, CameraLayout]:
    """Only the ``robot`` and ``cameras`` sections of a YAML file: a robot config, or a training
    experiment config (``training/configs/*.yaml`` hold the same two sections); the rest is not read."""
    path = Path(path)
    data = _load_yaml(path, ())
    missing = sorted({"robot", "cameras"} - set(data))
    if missing:
        raise ValueError(
            f"{path}: no {' or '.join(missing)} section (a robot config or a training config has both)"
        )
    return RobotSpec.from_dict(data["robot"]), CameraLayout.from_dict(data["cameras"])


def _load_yaml(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        via = f" (extended by {chain[-1]})" if chain else ""
        raise FileNotFoundError(f"robot config not found: {path}{via}")
    if path.resolve() in chain:
        raise ValueError(f"robot config {path}: `extends` cycle through {[str(p) for p in chain]}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"robot config {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"robot config {path} must be a mapping at the top level")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ValueError(f"robot config {path}: `extends` must be a file name, got {base!r}")
    return _merge(_load_yaml(path.parent / base, (*chain, path.resolve())), data)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _strict(where: str, section: str, data: Any, allowed: set[str], optional: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"robot config {where}: {section or 'top level'} must be a mapping")
    missing = sorted(allowed - optional - set(data))
    unknown = sorted(set(data) - allowed)
    if missing or unknown:
        raise ValueError(
            f"robot config {where}: {section or 'top level'}: missing keys {missing}, unknown keys {unknown}"
        )


def _dataclass_from(where: str, section: str, cls, data: Mapping[str, Any]):
    names = {f.name for f in fields(cls)}
    _strict(where, section, data, names, names)
    return cls(**data)
