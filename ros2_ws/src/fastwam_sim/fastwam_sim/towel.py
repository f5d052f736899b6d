"""The towel: a rectangle on the table whose two near corners can be picked up and carried.

Cloth model (a cheap geometric stand-in for physics): the far edge stays where it lies. Each
strip of the towel running from the far edge toward the robot lies flat up to a crease, then the
rest of it (the flap) runs straight from the crease to the strip's near end, which is wherever its
corner is (carried by a gripper or dropped). The crease is placed so the strip keeps its length,
so carrying the near corners over the far ones folds the towel in half.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CORNERS = ("left", "right")  # near corners, on the robot's left and right


@dataclass(frozen=True)
class TowelPose:
    """Where the towel lies at the start: centre on the table (m) and yaw (rad, 0 = edges along x/y)."""

    x: float
    y: float
    yaw: float

    @classmethod
    def sample(cls, rng: np.random.Generator, ranges: dict[str, tuple[float, float]]) -> TowelPose:
        return cls(**{k: float(rng.uniform(*ranges[k])) for k in ("x", "y", "yaw")})


class Towel:
    """Towel state: its start pose, and the current position and holder of each near corner."""

    def __init__(self, pose: TowelPose, depth: float = 0.26, width: float = 0.36):
        self.pose = pose
        self.depth = depth  # along the axis pointing at the robot (m)
        self.width = width
        c, s = np.cos(pose.yaw), np.sin(pose.yaw)
        self.center = np.array([pose.x, pose.y, 0.0])
        self.toward_robot = np.array([-c, -s, 0.0])  # far edge -> near edge
        self.across = np.array([-s, c, 0.0])  # robot's right -> left
        half_d, half_w = depth / 2, width / 2
        self.near_rest = {
            "left": self.center + half_d * self.toward_robot + half_w * self.across,
            "right": self.center + half_d * self.toward_robot - half_w * self.across,
        }
        self.far = {
            "left": self.center - half_d * self.toward_robot + half_w * self.across,
            "right": self.center - half_d * self.toward_robot - half_w * self.across,
        }
        self.corner = {k: v.copy() for k, v in self.near_rest.items()}  # current near corners [3]
        self.holder: dict[str, str | None] = {k: None for k in CORNERS}  # arm holding each corner

    def grasp(self, arm: str, tip: np.ndarray, radius: float, max_height: float) -> str | None:
        """Attach the nearest free corner within `radius` (xy) of a closing gripper's fingertip."""
        if tip[2] > max_height:
            return None
        free = [k for k in CORNERS if self.holder[k] is None]
        distances = {k: float(np.hypot(*(self.corner[k][:2] - tip[:2]))) for k in free}
        near = [k for k in free if distances[k] < radius]
        if not near:
            return None
        corner = min(near, key=distances.__getitem__)
        self.holder[corner] = arm
        return corner

    def release(self, arm: str) -> None:
        """Drop whatever `arm` holds: the corner falls straight down onto the table."""
        for k in CORNERS:
            if self.holder[k] == arm:
                self.holder[k] = None
                self.corner[k][2] = 0.0

    def carry(self, arm: str, tip: np.ndarray) -> None:
        for k in CORNERS:
            if self.holder[k] == arm:
                self.corner[k] = np.array([tip[0], tip[1], max(float(tip[2]), 0.0)])

    def fold_error(self) -> dict[str, float]:
        """xy distance of each near corner from the far corner it should be laid on (m)."""
        return {k: float(np.hypot(*(self.corner[k][:2] - self.far[k][:2]))) for k in CORNERS}

    def progress(self) -> float:
        """0 when flat (corners a towel depth from their targets), 1 when folded exactly."""
        errors = self.fold_error()
        return float(np.mean([np.clip(1.0 - errors[k] / self.depth, 0.0, 1.0) for k in CORNERS]))

    def folded(self, tolerance: float) -> bool:
        """Both near corners released and lying within `tolerance` of the far corners."""
        errors = self.fold_error()
        return all(self.holder[k] is None and errors[k] < tolerance for k in CORNERS)

    def mesh(self, n_depth: int = 16, n_across: int = 6) -> tuple[np.ndarray, np.ndarray]:
        """Grid vertices [n_across + 1, n_depth + 1, 3] and which cells show their underside.

        Vertex (i, j) is strip i (right to left), distance u_j from the far edge. Returns the
        vertices and under [n_across, n_depth] (True where the cell is folded over, underside up).
        """
        v = np.linspace(-self.width / 2, self.width / 2, n_across + 1)  # [A]
        u = np.linspace(0.0, self.depth, n_depth + 1)  # [U]
        weight = (v + self.width / 2) / self.width  # 0 at the right corner, 1 at the left
        far = self.center - self.depth / 2 * self.toward_robot + v[:, None] * self.across  # [A, 3]
        end = (1 - weight)[:, None] * self.corner["right"] + weight[:, None] * self.corner["left"]
        rel = end - far
        along = rel @ self.toward_robot  # how far toward the robot the strip's end lies
        rest = rel[:, 2] ** 2 + (rel @ self.across) ** 2  # squared height and sideways offset
        # Crease distance s keeping the strip length: (L - s)^2 = (along - s)^2 + rest.
        # Written so a strip lying at full length (gap -> 0, rest -> 0) gives s = L, not 0/0.
        gap = np.maximum(self.depth - along, 1e-9)
        crease = np.clip((self.depth + along) / 2 - rest / (2 * gap), 0.0, self.depth)  # [A]
        flat_points = far[:, None, :] + u[None, :, None] * self.toward_robot  # [A, U, 3]
        crease_point = far + crease[:, None] * self.toward_robot
        t = np.clip((u[None, :] - crease[:, None]) / np.maximum(self.depth - crease, 1e-9)[:, None], 0, 1)
        flap_points = crease_point[:, None, :] + t[..., None] * (end - crease_point)[:, None, :]
        on_flap = u[None, :] > crease[:, None]
        vertices = np.where(on_flap[..., None], flap_points, flat_points)
        cell_u = (u[:-1] + u[1:]) / 2
        cell_crease = (crease[:-1] + crease[1:]) / 2
        # Underside up only where the flap runs back over the towel; a flap still pointing toward
        # the robot (a corner lifted in place, a taut ramp) shows its top side.
        folded_back = ((along - crease)[:-1] + (along - crease)[1:]) / 2 < 0
        return vertices, (cell_u[None, :] > cell_crease[:, None]) & folded_back[:, None]
