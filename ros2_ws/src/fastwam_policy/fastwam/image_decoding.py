"""Camera messages -> HxWx3 uint8 RGB arrays: the one decoder of the live policy and of training data.

The policy node decodes the sensor_msgs messages rclpy delivers; the bag converter
(`fastwam.data.bag`) decodes the same messages as rosbags deserializes them from the recorded
episode. Both come here, so a camera is decoded the same way in training and at run time. Only the
message's fields are read (`format`, `data`; `height`, `width`, `step`, `encoding`,
`is_bigendian`): an rclpy message, a rosbags message or any object with those fields. No ROS
import (rclpy, sensor_msgs) is needed.

sensor_msgs/CompressedImage (JPEG, PNG) is decoded with OpenCV (`cv2.imdecode`, which is also what
cv_bridge's `compressed_imgmsg_to_cv2` calls). sensor_msgs/Image is converted by cv_bridge where it
is installed (the robot PC, the Docker image) for the encodings cv_bridge converts to rgb8, and
otherwise by the numpy/OpenCV decoder below, which follows cv_bridge's conversions pixel for
pixel: `step` row padding, `is_bigendian` byte order, BGR/RGBA/BGRA channel orders, mono expanded
to three channels, 16-bit values scaled by 255/65535 and rounded, Bayer patterns demosaiced with
the same OpenCV codes, YUV 4:2:2 (UYVY ``yuv422``, YUYV ``yuv422_yuy2``).

Generic encodings (8UC1/3/4, 16UC1/3/4) carry no colour order; cv_bridge refuses to convert them
to rgb8. They are read here the way OpenCV stores pixels: one channel as grey, three as BGR, four
as BGRA (16UC1 is what depth-like mono cameras publish).

Every failure raises `ImageError` with a message naming the problem (the caller adds the topic or
the bag and message index).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

try:  # cv_bridge is not on PyPI: present on a full ROS install only.
    from cv_bridge import CvBridge  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the install
    CvBridge = None


class ImageError(ValueError):
    """A camera message that cannot be turned into an RGB image."""


@dataclass(frozen=True)
class _Encoding:
    channels: int
    dtype: type
    to_rgb: int | None  # cv2.COLOR_* conversion at the source depth; None: already RGB


_U8, _U16 = np.uint8, np.uint16
_BAYER = {  # ROS names the 2x2 pattern from the top-left pixel; OpenCV from the second row.
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, _U8, None),
    "bgr8": _Encoding(3, _U8, cv2.COLOR_BGR2RGB),
    "rgba8": _Encoding(4, _U8, cv2.COLOR_RGBA2RGB),
    "bgra8": _Encoding(4, _U8, cv2.COLOR_BGRA2RGB),
    "mono8": _Encoding(1, _U8, cv2.COLOR_GRAY2RGB),
    "rgb16": _Encoding(3, _U16, None),
    "bgr16": _Encoding(3, _U16, cv2.COLOR_BGR2RGB),
    "rgba16": _Encoding(4, _U16, cv2.COLOR_RGBA2RGB),
    "bgra16": _Encoding(4, _U16, cv2.COLOR_BGRA2RGB),
    "mono16": _Encoding(1, _U16, cv2.COLOR_GRAY2RGB),
    "8UC1": _Encoding(1, _U8, cv2.COLOR_GRAY2RGB),
    "8UC3": _Encoding(3, _U8, cv2.COLOR_BGR2RGB),
    "8UC4": _Encoding(4, _U8, cv2.COLOR_BGRA2RGB),
    "16UC1": _Encoding(1, _U16, cv2.COLOR_GRAY2RGB),
    "16UC3": _Encoding(3, _U16, cv2.COLOR_BGR2RGB),
    "16UC4": _Encoding(4, _U16, cv2.COLOR_BGRA2RGB),
    "yuv422": _Encoding(2, _U8, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": _Encoding(2, _U8, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": _Encoding(2, _U8, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": _Encoding(2, _U8, cv2.COLOR_YUV2RGB_YUY2),
    **{f"bayer_{p}8": _Encoding(1, _U8, code) for p, code in _BAYER.items()},
    **{f"bayer_{p}16": _Encoding(1, _U16, code) for p, code in _BAYER.items()},
}
# Encodings for which cv_bridge's imgmsg_to_cv2(msg, "rgb8") is defined (colour, mono, Bayer, YUV).
CV_BRIDGE_RGB8 = frozenset(e for e in ENCODINGS if not e[0].isdigit() and e not in ("uyvy", "yuyv"))

_JPEG_SOI, _JPEG_EOI, _PNG_MAGIC = b"\xff\xd8", b"\xff\xd9", b"\x89PNG\r\n\x1a\n"
_bridge = None


def decode(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage or sensor_msgs/Image -> [H, W, 3] uint8 RGB."""
    return decode_compressed(msg) if hasattr(msg, "format") else decode_raw(msg)


def check(msg) -> None:
    """Cheap validation on arrival (no pixel decoding): raises ImageError for a malformed message."""
    if hasattr(msg, "format"):
        _check_compressed(_as_array(msg.data), msg.format)
    else:
        _raw_geometry(msg)


def decode_compressed(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> [H, W, 3] uint8 RGB."""
    data = _as_array(msg.data)
    _check_compressed(data, msg.format)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.shape[0] == 0 or bgr.shape[1] == 0:
        raise ImageError(f"compressed image ({msg.format or 'no format'}, {len(data)} bytes) does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_raw(msg) -> np.ndarray:
    """sensor_msgs/Image -> [H, W, 3] uint8 RGB (cv_bridge where installed, else numpy/OpenCV)."""
    _raw_geometry(msg)
    if CvBridge is not None and msg.encoding in CV_BRIDGE_RGB8:
        global _bridge
        if _bridge is None:
            _bridge = CvBridge()
        try:
            return np.ascontiguousarray(_bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except Exception as error:  # cv_bridge raises CvBridgeError and cv2.error
            raise ImageError(f"cv_bridge cannot convert {msg.encoding!r}: {error}") from error
    return decode_raw_numpy(msg)


def decode_raw_numpy(msg) -> np.ndarray:
    """The decoder used without cv_bridge (also tested against cv_bridge where it is installed)."""
    pixels = raw_pixels(msg)
    encoding = ENCODINGS[msg.encoding]
    if encoding.to_rgb is not None:
        pixels = cv2.cvtColor(pixels, encoding.to_rgb)
    if pixels.dtype == np.uint16:
        # cv_bridge: convertTo(CV_8U, 255/65535), i.e. scale and round half to even with saturation.
        pixels = np.rint(pixels.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    return np.ascontiguousarray(pixels)


def raw_pixels(msg) -> np.ndarray:
    """sensor_msgs/Image -> its pixels as stored, native byte order: [H, W] or [H, W, C]."""
    height, width, step, encoding = _raw_geometry(msg)
    data = _as_array(msg.data)
    itemsize = np.dtype(encoding.dtype).itemsize
    rows = data.reshape(height, step)[:, : width * encoding.channels * itemsize]
    dtype = np.dtype(encoding.dtype).newbyteorder(">" if msg.is_bigendian else "<")
    pixels = np.ascontiguousarray(rows).view(dtype).astype(encoding.dtype)  # native order copy
    # YUV 4:2:2 has two bytes per pixel: [H, W, 2] is the 8UC2 layout cv2.cvtColor expects.
    return pixels.reshape((height, width) if encoding.channels == 1 else (height, width, encoding.channels))


def _raw_geometry(msg) -> tuple[int, int, int, _Encoding]:
    encoding = ENCODINGS.get(msg.encoding)
    if encoding is None:
        raise ImageError(f"unsupported image encoding {msg.encoding!r} (supported: {sorted(ENCODINGS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageError(f"empty image {height}x{width}")
    row_bytes = width * encoding.channels * np.dtype(encoding.dtype).itemsize
    if step < row_bytes:
        raise ImageError(
            f"step {step} is smaller than a {msg.encoding} row of {width} pixels ({row_bytes} bytes)"
        )
    size = len(msg.data)
    if size != step * height:
        raise ImageError(f"data has {size} bytes, expected step {step} x height {height} = {step * height}")
    if encoding.channels == 2 and width % 2:
        raise ImageError(f"{msg.encoding} needs an even width, got {width}")
    if msg.encoding.startswith("bayer_") and (width < 2 or height < 2):
        raise ImageError(f"{msg.encoding} needs at least 2x2 pixels, got {height}x{width}")
    return height, width, step, encoding


def _check_compressed(data: np.ndarray, fmt: str) -> None:
    if data.size == 0:
        raise ImageError(f"compressed image ({fmt or 'no format'}) has no data")
    head = data[:8].tobytes()
    if head.startswith(_JPEG_SOI):
        # libjpeg decodes a truncated stream into a partly grey image with only a warning: refuse it.
        # Some encoders pad the buffer with zeros after the end-of-image marker.
        end = data.size
        while end > 2 and data[end - 1] == 0:
            end -= 1
        if data[end - 2 : end].tobytes() != _JPEG_EOI:
            raise ImageError(f"JPEG of {data.size} bytes is truncated (no end-of-image marker)")
    elif not head.startswith(_PNG_MAGIC):
        raise ImageError(f"compressed image ({fmt or 'no format'}) is neither JPEG nor PNG")


def _as_array(data) -> np.ndarray:
    # rclpy gives uint8[] fields as array.array, rosbags as a numpy uint8 array; any buffer is viewed
    # without copying.
    return np.frombuffer(data, dtype=np.uint8)
