"""Cheap deterministic rendering of the tabletop scene with pinhole cameras (OpenCV polygons).

Every camera draws the same scene (table, towel cells, arms, fingers) in painter's order; the
head camera is fixed, the wrist cameras ride on the wrists. Images are uint8 RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NEAR = 0.02  # m: geometry closer to a camera than this is clipped
TABLE = (-0.25, 0.95, -0.75, 0.75)  # x0, x1, y0, y1 of the table top (m)
COLORS = {  # RGB
    "floor": (70, 72, 78),
    "table": (168, 138, 102),
    "table_line": (150, 121, 88),
    "towel_top": (40, 95, 185),
    "towel_under": (135, 175, 225),
    "towel_stripe": (235, 235, 240),
    "arm_left": (205, 205, 210),
    "arm_right": (190, 190, 198),
    "band_left": (210, 60, 50),  # a coloured wrist band tells the arms apart
    "band_right": (60, 170, 70),
    "finger": (35, 35, 38),
    "torso": (55, 55, 60),
}


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: world->camera rotation rows (right, down, forward), centre, intrinsics."""

    rotation: np.ndarray  # [3, 3]
    position: np.ndarray  # [3]
    focal: float  # px, at the image size below
    height: int
    width: int

    @classmethod
    def look_at(cls, position, target, focal: float, height: int, width: int, up=(0.0, 0.0, 1.0)) -> Camera:
        position = np.asarray(position, dtype=np.float64)
        forward = np.asarray(target, dtype=np.float64) - position
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.asarray(up, dtype=np.float64))
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        return cls(np.stack([right, down, forward]), position, focal, height, width)

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points) - self.position) @ self.rotation.T

    def pixels(self, camera_points: np.ndarray) -> np.ndarray:
        """Camera-frame points [..., 3] (depth > 0) -> pixel coordinates [..., 2]."""
        z = camera_points[..., 2:3]
        return self.focal * camera_points[..., :2] / z + np.array([self.width / 2, self.height / 2])


def _clip_polygon(points: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-frame polygon [N, 3] against the near plane."""
    out = []
    for a, b in zip(points, np.roll(points, -1, axis=0)):
        a_in, b_in = a[2] >= NEAR, b[2] >= NEAR
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out).reshape(-1, 3)


def fill_polygons(image: np.ndarray, camera: Camera, polygons: np.ndarray, color) -> None:
    """World polygons [P, N, 3] filled in one colour; those crossing the near plane are clipped."""
    if len(polygons) == 0:
        return
    cam = camera.to_camera(polygons)
    inside = np.all(cam[..., 2] >= NEAR, axis=-1)
    shapes = list(np.round(camera.pixels(cam[inside]) * 8).astype(np.int32))
    for polygon in cam[~inside]:
        clipped = _clip_polygon(polygon)
        if len(clipped) >= 3:
            shapes.append(np.round(camera.pixels(clipped) * 8).astype(np.int32))
    if shapes:
        cv2.fillPoly(image, shapes, color, lineType=cv2.LINE_8, shift=3)


def draw_segment(image: np.ndarray, camera: Camera, a, b, radius: float, color) -> None:
    """A cylinder-ish limb from world point a to b, `radius` m thick, clipped at the near plane."""
    ca, cb = camera.to_camera(np.stack([a, b]))
    if ca[2] < NEAR and cb[2] < NEAR:
        return
    if ca[2] < NEAR or cb[2] < NEAR:
        t = (NEAR - ca[2]) / (cb[2] - ca[2])
        cut = ca + t * (cb - ca)
        ca, cb = (cut, cb) if ca[2] < NEAR else (ca, cut)
    depth = max(min(ca[2], cb[2]), NEAR)
    thickness = int(np.clip(2 * radius * camera.focal / depth, 1, 60))
    pa, pb = np.round(camera.pixels(np.stack([ca, cb])) * 8).astype(np.int64)
    cv2.line(image, tuple(int(v) for v in pa), tuple(int(v) for v in pb), color, thickness, cv2.LINE_8, 3)


def table_polygons() -> tuple[np.ndarray, np.ndarray]:
    """Table top [1, 4, 3] and its plank seams as thin quads [K, 4, 3] (motion cues for wrist views)."""
    x0, x1, y0, y1 = TABLE
    top = np.array([[[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]]], dtype=np.float64)
    seams = []
    for y in np.arange(y0 + 0.15, y1, 0.15):
        seams.append([[x0, y - 0.004, 0], [x1, y - 0.004, 0], [x1, y + 0.004, 0], [x0, y + 0.004, 0]])
    return top, np.array(seams, dtype=np.float64)


def towel_cells(vertices: np.ndarray, flap: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Towel grid [A+1, U+1, 3] -> (colour name, cell quads [K, 4, 3]) in drawing order.

    Flat cells first, then the flap column by column from the crease outward (its outer end lies
    on top). Two stripes woven near the near and far edges show on both sides, so where they end
    up shows the fold as well as the flap's lighter underside does.
    """
    quads = np.stack(
        [vertices[:-1, :-1], vertices[:-1, 1:], vertices[1:, 1:], vertices[1:, :-1]], axis=2
    )  # [A, U, 4, 3]
    n_depth = quads.shape[1]
    stripe = np.zeros(flap.shape, dtype=bool)
    stripe[:, [1, n_depth - 2]] = True
    layers = [("towel_top", quads[~flap & ~stripe]), ("towel_stripe", quads[~flap & stripe])]
    for j in range(n_depth):
        column = flap[:, j]
        if column.any():
            color = "towel_stripe" if stripe[0, j] else "towel_under"
            layers.append((color, quads[column, j]))
    return layers
