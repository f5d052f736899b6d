"""fastwam.image_decoding: every supported encoding against pixels built by hand, malformed messages,
and one camera frame decoded byte-identically by the policy node's path and the bag converter's."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from fastwam import image_decoding
from fastwam.image_decoding import ImageError, decode, decode_raw_numpy

H, W = 6, 8
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (H, W), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)
ALPHA16 = RNG.integers(0, 65536, (H, W, 1), dtype=np.uint16)
GRAY16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)


def to8(values: np.ndarray) -> np.ndarray:
    """cv_bridge's 16 -> 8 bit conversion: v * 255 / 65535 rounded (v / 257 is never a half)."""
    return ((values.astype(np.int64) * 255 + 65535 // 2) // 65535).astype(np.uint8)


def gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def image_msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image message laid out by hand: rows of pixels + `pad` junk bytes, chosen byte order."""
    pixels = np.ascontiguousarray(pixels)
    ordered = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = ordered.reshape(pixels.shape[0], -1).view(np.uint8)
    junk = np.full((pixels.shape[0], pad), 0xAB, dtype=np.uint8)
    data = np.concatenate([rows, junk], axis=1)
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding)
    msg.is_bigendian = int(bigendian)
    msg.step = data.shape[1]
    msg.data = data.tobytes()
    return msg


# encoding -> (pixels as stored, expected RGB)
CASES = {
    "rgb8": (RGB, RGB),
    "bgr8": (RGB[..., ::-1], RGB),
    "rgba8": (np.concatenate([RGB, ALPHA], -1), RGB),
    "bgra8": (np.concatenate([RGB[..., ::-1], ALPHA], -1), RGB),
    "mono8": (GRAY, gray3(GRAY)),
    "8UC1": (GRAY, gray3(GRAY)),
    "8UC3": (RGB[..., ::-1], RGB),
    "8UC4": (np.concatenate([RGB[..., ::-1], ALPHA], -1), RGB),
    "rgb16": (RGB16, to8(RGB16)),
    "bgr16": (RGB16[..., ::-1], to8(RGB16)),
    "rgba16": (np.concatenate([RGB16, ALPHA16], -1), to8(RGB16)),
    "bgra16": (np.concatenate([RGB16[..., ::-1], ALPHA16], -1), to8(RGB16)),
    "mono16": (GRAY16, gray3(to8(GRAY16))),
    "16UC1": (GRAY16, gray3(to8(GRAY16))),
    "16UC3": (RGB16[..., ::-1], to8(RGB16)),
    "16UC4": (np.concatenate([RGB16[..., ::-1], ALPHA16], -1), to8(RGB16)),
}


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", sorted(CASES))
def test_raw_encodings_match_hand_built_pixels(encoding, pad, bigendian):
    stored, expected = CASES[encoding]
    out = decode(image_msg(stored, encoding, pad=pad, bigendian=bigendian))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, expected)


def test_big_endian_flag_is_honoured_not_ignored():
    msg = image_msg(GRAY16, "mono16", bigendian=True)
    msg.is_bigendian = 0  # same bytes read as little-endian give different pixels
    assert not np.array_equal(decode(msg), gray3(to8(GRAY16)))


@pytest.mark.parametrize(
    ("pattern", "offsets"),
    # (row, col) of R, G, G, B in the 2x2 cell, as the ROS encoding names them.
    [
        ("rggb", ((0, 0), (0, 1), (1, 0), (1, 1))),
        ("bggr", ((1, 1), (0, 1), (1, 0), (0, 0))),
        ("gbrg", ((1, 0), (0, 0), (1, 1), (0, 1))),
        ("grbg", ((0, 1), (0, 0), (1, 1), (1, 0))),
    ],
)
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_uniform_scene_keeps_its_colour(pattern, offsets, bits):
    colour = np.array([200, 90, 30])  # distinct R, G, B: a wrong pattern swaps them
    scale = 257 if bits == 16 else 1
    mosaic = np.zeros((16, 16), dtype=np.uint16 if bits == 16 else np.uint8)
    for (r, c), value in zip(offsets, (colour[0], colour[1], colour[1], colour[2])):
        mosaic[r::2, c::2] = value * scale
    out = decode(image_msg(mosaic, f"bayer_{pattern}{bits}"))
    interior = out[4:-4, 4:-4].reshape(-1, 3).astype(int)
    assert np.abs(interior - colour).max() <= 1


@pytest.mark.parametrize(("encoding", "order"), [("yuv422", "UYVY"), ("yuv422_yuy2", "YUYV")])
def test_yuv422_byte_order(encoding, order):
    # Two pixels sharing U, V but with different Y: a swapped byte order mixes them up.
    y0, y1, u, v = 60, 180, 90, 200
    sample = {"Y0": y0, "Y1": y1, "U": u, "V": v}
    names = ("U", "Y0", "V", "Y1") if order == "UYVY" else ("Y0", "U", "Y1", "V")
    pair = np.array([sample[n] for n in names], dtype=np.uint8)
    stored = np.tile(pair, (4, 4)).reshape(4, 8, 2)  # 4 rows x 8 pixels, 2 bytes each
    out = decode(image_msg(stored, encoding)).astype(float)

    def bt601(y):  # BT.601 video range, which OpenCV's 4:2:2 conversions implement
        c, d, e = 1.164 * (y - 16), u - 128, v - 128
        return np.clip([c + 1.596 * e, c - 0.391 * d - 0.813 * e, c + 2.018 * d], 0, 255)

    assert np.abs(out[:, 0::2] - bt601(y0)).max() <= 3
    assert np.abs(out[:, 1::2] - bt601(y1)).max() <= 3


def test_jpeg_and_png_decode_to_rgb():
    red = np.zeros((32, 48, 3), np.uint8)
    red[..., 0] = 220  # RGB red: a missing BGR->RGB swap would make it blue
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(red, cv2.COLOR_RGB2BGR))
    assert ok
    out = decode(CompressedImage(format="jpeg", data=jpeg.tobytes()))
    assert out.shape == (32, 48, 3) and np.abs(out.astype(int) - red).max() <= 4
    ok, png = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(decode(CompressedImage(format="png", data=png.tobytes())), RGB)
    # Zero padding after the end-of-image marker is accepted.
    padded = CompressedImage(format="jpeg", data=jpeg.tobytes() + bytes(7))
    assert decode(padded).shape == (32, 48, 3)


def _jpeg_bytes() -> bytes:
    ok, jpeg = cv2.imencode(".jpg", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert ok
    return jpeg.tobytes()


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (CompressedImage(format="jpeg", data=b""), "no data"),
        (CompressedImage(format="jpeg", data=_jpeg_bytes()[:-300]), "truncated"),
        (CompressedImage(format="jpeg", data=b"\xff\xd8garbage\xff\xd9"), "does not decode"),
        (CompressedImage(format="tiff", data=b"II*\x00abcdef"), "neither JPEG nor PNG"),
    ],
)
def test_bad_compressed_images_raise(msg, match):
    with pytest.raises(ImageError, match=match):
        decode(msg)


def test_bad_raw_images_raise():
    good = image_msg(RGB, "rgb8")
    unknown = image_msg(RGB, "rgb8")
    unknown.encoding = "32FC1"
    with pytest.raises(ImageError, match="unsupported image encoding '32FC1'"):
        decode(unknown)
    empty = Image(height=0, width=0, encoding="rgb8", step=0)
    with pytest.raises(ImageError, match="empty image"):
        decode(empty)
    short_step = image_msg(RGB, "rgb8")
    short_step.step = W * 3 - 1
    with pytest.raises(ImageError, match="step"):
        decode(short_step)
    long_step = image_msg(RGB, "rgb8")
    long_step.step = W * 3 + 4  # claims padding the data does not have
    with pytest.raises(ImageError, match="expected step"):
        decode(long_step)
    truncated = image_msg(RGB, "rgb8")
    truncated.data = bytes(good.data)[:-1]
    with pytest.raises(ImageError, match="bytes"):
        decode(truncated)
    odd = image_msg(np.zeros((2, 3, 2), np.uint8), "yuv422")
    with pytest.raises(ImageError, match="even width"):
        decode(odd)


def test_check_validates_without_decoding():
    image_decoding.check(image_msg(RGB, "rgb8"))
    image_decoding.check(CompressedImage(format="jpeg", data=_jpeg_bytes()))
    with pytest.raises(ImageError):
        image_decoding.check(CompressedImage(format="jpeg", data=_jpeg_bytes()[:100]))
    bad = image_msg(RGB, "rgb8")
    bad.encoding = "nope"
    with pytest.raises(ImageError):
        image_decoding.check(bad)


@pytest.mark.skipif(
    image_decoding.CvBridge is None,
    reason="cv_bridge is not installed (not on PyPI; present on a full ROS install)",
)
@pytest.mark.parametrize("encoding", sorted(image_decoding.CV_BRIDGE_RGB8))
def test_numpy_decoder_matches_cv_bridge(encoding):
    bridge = image_decoding.CvBridge()
    if encoding in CASES:
        stored = CASES[encoding][0]
    elif encoding.startswith("bayer_"):
        bits = 16 if encoding.endswith("16") else 8
        stored = (GRAY16 if bits == 16 else GRAY).copy()
    else:  # yuv422 / yuv422_yuy2
        stored = RNG.integers(0, 256, (H, W, 2), dtype=np.uint8)
    for pad, bigendian in ((0, False), (4, False), (4, True)):
        msg = image_msg(stored, encoding, pad=pad, bigendian=bigendian)
        np.testing.assert_array_equal(
            decode_raw_numpy(msg), bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
        )


def test_bag_frame_and_node_frame_decode_byte_identically(tmp_path):
    """The node decodes what rclpy delivers; the converter decodes the same bytes after the recorder
    wrote them (its writer, MCAP) and rosbags read them back: one function, the same pixels."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Reader

    from fastwam.data import bag as bag_module
    from fastwam.data.episode_bag import EpisodeRecorder, TopicSpec

    ok, png = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    assert ok
    yuv = RNG.integers(0, 256, (H, W, 2), dtype=np.uint8)
    bayer16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    raw = [  # encodings the old bag decoder lacked (16 bit, big-endian, Bayer, YUV) and ones it had
        image_msg(CASES["bgr8"][0], "bgr8", pad=5),
        image_msg(CASES["rgba8"][0], "rgba8"),
        image_msg(CASES["mono16"][0], "mono16", pad=3, bigendian=True),
        image_msg(CASES["16UC3"][0], "16UC3", pad=2),
        image_msg(bayer16, "bayer_grbg16"),
        image_msg(yuv, "yuv422"),
    ]
    compressed = [
        CompressedImage(format="jpeg", data=_jpeg_bytes()),
        CompressedImage(format="png", data=png.tobytes()),
    ]
    topics = [
        TopicSpec("/cam/raw", "sensor_msgs/msg/Image"),
        TopicSpec("/cam/compressed", "sensor_msgs/msg/CompressedImage"),
    ]
    recorder = EpisodeRecorder(tmp_path, topics, flush_period_s=0.1)
    recorder.start("decode")
    for topic, messages in enumerate((raw, compressed)):
        for i, msg in enumerate(messages):
            recorder.submit(topic, 1_000_000_000 + i, serialize_message(msg))
    episode = recorder.stop(save=True, task_success=True)
    read: dict[str, list] = {"/cam/raw": [], "/cam/compressed": []}
    with Reader(episode.path) as reader:
        for connection, _, data in reader.messages():
            read[connection.topic].append(bag_module._TYPESTORE.deserialize_cdr(data, connection.msgtype))
    for topic, sent in (("/cam/raw", raw), ("/cam/compressed", compressed)):
        assert len(read[topic]) == len(sent)
        for i, (node_msg, bag_msg) in enumerate(zip(sent, read[topic])):
            # The converter's frame decoding (align_episode calls it for every chosen frame).
            stream = bag_module.CameraStream(np.array([0]), [bag_msg])
            from_bag = bag_module._decode_frames(stream, np.array([0]), "cam", episode.path, None)[0]
            from_node = decode(node_msg)
            assert from_bag.dtype == from_node.dtype == np.uint8, (topic, i)
            assert from_bag.tobytes() == from_node.tobytes(), (topic, i)
    # And the pixels are the right ones, not merely the same.
    np.testing.assert_array_equal(decode(raw[0]), RGB)
    np.testing.assert_array_equal(decode(raw[2]), gray3(to8(GRAY16)))
    np.testing.assert_array_equal(decode(compressed[1]), RGB)


def test_bag_conversion_names_the_message_of_an_undecodable_frame(tmp_path):
    """A frame the decoder refuses (a truncated JPEG, which the old bag decoder let through as a
    partly grey image) rejects the episode with the bag, camera and message index in the error."""
    from fastwam.data import bag as bag_module

    class Compressed:  # rosbags' message type has just these fields
        format = "jpeg"
        data = np.frombuffer(_jpeg_bytes()[:-300], np.uint8)

    stream = bag_module.CameraStream(np.array([0, 1]), [Compressed(), Compressed()])
    with pytest.raises(
        bag_module.BagError, match=r"ep_0001: camera head message 1: JPEG of \d+ bytes is truncated"
    ):
        bag_module._decode_frames(stream, np.array([1]), "head", tmp_path / "ep_0001", None)
