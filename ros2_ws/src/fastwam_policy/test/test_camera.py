from __future__ import annotations

import numpy as np
import pytest
import torch

from fastwam.camera import CameraLayout, CameraView, composite_to_tensor, resize_image


def solid(h: int, w: int, value: int) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_r1_lite_layout_places_head_on_top_and_wrists_below():
    layout = CameraLayout.r1_lite()
    assert (layout.height, layout.width) == (384, 320)
    assert layout.keys == ("head", "wrist_left", "wrist_right")
    out = layout.compose(
        {"head": solid(480, 640, 10), "wrist_left": solid(480, 640, 20), "wrist_right": solid(480, 640, 30)}
    )
    assert out.shape == (384, 320, 3) and out.dtype == np.uint8
    assert (out[:256] == 10).all()
    assert (out[256:, :160] == 20).all()
    assert (out[256:, 160:] == 30).all()


def test_compose_resizes_content_not_just_fills():
    layout = CameraLayout.row(("a",), 32, 64)
    image = np.zeros((64, 128, 3), np.uint8)
    image[:, 64:] = 255  # right half white
    out = layout.compose({"a": image})
    assert (out[:, :31] == 0).all() and (out[:, 33:] == 255).all()


def test_clip_composition_matches_frame_by_frame():
    layout = CameraLayout.libero()
    rng = np.random.default_rng(0)
    clips = {k: rng.integers(0, 255, (3, 100, 120, 3), dtype=np.uint8) for k in layout.keys}
    out = layout.compose(clips)
    assert out.shape == (3, 224, 448, 3)
    for t in range(3):
        np.testing.assert_array_equal(out[t], layout.compose({k: v[t] for k, v in clips.items()}))


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ({"head": solid(10, 10, 0)}, "missing camera images"),
        (
            {
                "head": np.zeros((10, 10, 3), np.float32),
                "wrist_left": solid(8, 8, 0),
                "wrist_right": solid(8, 8, 0),
            },
            "uint8",
        ),
        (
            {
                "head": np.zeros((10, 10), np.uint8),
                "wrist_left": solid(8, 8, 0),
                "wrist_right": solid(8, 8, 0),
            },
            "shape",
        ),
        (
            {
                "head": np.zeros((0, 10, 3), np.uint8),
                "wrist_left": solid(8, 8, 0),
                "wrist_right": solid(8, 8, 0),
            },
            "empty",
        ),
    ],
)
def test_bad_images_are_named(images, message):
    with pytest.raises(ValueError, match=message):
        CameraLayout.r1_lite().compose(images)


def test_invalid_layouts_are_rejected():
    with pytest.raises(ValueError, match="multiple of 32"):
        CameraLayout.row(("a",), 100, 100)
    with pytest.raises(ValueError, match="equal total widths"):
        CameraLayout(((CameraView("a", 32, 64),), (CameraView("b", 32, 32),)))
    with pytest.raises(ValueError, match="more than once"):
        CameraLayout.row(("a", "a"), 32, 32)
    with pytest.raises(ValueError, match="one height"):
        CameraLayout(((CameraView("a", 32, 32), CameraView("b", 64, 32)),))


def test_dict_round_trip_and_strictness():
    layout = CameraLayout.r1_lite()
    assert CameraLayout.from_dict(layout.to_dict()) == layout
    with pytest.raises(ValueError, match="unknown fields"):
        CameraLayout.from_dict({**layout.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="needs key, height, width"):
        CameraLayout.from_dict({"rows": [[{"key": "a", "height": 32}]]})
    with pytest.raises(ValueError, match="needs key, height, width"):
        CameraLayout.from_dict({"rows": [[{"key": "a", "height": 32, "width": 32, "zoom": 2}]]})


WINDOW = CameraView("head", 32, 64, resize=(54, 72), crop_origin=(8, 4))


def test_window_is_cut_from_the_resized_image():
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    np.testing.assert_array_equal(WINDOW.pixels(image), resize_image(image, 54, 72)[8:40, 4:68])
    layout = CameraLayout(((WINDOW,), (CameraView("wrist", 32, 64),)))
    out = layout.compose({"head": image, "wrist": image})
    np.testing.assert_array_equal(out[:32], WINDOW.pixels(image))
    # A dataset stores windowed cameras at stored_size (the whole field of view): cutting the window
    # from the stored image gives exactly the pixels the policy node cuts from the camera's.
    assert WINDOW.stored_size == (54, 72)
    np.testing.assert_array_equal(
        WINDOW.pixels(resize_image(image, *WINDOW.stored_size)), WINDOW.pixels(image)
    )
    # The layout keeps the window through its dict form (checkpoints, robot configs).
    assert CameraLayout.from_dict(layout.to_dict()) == layout
    assert layout.to_dict()["rows"][0][0] == {
        "key": "head", "height": 32, "width": 64, "resize": [54, 72], "crop_origin": [8, 4]
    }  # fmt: skip
    assert "resize" not in layout.to_dict()["rows"][1][0]  # plain views keep their old form


def test_window_must_fit_in_the_resized_image():
    with pytest.raises(ValueError, match="does not fit"):
        CameraView("head", 32, 64, resize=(54, 72), crop_origin=(24, 0))
    with pytest.raises(ValueError, match="does not fit"):
        CameraView("head", 32, 64, resize=(30, 72))
    with pytest.raises(ValueError, match="does not fit"):
        CameraView("head", 32, 64, crop_origin=(1, 0))  # no resize: the window is the whole image
    with pytest.raises(ValueError, match="pairs"):
        CameraView("head", 32, 64, resize=(54, 72, 3))
    with pytest.raises(ValueError, match="pairs"):
        CameraLayout.from_dict({"rows": [[{"key": "a", "height": 32, "width": 32, "resize": 64}]]})


def test_composite_to_tensor_range_and_layout():
    composite = np.zeros((2, 4, 3), np.uint8)
    composite[0, 0] = (0, 128, 255)
    tensor = composite_to_tensor(composite)
    assert tensor.shape == (3, 2, 4) and tensor.dtype == torch.float32
    assert tensor[:, 0, 0].tolist() == pytest.approx([-1.0, 128 / 127.5 - 1.0, 1.0], abs=1e-6)
    with pytest.raises(ValueError):
        composite_to_tensor(composite.astype(np.float32))
