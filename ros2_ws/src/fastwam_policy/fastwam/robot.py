"""Robot spec: joint groups, their limits, and the order in which they form action and state vectors.

The model predicts flat action vectors and reads flat state vectors. Which entries belong to which
joint is defined here once, travels inside every checkpoint, and is checked against the robot
config when a node starts, so a checkpoint trained on one joint order can never drive another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNITS = ("rad", "m")


@dataclass(frozen=True)
class JointGroup:
    """Joints commanded and sensed together (one arm, one gripper), with per-joint limits."""

    name: str
    joints: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    max_velocity: tuple[float, ...]  # per joint, unit/s
    unit: str = "rad"

    def __post_init__(self) -> None:
        n = len(self.joints)
        if not self.name or n == 0:
            raise ValueError(f"joint group {self.name!r}: needs a name and at least one joint")
        if len(set(self.joints)) != n:
            raise ValueError(f"joint group {self.name!r}: duplicate joint names {list(self.joints)}")
        for label in ("lower", "upper", "max_velocity"):
            values = getattr(self, label)
            if len(values) != n:
                raise ValueError(
                    f"joint group {self.name!r}: {label} has {len(values)} values for {n} joints"
                )
            if not all(np.isfinite(values)):
                raise ValueError(f"joint group {self.name!r}: {label} must be finite, got {list(values)}")
        bad = [j for j, lo, hi in zip(self.joints, self.lower, self.upper) if lo >= hi]
        if bad:
            raise ValueError(f"joint group {self.name!r}: lower >= upper for {bad}")
        if any(v <= 0 for v in self.max_velocity):
            raise ValueError(f"joint group {self.name!r}: max_velocity must be positive")
        if self.unit not in UNITS:
            raise ValueError(f"joint group {self.name!r}: unit must be one of {UNITS}, got {self.unit!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "joints": list(self.joints),
            "lower": list(self.lower),
            "upper": list(self.upper),
            "max_velocity": list(self.max_velocity),
            "unit": self.unit,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JointGroup:
        _check_fields(
            "joint group",
            data,
            required={"name", "joints", "lower", "upper", "max_velocity"},
            optional={"unit"},
        )
        return cls(
            name=str(data["name"]),
            joints=tuple(str(j) for j in data["joints"]),
            lower=tuple(float(v) for v in data["lower"]),
            upper=tuple(float(v) for v in data["upper"]),
            max_velocity=tuple(float(v) for v in data["max_velocity"]),
            unit=str(data.get("unit", "rad")),
        )


@dataclass(frozen=True)
class RobotSpec:
    """Joint groups plus the group order of the action and state vectors."""

    name: str
    groups: tuple[JointGroup, ...]
    action_groups: tuple[str, ...]
    state_groups: tuple[str, ...]
    _by_name: dict[str, JointGroup] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"robot {self.name!r}: duplicate joint group names {names}")
        joints = [j for g in self.groups for j in g.joints]
        if len(set(joints)) != len(joints):
            raise ValueError(f"robot {self.name!r}: a joint name appears in two groups")
        for label, order in (("action_groups", self.action_groups), ("state_groups", self.state_groups)):
            unknown = [g for g in order if g not in names]
            if unknown:
                raise ValueError(
                    f"robot {self.name!r}: {label} names unknown groups {unknown} (groups: {names})"
                )
            if len(set(order)) != len(order):
                raise ValueError(f"robot {self.name!r}: {label} repeats a group: {list(order)}")
        if not self.action_groups:
            raise ValueError(f"robot {self.name!r}: action_groups is empty")
        object.__setattr__(self, "_by_name", {g.name: g for g in self.groups})

    def group(self, name: str) -> JointGroup:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"robot {self.name!r} has no joint group {name!r}") from None

    @property
    def action_dim(self) -> int:
        return sum(len(self.group(g).joints) for g in self.action_groups)

    @property
    def state_dim(self) -> int:
        return sum(len(self.group(g).joints) for g in self.state_groups)

    @property
    def action_joint_names(self) -> tuple[str, ...]:
        return tuple(j for g in self.action_groups for j in self.group(g).joints)

    @property
    def state_joint_names(self) -> tuple[str, ...]:
        return tuple(j for g in self.state_groups for j in self.group(g).joints)

    @property
    def action_lower(self) -> np.ndarray:
        return self._concat("lower", self.action_groups)

    @property
    def action_upper(self) -> np.ndarray:
        return self._concat("upper", self.action_groups)

    @property
    def action_max_velocity(self) -> np.ndarray:
        return self._concat("max_velocity", self.action_groups)

    def split(self, vector: np.ndarray, groups: Sequence[str]) -> dict[str, np.ndarray]:
        """[..., D] laid out as `groups` -> group name -> [..., n_joints]."""
        vector = np.asarray(vector)
        sizes = [len(self.group(g).joints) for g in groups]
        if vector.shape[-1] != sum(sizes):
            raise ValueError(
                f"vector has {vector.shape[-1]} entries, groups {list(groups)} need {sum(sizes)}"
            )
        parts = np.split(vector, np.cumsum(sizes)[:-1], axis=-1)
        return dict(zip(groups, parts))

    def join(self, values: Mapping[str, np.ndarray], groups: Sequence[str]) -> np.ndarray:
        """group name -> [..., n_joints] -> [..., D] laid out as `groups`."""
        parts = []
        for g in groups:
            if g not in values:
                raise ValueError(f"missing values for joint group {g!r}")
            part = np.asarray(values[g], dtype=np.float64)
            n = len(self.group(g).joints)
            if part.shape[-1] != n:
                raise ValueError(f"joint group {g!r}: expected {n} values, got {part.shape[-1]}")
            parts.append(part)
        return np.concatenate(parts, axis=-1)

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        return np.clip(action, self.action_lower, self.action_upper)

    def check_matches(self, other: RobotSpec) -> None:
        """Raise ValueError listing every difference that would make actions land on wrong joints."""
        problems = []
        for label in ("action", "state"):
            mine = getattr(self, f"{label}_joint_names")
            theirs = getattr(other, f"{label}_joint_names")
            if mine != theirs:
                problems.append(f"{label} joints differ: {list(mine)} vs {list(theirs)}")
        for g in self.action_groups:
            if g in other._by_name and self.group(g).unit != other.group(g).unit:
                problems.append(f"group {g!r} unit {self.group(g).unit} vs {other.group(g).unit}")
        if problems:
            raise ValueError(
                f"robot spec {self.name!r} does not match {other.name!r}: " + "; ".join(problems)
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "groups": [g.to_dict() for g in self.groups],
            "action_groups": list(self.action_groups),
            "state_groups": list(self.state_groups),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RobotSpec:
        _check_fields(
            "robot", data, required={"name", "groups", "action_groups", "state_groups"}, optional=set()
        )
        return cls(
            name=str(data["name"]),
            groups=tuple(JointGroup.from_dict(g) for g in data["groups"]),
            action_groups=tuple(str(g) for g in data["action_groups"]),
            state_groups=tuple(str(g) for g in data["state_groups"]),
        )

    def _concat(self, attribute: str, groups: Sequence[str]) -> np.ndarray:
        return np.array([v for g in groups for v in getattr(self.group(g), attribute)], dtype=np.float64)


def _check_fields(what: str, data: Mapping[str, Any], required: set[str], optional: set[str]) -> None:
    missing = sorted(required - set(data))
    unknown = sorted(set(data) - required - optional)
    if missing or unknown:
        raise ValueError(
            f"{what} {data.get('name', '')!r}: missing fields {missing}, unknown fields {unknown}"
        )
