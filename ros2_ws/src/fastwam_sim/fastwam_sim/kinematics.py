"""Simplified R1 Lite arm kinematics for the simulation (not the real robot's geometry).

Each arm is a yaw joint (J1) and two pitch links (J2 shoulder, J3 elbow) ending in a wrist from
which the gripper hangs vertically; J4-J6 only turn the wrist (J6: gripper yaw about vertical)
and do not move the fingertip. Joint conventions follow the R1 Lite limits: J2 in [0, pi] is the
upper arm's angle from pointing straight down, J3 in [-3.32, 0] bends the forearm back down.
World frame: x forward from the robot, y to its left, z up, table surface at z = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArmKinematics:
    shoulder: tuple[float, float, float]  # world position of J1/J2
    upper_arm: float = 0.38  # m
    forearm: float = 0.38  # m
    gripper: float = 0.10  # wrist to fingertip, hanging straight down

    def points(self, q: np.ndarray) -> dict[str, np.ndarray]:
        """Joint positions [6] -> world points: shoulder, elbow, wrist, tip [3] and gripper yaw."""
        q = np.asarray(q, dtype=np.float64)
        yaw, a1 = q[0], q[1]
        a2 = q[1] + q[2]
        radial = np.array([np.cos(yaw), np.sin(yaw)])
        shoulder = np.asarray(self.shoulder, dtype=np.float64)

        def link(angle: float, length: float) -> np.ndarray:
            return np.array([*(length * np.sin(angle) * radial), -length * np.cos(angle)])

        elbow = shoulder + link(a1, self.upper_arm)
        wrist = elbow + link(a2, self.forearm)
        tip = wrist - np.array([0.0, 0.0, self.gripper])
        return {"shoulder": shoulder, "elbow": elbow, "wrist": wrist, "tip": tip, "yaw": yaw + q[5]}

    def tip(self, q: np.ndarray) -> np.ndarray:
        return self.points(q)["tip"]

    def inverse(
        self, tip: np.ndarray, wrist_joints: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ) -> np.ndarray:
        """Fingertip world position [3] -> joint positions [6] (elbow-up solution).

        Raises ValueError when the point is out of reach, so a scripted trajectory never commands
        a silently clamped pose.
        """
        wrist = np.asarray(tip, dtype=np.float64) + np.array([0.0, 0.0, self.gripper])
        delta = wrist - np.asarray(self.shoulder)
        yaw = np.arctan2(delta[1], delta[0])
        horizontal = np.hypot(delta[0], delta[1])
        distance = np.hypot(horizontal, delta[2])
        l1, l2 = self.upper_arm, self.forearm
        if not abs(l1 - l2) + 1e-6 < distance < l1 + l2 - 1e-6:
            raise ValueError(f"fingertip target {np.round(tip, 3).tolist()} is out of the arm's reach")
        toward = np.arctan2(horizontal, -delta[2])  # angle of shoulder->wrist from straight down
        shoulder_offset = np.arccos(np.clip((l1**2 + distance**2 - l2**2) / (2 * l1 * distance), -1, 1))
        elbow_interior = np.arccos(np.clip((l1**2 + l2**2 - distance**2) / (2 * l1 * l2), -1, 1))
        return np.array([yaw, toward + shoulder_offset, elbow_interior - np.pi, *wrist_joints])
