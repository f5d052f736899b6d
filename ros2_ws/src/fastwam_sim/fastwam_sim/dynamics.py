"""Joint tracking the way the R1 Lite follows /motion_target: first order, rate-capped, limited.

A command holds position targets and optional per-joint velocity caps. Each joint moves toward
its target with time constant `tau`, never faster than min(command cap, the config's max
velocity), and never past its limits (targets outside them are clipped, and counted).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastwam.robot import JointGroup


class JointTracker:
    def __init__(self, group: JointGroup, initial: Sequence[float], tau: float = 0.1):
        self.group = group
        self.lower = np.array(group.lower)
        self.upper = np.array(group.upper)
        self.max_velocity = np.array(group.max_velocity)
        self.tau = tau
        self.position = np.clip(np.array(initial, dtype=np.float64), self.lower, self.upper)
        self.velocity = np.zeros_like(self.position)
        self.target = self.position.copy()
        self.cap = self.max_velocity.copy()
        self.clipped_commands = 0  # commands with a target outside the joint limits

    def command(self, position: Sequence[float], velocity: Sequence[float] | None = None) -> None:
        """Set new targets; raises ValueError (and keeps the old targets) on malformed input."""
        n = len(self.group.joints)
        target = np.asarray(position, dtype=np.float64)
        if target.shape != (n,) or not np.all(np.isfinite(target)):
            raise ValueError(
                f"joint group {self.group.name!r}: command needs {n} finite positions, got {list(position)}"
            )
        cap = self.max_velocity.copy()
        if velocity is not None and len(velocity) > 0:
            velocity = np.asarray(velocity, dtype=np.float64)
            if velocity.shape != (n,) or not np.all(np.isfinite(velocity)):
                raise ValueError(
                    f"joint group {self.group.name!r}: velocity caps need {n} finite values, "
                    f"got {list(velocity)}"
                )
            # A zero or negative cap means "no cap given" on the robot's topics; keep the config's.
            cap = np.where(velocity > 0, np.minimum(velocity, cap), cap)
        clipped = np.clip(target, self.lower, self.upper)
        if np.any(clipped != target):
            self.clipped_commands += 1
        self.target, self.cap = clipped, cap

    def step(self, dt: float) -> None:
        wanted = (self.target - self.position) / max(self.tau, dt)
        self.velocity = np.clip(wanted, -self.cap, self.cap)
        self.position = np.clip(self.position + self.velocity * dt, self.lower, self.upper)
