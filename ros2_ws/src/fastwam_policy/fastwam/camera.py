"""Camera layout: how several camera images become the one composite image the model sees.

Fast-WAM feeds the video model a single image per time step. Robots with several cameras tile them
into a fixed grid, e.g. the R1 Lite / RoboTwin layout: head camera resized to 256x320 on top, the
two wrist cameras at 128x160 side by side below, 384x320 in all. A view can also be a window on
its camera (``CameraView.resize`` + ``crop_origin``), a zoom on the workspace. This module is the
only place that resizing, windowing and tiling happen; training samples, the bag converter, the
policy node and the benchmarks all go through `CameraView.pixels` / `compose`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

import cv2
import numpy as np

# The Wan2.2 VAE downsamples 16x and the DiT patchifies latents 2x2: composites must tile by 32.
COMPOSITE_MULTIPLE = 32
_VIEW_FIELDS = {"key", "height", "width", "resize", "crop_origin"}


@dataclass(frozen=True)
class CameraView:
    """One camera's place in the composite: its key and size, and optionally a zoomed-in window.

    By default the whole image is resized to height x width. With ``resize`` the image is resized
    to that (H, W) instead and the view is the height x width window of it whose top-left corner is
    ``crop_origin``: a window on the workspace gives the part of the scene the task needs more of
    the view's pixels, at the same token count.
    """

    key: str
    height: int
    width: int
    resize: tuple[int, int] | None = None  # (H, W) the image is resized to before the window is cut
    crop_origin: tuple[int, int] = (0, 0)  # (top, left) of the window in the resized image

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("camera key must be a non-empty string")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"camera {self.key!r}: size must be positive, got {self.height}x{self.width}")
        try:
            if self.resize is not None:
                object.__setattr__(self, "resize", tuple(int(v) for v in self.resize))
            object.__setattr__(self, "crop_origin", tuple(int(v) for v in self.crop_origin))
        except (TypeError, ValueError):
            ok = False
        else:
            ok = len(self.crop_origin) == 2 and (self.resize is None or len(self.resize) == 2)
        if not ok:
            raise ValueError(
                f"camera {self.key!r}: resize and crop_origin are (height, width) pairs of integers, "
                f"got {self.resize!r} and {self.crop_origin!r}"
            )
        top, left = self.crop_origin
        height, width = self.stored_size
        if top < 0 or left < 0 or top + self.height > height or left + self.width > width:
            raise ValueError(
                f"camera {self.key!r}: the {self.height}x{self.width} window at {self.crop_origin} "
                f"does not fit in the image resized to {height}x{width}"
            )

    @property
    def stored_size(self) -> tuple[int, int]:
        """(H, W) of the whole image before the window is cut: what a dataset resized to the layout
        stores, so that the window is cut from the same pixels at training and at run time."""
        return self.resize if self.resize is not None else (self.height, self.width)

    def pixels(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB [h, w, 3] (any h, w) -> this view's pixels [height, width, 3]."""
        resized = resize_image(image, *self.stored_size)
        top, left = self.crop_origin
        return resized[top : top + self.height, left : left + self.width]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "height": self.height, "width": self.width}
        if self.resize is not None:
            d["resize"] = list(self.resize)
            d["crop_origin"] = list(self.crop_origin)
        return d


@dataclass(frozen=True)
class CameraLayout:
    """Rows of camera views, stacked top to bottom; views in a row are placed left to right."""

    rows: tuple[tuple[CameraView, ...], ...]

    def __post_init__(self) -> None:
        if not self.rows or any(not row for row in self.rows):
            raise ValueError("camera layout needs at least one row and no empty rows")
        keys = [view.key for row in self.rows for view in row]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"camera layout lists cameras more than once: {duplicates}")
        for i, row in enumerate(self.rows):
            heights = {view.height for view in row}
            if len(heights) != 1:
                raise ValueError(f"camera layout row {i}: views must share one height, got {sorted(heights)}")
        widths = {sum(view.width for view in row) for row in self.rows}
        if len(widths) != 1:
            raise ValueError(f"camera layout rows must have equal total widths, got {sorted(widths)}")
        if self.height % COMPOSITE_MULTIPLE or self.width % COMPOSITE_MULTIPLE:
            raise ValueError(
                f"composite size {self.height}x{self.width} must be a multiple of {COMPOSITE_MULTIPLE} "
                "in both dimensions (VAE 16x downsampling, then 2x2 patches)"
            )

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(view.key for row in self.rows for view in row)

    @property
    def height(self) -> int:
        return sum(row[0].height for row in self.rows)

    @property
    def width(self) -> int:
        return sum(view.width for view in self.rows[0])

    def compose(self, images: Mapping[str, np.ndarray]) -> np.ndarray:
        """Tile camera images into the composite.

        images: camera key -> uint8 RGB [h, w, 3] or a clip [T, h, w, 3] (same T for all cameras),
            any h, w; each is resized to its view's size, or to its ``resize`` and windowed (area
            interpolation when shrinking).
        Returns uint8 [H, W, 3] or [T, H, W, 3].
        """
        missing = [key for key in self.keys if key not in images]
        if missing:
            raise ValueError(f"missing camera images for {missing} (layout needs {list(self.keys)})")
        first = np.asarray(images[self.keys[0]])
        clip = first.ndim == 4
        lead = first.shape[:1] if clip else ()
        out = np.empty((*lead, self.height, self.width, 3), dtype=np.uint8)
        top = 0
        for row in self.rows:
            left = 0
            for view in row:
                image = _check_image(view.key, images[view.key], clip, lead)
                region = out[..., top : top + view.height, left : left + view.width, :]
                if clip:
                    for t in range(lead[0]):
                        region[t] = view.pixels(image[t])
                else:
                    region[...] = view.pixels(image)
                left += view.width
            top += row[0].height
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [[view.to_dict() for view in row] for row in self.rows]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CameraLayout:
        unknown = set(data) - {"rows"}
        if unknown:
            raise ValueError(f"camera layout: unknown fields {sorted(unknown)}")
        if "rows" not in data:
            raise ValueError("camera layout: missing field 'rows'")
        rows = []
        for i, row in enumerate(data["rows"]):
            views = []
            for view in row:
                extra = set(view) - _VIEW_FIELDS
                missing = {"key", "height", "width"} - set(view)
                if extra or missing:
                    raise ValueError(
                        f"camera layout row {i}: a view needs key, height, width (optional: resize, "
                        f"crop_origin); got {view}"
                    )
                views.append(
                    CameraView(
                        str(view["key"]),
                        int(view["height"]),
                        int(view["width"]),
                        resize=view.get("resize"),  # checked (and made tuples) by CameraView
                        crop_origin=view.get("crop_origin", (0, 0)),
                    )
                )
            rows.append(tuple(views))
        return cls(tuple(rows))

    @classmethod
    def r1_lite(cls, head: str = "head", wrist_left: str = "wrist_left", wrist_right: str = "wrist_right"):
        """Head camera 256x320 on top, wrist cameras 128x160 side by side below: 384x320."""
        return cls(
            (
                (CameraView(head, 256, 320),),
                (CameraView(wrist_left, 128, 160), CameraView(wrist_right, 128, 160)),
            )
        )

    @classmethod
    def libero(cls, agent: str = "image", wrist: str = "wrist_image") -> CameraLayout:
        """LIBERO's two 224x224 cameras side by side: 224x448."""
        return cls.row((agent, wrist), 224, 224)

    @classmethod
    def row(cls, keys: Sequence[str], height: int, width: int) -> CameraLayout:
        """All cameras in one row at the same size, e.g. three 384x384 views: 384x1152."""
        return cls((tuple(CameraView(key, height, width) for key in keys),))


def composite_to_tensor(composite: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [-1, 1], the VAE's input range."""
    if composite.dtype != np.uint8 or composite.ndim < 3 or composite.shape[-1] != 3:
        raise ValueError(f"composite must be uint8 [..., H, W, 3], got {composite.dtype} {composite.shape}")
    import torch  # here, not at module level: ROS nodes that only compose (recorder) skip its start-up

    tensor = torch.from_numpy(np.ascontiguousarray(composite)).movedim(-1, -3)
    return tensor.to(torch.float32).div_(127.5).sub_(1.0)


def _check_image(key: str, image: np.ndarray, clip: bool, lead: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(image)
    expected = 4 if clip else 3
    if image.dtype != np.uint8:
        raise ValueError(f"camera {key!r}: expected uint8 RGB pixels, got {image.dtype}")
    if image.ndim != expected or image.shape[-1] != 3:
        want = "[T, h, w, 3]" if clip else "[h, w, 3]"
        raise ValueError(f"camera {key!r}: expected shape {want}, got {image.shape}")
    if clip and image.shape[:1] != lead:
        raise ValueError(f"camera {key!r}: clip has {image.shape[0]} frames, other cameras {lead[0]}")
    if image.shape[-3] == 0 or image.shape[-2] == 0:
        raise ValueError(f"camera {key!r}: empty image {image.shape}")
    return image


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [h, w, 3] -> [height, width, 3]: area interpolation when shrinking, linear otherwise."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    shrinking = image.shape[0] >= height and image.shape[1] >= width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)
