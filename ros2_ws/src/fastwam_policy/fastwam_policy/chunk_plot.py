"""Render an action chunk as an RGB image: one panel per joint, predicted vs executed.

Published by the policy node on ~/chunk_plot (sensor_msgs/Image) for RViz / Foxglove. Each panel
spans the joint's limits vertically and the chunk's steps horizontally; the thin line is the chunk
as predicted, the grey band the steps skipped because inference took that long, the thick line the
targets actually commanded (after blending and limits), the vertical line the present step.
Drawn with OpenCV; no matplotlib on the robot.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

_BACKGROUND = (24, 24, 28)
_SKIPPED = (60, 60, 66)
_PREDICTED = (90, 170, 255)
_EXECUTED = (255, 150, 40)
_NOW = (230, 230, 230)
_TEXT = (210, 210, 210)


def render_chunk_plot(
    chunk: np.ndarray,
    executed: np.ndarray,
    offset: int,
    joint_names: Sequence[str],
    lower: np.ndarray,
    upper: np.ndarray,
    columns: int = 2,
    panel_size: tuple[int, int] = (70, 300),
) -> np.ndarray:
    """chunk [H, A] as predicted; executed [K, A] commanded for chunk steps offset .. offset+K-1.

    Returns uint8 RGB [rows * panel_h, columns * panel_w, 3].
    """
    chunk = np.asarray(chunk, dtype=np.float64)
    executed = np.asarray(executed, dtype=np.float64).reshape(-1, chunk.shape[1])
    horizon, dim = chunk.shape
    rows = -(-dim // columns)
    ph, pw = panel_size
    image = np.empty((rows * ph, columns * pw, 3), np.uint8)
    image[...] = _BACKGROUND
    margin_x, margin_top, margin_bottom = 6, 16, 4
    span = max(horizon - 1, 1)

    def to_xy(steps: np.ndarray, values: np.ndarray, j: int, x0: int, y0: int) -> np.ndarray:
        x = x0 + margin_x + steps / span * (pw - 2 * margin_x)
        frac = (values - lower[j]) / (upper[j] - lower[j])
        y = y0 + ph - margin_bottom - np.clip(frac, 0.0, 1.0) * (ph - margin_top - margin_bottom)
        return np.round(np.stack([x, y], axis=-1)).astype(np.int32)

    for j in range(dim):
        x0, y0 = (j % columns) * pw, (j // columns) * ph
        cv2.rectangle(image, (x0, y0), (x0 + pw - 1, y0 + ph - 1), _SKIPPED, 1)
        if offset > 0:
            corners = to_xy(np.array([0.0, min(offset, span)]), np.array([upper[j], lower[j]]), j, x0, y0)
            cv2.rectangle(image, tuple(corners[0]), tuple(corners[1]), _SKIPPED, -1)
        predicted = to_xy(np.arange(horizon, dtype=np.float64), chunk[:, j], j, x0, y0)
        cv2.polylines(image, [predicted], False, _PREDICTED, 1, cv2.LINE_AA)
        if len(executed):
            steps = offset + np.arange(len(executed), dtype=np.float64)
            done = to_xy(steps, executed[:, j], j, x0, y0)
            if len(done) > 1:
                cv2.polylines(image, [done], False, _EXECUTED, 2, cv2.LINE_AA)
            else:
                cv2.circle(image, tuple(done[0]), 2, _EXECUTED, -1)
            now_x = int(done[-1][0])
            cv2.line(image, (now_x, y0 + margin_top), (now_x, y0 + ph - margin_bottom), _NOW, 1)
        label = f"{joint_names[j]}  [{lower[j]:.2f}, {upper[j]:.2f}]"
        cv2.putText(
            image, label, (x0 + margin_x, y0 + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, _TEXT, 1, cv2.LINE_AA
        )
    return image
