"""Scripted teleoperator: the fold as a smooth function of the towel's start pose.

Plays the part of a human with a teleoperation rig: it knows where the towel lies and produces
joint position targets for every control step (what the recorder records as actions). Fingertip
waypoints are interpolated with minimum-jerk profiles and turned into joint targets by inverse
kinematics; grippers ramp between open and closed. Both arms move together: each takes the near
corner on its side to the far corner on that side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastwam_sim.env import ARMS, GRIPPER_OPEN, TowelFoldEnv


@dataclass(frozen=True)
class FoldTiming:
    """Phase end times (s) from the start of the script."""

    reach: float = 1.5  # home -> above the near corner
    descend: float = 2.1  # down to the cloth
    close: float = 2.8  # pinch (gripper ramps closed)
    lift: float = 3.6  # up and a little toward the far edge
    carry: float = 5.3  # over the far corner
    lower: float = 5.9  # down onto it
    open: float = 6.6  # let go (gripper ramps open)
    retreat: float = 7.3  # straight up
    home: float = 9.4  # back home; the script is done


def _min_jerk(s: np.ndarray | float) -> np.ndarray | float:
    s = np.clip(s, 0.0, 1.0)
    return s**3 * (10 - 15 * s + 6 * s**2)


class ScriptedFolder:
    """Action (joint targets laid out as the spec's action groups) at any time into the fold."""

    def __init__(self, env: TowelFoldEnv, timing: FoldTiming | None = None, hover: float = 0.08):
        self.env = env
        self.timing = timing or FoldTiming()
        towel = env.towel
        t = self.timing
        self._waypoints = {}
        for arm in ARMS:
            start = env.tip(arm)
            near, far = towel.near_rest[arm], towel.far[arm]
            up = np.array([0.0, 0.0, 1.0])
            pinch = near + 0.005 * up
            place = far + 0.01 * up
            lifted = near + 0.2 * (far - near) + 0.12 * up
            # (end time, fingertip position) pairs; segments are interpolated between them.
            self._waypoints[arm] = [
                (0.0, start),
                (t.reach, near + hover * up),
                (t.descend, pinch),
                (t.close, pinch),
                (t.lift, lifted),
                (t.carry, far + hover * up),
                (t.lower, place),
                (t.open, place),
                (t.retreat, far + 0.12 * up),
                (t.home, start),
            ]

    @property
    def duration(self) -> float:
        return self.timing.home

    def tip_target(self, arm: str, time: float) -> np.ndarray:
        points = self._waypoints[arm]
        for (t0, p0), (t1, p1) in zip(points, points[1:]):
            if time < t1:
                return p0 + _min_jerk((time - t0) / (t1 - t0)) * (p1 - p0)
        return points[-1][1].copy()

    def gripper_target(self, time: float) -> float:
        # Linear ramps, ending a little before the phase does so the pinch/release settles; a
        # ramp (not a step) keeps the gripper under its velocity cap, as a teleoperator's would.
        t = self.timing
        closing = np.clip((time - t.descend) / (0.85 * (t.close - t.descend)), 0.0, 1.0)
        opening = np.clip((time - t.lower) / (0.85 * (t.open - t.lower)), 0.0, 1.0)
        return float(GRIPPER_OPEN * (1.0 - closing + opening))

    def action(self, time: float) -> np.ndarray:
        """Joint targets at `time` seconds into the script, laid out as the spec's action groups."""
        values = {}
        for arm in ARMS:
            values[f"arm_{arm}"] = self.env.kinematics[arm].inverse(self.tip_target(arm, time))
            values[f"gripper_{arm}"] = np.array([self.gripper_target(time)])
        spec = self.env.spec
        return spec.join(values, spec.action_groups)
