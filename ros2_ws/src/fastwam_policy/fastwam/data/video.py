"""Video files of LeRobot datasets, read and written with PyAV (no torchvision, no ffmpeg CLI).

Frames are addressed by time, the way LeRobot addresses them: frame i of an episode lives at
`from_timestamp + timestamps[i]` seconds in its mp4 (from_timestamp is 0 for v2.1's one-file-per-
episode videos and the episode's offset inside a v3.0 multi-episode file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class VideoError(RuntimeError):
    """A video file is missing, unreadable or lacks the frames asked for."""


@dataclass(frozen=True)
class VideoCodec:
    """An encoder setting. `info_codec` is what LeRobot's info.json records as video.codec."""

    encoder: str
    pix_fmt: str
    options: tuple[tuple[str, str], ...]
    info_codec: str


# Keyframe every 2 frames (LeRobot's choice): random access during training then decodes at most
# one extra frame per seek, at the cost of larger files.
VIDEO_CODECS: dict[str, VideoCodec] = {
    "h264": VideoCodec("libx264", "yuv420p", (("crf", "20"), ("g", "2"), ("preset", "fast")), "h264"),
    # Lossless RGB H.264 (High 4:4:4): exact round trips, for tests and archival.
    "h264_lossless": VideoCodec("libx264rgb", "rgb24", (("qp", "0"), ("g", "2"), ("preset", "fast")), "h264"),
    "av1": VideoCodec("libsvtav1", "yuv420p", (("crf", "30"), ("g", "2"), ("preset", "8")), "av1"),
}


def encode_video(path: str | os.PathLike[str], frames: np.ndarray, fps: int, codec: str = "h264") -> None:
    """Write uint8 RGB frames [T, H, W, 3] to an mp4 at `fps`, atomically (temp file, then rename)."""
    if codec not in VIDEO_CODECS:
        raise ValueError(f"unknown video codec {codec!r}; choose one of {sorted(VIDEO_CODECS)}")
    spec = VIDEO_CODECS[codec]
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"{path}: frames must be uint8 [T>0, H, W, 3], got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if spec.pix_fmt == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(f"{path}: codec {codec!r} (yuv420p) needs even frame sizes, got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(spec.encoder, rate=_rate(fps))
            stream.width, stream.height, stream.pix_fmt = width, height, spec.pix_fmt
            stream.options = dict(spec.options)
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def concat_videos(
    inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], lengths: Sequence[int], fps: int
) -> None:
    """Remux mp4 files encoded alike into one, back to back, without re-encoding, atomically.

    LeRobot v3.0 grows a camera's video file by concatenating each new episode's mp4 to it
    (lerobot_dataset.py `_save_episode_video` -> video_utils.concatenate_video_files, a stream
    copy). Input k (`lengths[k]` frames) starts at sum(lengths[:k]) / fps seconds in the output,
    the episode's `from_timestamp`. Raises VideoError if the inputs differ in codec or frame size.
    """
    if len(inputs) != len(lengths) or not inputs:
        raise ValueError("concat_videos needs one frame count per input, and at least one input")
    output = Path(output)
    tmp = output.with_name(f".{output.name}.concat.tmp")
    try:
        with _open(inputs[0]) as first:
            template = first.streams.video[0]
            expect = (
                template.codec_context.name,
                template.codec_context.width,
                template.codec_context.height,
            )
            with av.open(str(tmp), mode="w", format="mp4") as out:
                stream = out.add_stream_from_template(template, opaque=True)
                start = Fraction(0)
                for path, length in zip(inputs, lengths, strict=True):
                    with _open(path) as src:
                        video = src.streams.video[0]
                        ctx = video.codec_context
                        if (ctx.name, ctx.width, ctx.height) != expect:
                            raise VideoError(
                                f"{path}: {ctx.name} {ctx.width}x{ctx.height} cannot follow "
                                f"{expect[0]} {expect[1]}x{expect[2]} in {output}"
                            )
                        shift = int(round(start / Fraction(video.time_base)))
                        for packet in src.demux(video):
                            if packet.dts is None and packet.pts is None:
                                continue  # the demuxer's end-of-stream marker
                            if packet.pts is not None:
                                packet.pts += shift
                            if packet.dts is not None:
                                packet.dts += shift
                            packet.stream = stream
                            out.mux(packet)
                    start += Fraction(int(length), int(fps))
        os.replace(tmp, output)
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"{output}: cannot concatenate {[str(p) for p in inputs]}: {error}") from error
    finally:
        tmp.unlink(missing_ok=True)


def video_info(path: str | os.PathLike[str]) -> dict[str, object]:
    """Container facts for info.json's per-feature `info` block and for validation."""
    with _open(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        return {
            "frames": int(stream.frames),
            "height": int(ctx.height),
            "width": int(ctx.width),
            "codec": ctx.name,
            "pix_fmt": ctx.pix_fmt,
            "fps": float(stream.average_rate) if stream.average_rate else None,
        }


def decode_frames(path: str | os.PathLike[str], times: Sequence[float], fps: float) -> np.ndarray:
    """Decode the frames shown at `times` (seconds) -> uint8 RGB [N, H, W, 3], in the order asked.

    A frame matches a requested time when it lies within half a frame period of it. Seeks once to
    the keyframe before the earliest time and decodes forward to the latest. Raises VideoError
    naming the file if the file is unreadable or a requested frame is not in it.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) == 0:
        raise ValueError(f"{path}: times must be a non-empty 1-D sequence")
    tolerance = 0.5 / fps
    order = np.argsort(times, kind="stable")
    out: list[np.ndarray | None] = [None] * len(times)
    k = 0  # next position in `order` to fill
    try:
        with _open(path) as container:
            stream = container.streams.video[0]
            first = max(float(times[order[0]]) - tolerance, 0.0)
            if first > 0 and stream.time_base is not None:
                container.seek(int(first / stream.time_base), stream=stream, backward=True, any_frame=False)
            last = float(times[order[-1]])
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else None
                if t is None:
                    raise VideoError(f"{path}: decoded a frame without a timestamp")
                if t > last + tolerance:
                    break
                image = None
                while k < len(order) and abs(t - times[order[k]]) <= tolerance:
                    image = frame.to_ndarray(format="rgb24") if image is None else image
                    out[order[k]] = image
                    k += 1
                if k == len(order):
                    break
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"{path}: cannot decode video: {error}") from error
    if k < len(order):
        missing = sorted(float(times[i]) for i in order[k:])
        raise VideoError(
            f"{path}: no frame at t={missing[0]:.4f}s ({len(missing)} of {len(times)} requested "
            f"frames missing; video too short or timestamps do not match)"
        )
    return np.stack(out)  # type: ignore[arg-type]


def _open(path: str | os.PathLike[str]):
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video file not found: {path}")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"{path}: cannot open video: {error}") from error
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)
