"""Observation assembly and input freshness for the policy node (ROS-free, clock passed in).

`InputTracker` keeps the newest frame of every camera and a short history of joint states per joint
group. An observation is the newest frame of each camera plus, per group, the joint state nearest
the reference (head) frame's stamp. It is usable only when every stream is present, valid and
fresh: `problems(now)` lists, in words, every reason it is not (missing stream, camera older than
``max_camera_age_s``, cameras further apart than ``max_camera_skew_s``, no joint state within
``max_joint_age_s`` of the head frame, the newest message of a stream invalid). The node holds the
robot and publishes these reasons while the list is not empty.

Frames are stored as opaque payloads (the node keeps the undecoded message and decodes only the
frames it uses). Times are seconds on one clock (the node's ROS clock).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastwam.robot_config import FreshnessConfig

# Arrival times kept per camera for the rate estimate, and the window it is measured over.
_RATE_WINDOW_S = 2.0


@dataclass(frozen=True)
class Frame:
    """One camera message: capture stamp, arrival time, the payload, and a per-camera sequence."""

    stamp: float
    received: float
    payload: Any
    seq: int


@dataclass(frozen=True)
class Observation:
    """What one prediction is made from."""

    stamp: float  # reference camera's capture stamp: the chunk's time origin
    frames: dict[str, Frame]  # camera key -> newest frame
    joints: dict[str, np.ndarray]  # joint group -> positions nearest `stamp`
    joint_stamps: dict[str, float]


def order_joint_positions(
    names: Sequence[str], positions: Sequence[float], joints: Sequence[str], where: str
) -> np.ndarray:
    """Positions of `joints` from a JointState's (names, positions), or ValueError naming `where`.

    The R1 Lite leaves names empty: then the order is positional (the robot config's joint order).
    Names that are a permutation of `joints` are used to reorder.
    """
    values = np.asarray(positions, dtype=np.float64)
    if values.ndim != 1 or len(values) != len(joints):
        raise ValueError(f"{where}: {values.size} positions, expected {len(joints)} ({list(joints)})")
    if len(names):
        names = list(names)
        if sorted(names) == sorted(joints) and len(set(names)) == len(names):
            values = values[[names.index(j) for j in joints]]
        elif len(names) != len(joints):
            raise ValueError(f"{where}: {len(names)} names for {len(values)} positions")
        # Other names (a driver's own joint naming): positional, as when names are empty.
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{where}: non-finite positions {values.tolist()}")
    return values


class InputTracker:
    """Newest frames, joint state history and input problems for one camera layout and robot.

    Not thread-safe: the node calls it under its own lock.
    """

    def __init__(
        self,
        camera_keys: Sequence[str],
        joint_groups: Mapping[str, int],
        freshness: FreshnessConfig,
        joint_history: int = 64,
    ):
        if not camera_keys:
            raise ValueError("InputTracker needs at least one camera")
        self.camera_keys = tuple(camera_keys)
        self.reference = self.camera_keys[0]  # head camera: first in the layout
        self.joint_groups = dict(joint_groups)
        self.freshness = freshness
        self._frames: dict[str, Frame] = {}
        self._seq = dict.fromkeys(self.camera_keys, 0)
        self._arrivals = {k: deque(maxlen=256) for k in self.camera_keys}
        self._joints: dict[str, deque[tuple[float, np.ndarray]]] = {
            g: deque(maxlen=joint_history) for g in self.joint_groups
        }
        # Stream -> (camera frame seq or None, message): the newest message of that stream is bad.
        self._errors: dict[str, tuple[int | None, str]] = {}

    # ---- input -----------------------------------------------------------------------------
    def add_frame(self, key: str, stamp: float, received: float, payload: Any) -> Frame:
        self._seq[key] += 1
        frame = Frame(float(stamp), float(received), payload, self._seq[key])
        self._frames[key] = frame
        self._arrivals[key].append(float(received))
        self._errors.pop(f"camera:{key}", None)
        return frame

    def reject_frame(self, key: str, received: float, message: str) -> None:
        """The newest message of camera `key` is unusable: the stream counts as bad until a good one."""
        self._seq[key] += 1
        self._arrivals[key].append(float(received))
        self._errors[f"camera:{key}"] = (None, message)

    def frame_failed(self, key: str, seq: int, message: str) -> None:
        """A stored frame failed to decode: bad while it is still the newest frame of `key`."""
        self._errors[f"camera:{key}"] = (seq, message)

    def add_joints(self, group: str, stamp: float, positions: np.ndarray) -> None:
        history = self._joints[group]
        if history and stamp < history[-1][0]:
            history.clear()  # stamps went backwards (restarted driver, bag loop): old ones are moot
        history.append((float(stamp), np.asarray(positions, dtype=np.float64)))
        self._errors.pop(f"joints:{group}", None)

    def reject_joints(self, group: str, message: str) -> None:
        self._errors[f"joints:{group}"] = (None, message)

    # ---- queries ---------------------------------------------------------------------------
    def problems(self, now: float) -> list[str]:
        """Every reason the inputs cannot make an observation now; empty when they can."""
        problems = []
        f = self.freshness
        for key in self.camera_keys:
            error = self._errors.get(f"camera:{key}")
            frame = self._frames.get(key)
            if error is not None and (error[0] is None or (frame is not None and error[0] == frame.seq)):
                problems.append(f"camera {key!r}: {error[1]}")
            elif frame is None:
                problems.append(f"camera {key!r}: no frame received")
            elif now - frame.stamp > f.max_camera_age_s:
                problems.append(
                    f"camera {key!r}: newest frame is {now - frame.stamp:.3f} s old "
                    f"(max_camera_age_s {f.max_camera_age_s:g})"
                )
        stamps = {k: fr.stamp for k, fr in self._frames.items()}
        if len(stamps) == len(self.camera_keys) and len(stamps) > 1:
            first = min(stamps, key=stamps.get)
            last = max(stamps, key=stamps.get)
            if stamps[last] - stamps[first] > f.max_camera_skew_s:
                problems.append(
                    f"cameras {first!r} and {last!r} are {stamps[last] - stamps[first]:.3f} s apart "
                    f"(max_camera_skew_s {f.max_camera_skew_s:g})"
                )
        reference = self._frames.get(self.reference)
        for group in self.joint_groups:
            error = self._errors.get(f"joints:{group}")
            if error is not None:
                problems.append(f"joint state {group!r}: {error[1]}")
                continue
            if not self._joints[group]:
                problems.append(f"joint state {group!r}: none received")
                continue
            if reference is not None:
                stamp, _ = self._nearest(group, reference.stamp)
                if abs(stamp - reference.stamp) > f.max_joint_age_s:
                    problems.append(
                        f"joint state {group!r}: nearest is {abs(stamp - reference.stamp):.3f} s from the "
                        f"{self.reference!r} frame (max_joint_age_s {f.max_joint_age_s:g})"
                    )
        return problems

    def has_invalid_input(self) -> bool:
        """True while the newest message of some stream was unusable (as opposed to late)."""
        return bool(self._errors)

    def observation(self, now: float) -> Observation | list[str]:
        """The observation to predict from, or the list of problems that prevent one."""
        problems = self.problems(now)
        if problems:
            return problems
        stamp = self._frames[self.reference].stamp
        joints, joint_stamps = {}, {}
        for group in self.joint_groups:
            joint_stamps[group], joints[group] = self._nearest(group, stamp)
        return Observation(stamp, dict(self._frames), joints, joint_stamps)

    def latest_joints(self) -> dict[str, np.ndarray] | None:
        """Newest positions of every group, or None while a group has none."""
        if not all(self._joints[g] for g in self.joint_groups):
            return None
        return {g: self._joints[g][-1][1].copy() for g in self.joint_groups}

    def camera_ages(self, now: float) -> list[float]:
        """Seconds since each camera's newest frame stamp (NaN: none yet), in layout order."""
        return [now - self._frames[k].stamp if k in self._frames else float("nan") for k in self.camera_keys]

    def camera_rates(self, now: float) -> list[float]:
        """Messages per second over the last couple of seconds, in layout order."""
        rates = []
        for key in self.camera_keys:
            recent = [t for t in self._arrivals[key] if now - t <= _RATE_WINDOW_S]
            rates.append(len(recent) / _RATE_WINDOW_S)
        return rates

    def _nearest(self, group: str, stamp: float) -> tuple[float, np.ndarray]:
        history = self._joints[group]
        stamps = [s for s, _ in history]
        i = bisect.bisect_left(stamps, stamp)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(history)]
        best = min(candidates, key=lambda j: abs(stamps[j] - stamp))
        return history[best]
