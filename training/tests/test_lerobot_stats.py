"""LeRobot-style statistics against numbers worked out by hand from LeRobot's documented recipe.

The recipe (lerobot src/lerobot/datasets/compute_stats.py): `estimate_num_samples` (its docstring
gives 100 samples up to ~500 frames, 177 at 1000, 1681 at 20000), `sample_indices`
(round(linspace(0, n-1, k))), `auto_downsample_height_width` (stride int(long side / 150) from 300
px up), `RunningQuantileStats` (5000 bins from min - 1e-10 to max + 1e-10, linear interpolation in
the bin where the cumulative count reaches q * N) and `aggregate_feature_stats` (count-weighted).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastwam.data.lerobot_stats import (
    aggregate_stats,
    downsample_stride,
    image_sample_indices,
    image_stats,
    num_image_samples,
    vector_stats,
)


def test_frame_sampling_and_downsampling():
    assert image_sample_indices(5).tolist() == [0, 1, 2, 3, 4]  # fewer than 100 frames: all
    picks = image_sample_indices(150)  # k * 149 / 99 rounded
    assert len(picks) == 100 and picks[:5].tolist() == [0, 2, 3, 5, 6] and picks[-1] == 149
    assert [num_image_samples(n) for n in (1, 99, 460, 1000, 2000, 5000, 20000)] == [
        1,
        99,
        100,
        177,
        299,
        594,
        1681,
    ]
    assert downsample_stride(480, 640) == 4 and downsample_stride(720, 1280) == 8
    assert (
        downsample_stride(299, 299) == 1
        and downsample_stride(310, 200) == 2
        and downsample_stride(128, 160) == 1
    )


def test_vector_stats_by_hand():
    s = vector_stats(np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32))
    assert list(s) == ["min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"]
    assert s["min"].tolist() == [1.0] and s["max"].tolist() == [4.0] and s["count"].tolist() == [4]
    assert s["mean"].tolist() == [2.5] and s["std"][0] == pytest.approx(np.sqrt(1.25), abs=1e-12)
    # Bins of width w = 3/5000 from 1: the values fall in bins 0, 1666, 3333, 4999.
    w = 3 / 5000
    assert s["q01"][0] == pytest.approx(1.0, abs=1e-9)  # reached in the first bin: its left edge
    assert s["q10"][0] == pytest.approx(1.0, abs=1e-9)
    assert s["q50"][0] == pytest.approx(1 + 1667 * w, abs=1e-9)  # 2 of 4 reached at the end of bin 1666
    assert s["q90"][0] == pytest.approx(1 + (4999 + 0.6) * w, abs=1e-9)  # 3.6 - 3 of the last bin's 1
    assert s["q99"][0] == pytest.approx(1 + (4999 + 0.96) * w, abs=1e-9)
    # [T, D] columns -> per-dimension (D,); int64 columns keep integer extremes
    s = vector_stats(np.array([[0, 10], [2, 30]], dtype=np.int64))
    assert s["min"].dtype == np.int64 and s["min"].tolist() == [0, 10] and s["mean"].tolist() == [1.0, 20.0]
    assert s["std"].tolist() == [1.0, 10.0]
    # one frame: plain std 0 and quantiles equal to the mean (LeRobot's _compute_basic_stats)
    s = vector_stats(np.array([[3.0, -1.0]]))
    assert s["std"].tolist() == [0.0, 0.0] and s["q99"].tolist() == [3.0, -1.0] and s["count"].tolist() == [1]
    assert "q50" not in vector_stats(np.arange(4.0), quantiles=False)


def test_image_stats_by_hand():
    clip = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    clip[..., 0] = 51  # constant 0.2
    clip[1, ..., 1] = 255  # frame 0 black, frame 1 white: mean 0.5, std 0.5
    clip[:, 1, 1, 2] = 255  # one pixel of four: mean 0.25, std sqrt(0.25 * 0.75)
    s = image_stats(clip)
    assert {k: v.shape for k, v in s.items() if k != "count"} == dict.fromkeys(
        ["min", "max", "mean", "std", "q01", "q10", "q50", "q90", "q99"], (3, 1, 1)
    )
    assert s["count"].tolist() == [2]  # the number of sampled frames
    np.testing.assert_allclose(s["mean"].ravel(), [0.2, 0.5, 0.25], atol=1e-12)
    np.testing.assert_allclose(s["std"].ravel(), [0.0, 0.5, np.sqrt(0.1875)], atol=1e-12)
    np.testing.assert_allclose(s["min"].ravel(), [0.2, 0.0, 0.0]) and np.testing.assert_allclose(
        s["max"].ravel(), [0.2, 1.0, 1.0]
    )
    # channel 1: 4 zeros then 4 at 255; bins of 255/5000: q50 (4 of 8) is reached in bin 0, q90
    # (7.2) at 3.2/4 of the last bin
    assert s["q50"][1, 0, 0] == pytest.approx(0.0, abs=1e-9)
    assert s["q90"][1, 0, 0] == pytest.approx((4999 + 0.8) * (255 / 5000) / 255, abs=1e-9)


def test_image_stats_sample_frames_and_downsample_rows():
    """150 frames of 310 x 200: 100 frames are used, and every second row (stride int(310/150))."""
    clip = np.zeros((150, 310, 200, 3), dtype=np.uint8)
    clip[:, 1::2, :, 1] = 255  # odd rows white in channel 1: all pixels would give mean 0.5
    clip[..., 0] = np.arange(150, dtype=np.uint8)[:, None, None]  # frame number in channel 0
    s = image_stats(clip)
    assert s["count"].tolist() == [100]
    assert s["max"][1, 0, 0] == 0.0 and s["mean"][1, 0, 0] == 0.0  # only even rows were looked at
    assert s["max"][0, 0, 0] == pytest.approx(149 / 255) and s["mean"][0, 0, 0] == pytest.approx(74.5 / 255)


def test_aggregate_by_hand():
    a = vector_stats(np.array([1.0, 2.0, 3.0, 4.0]))
    b = vector_stats(np.array([10.0, 20.0]))
    agg = aggregate_stats([{"x": a}, {"x": b}])["x"]
    everything = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0])
    assert agg["count"].tolist() == [6] and agg["min"].tolist() == [1.0] and agg["max"].tolist() == [20.0]
    assert agg["mean"][0] == pytest.approx(40 / 6) and agg["std"][0] == pytest.approx(everything.std())
    assert agg["q50"][0] == pytest.approx((4 * a["q50"][0] + 2 * b["q50"][0]) / 6)  # count-weighted
    images = aggregate_stats(
        [
            {"c": image_stats(np.zeros((3, 2, 2, 3), np.uint8))},
            {"c": image_stats(np.full((1, 2, 2, 3), 255, np.uint8))},
        ]
    )
    np.testing.assert_allclose(images["c"]["mean"].ravel(), [0.25] * 3)  # 3 black frames, 1 white
    assert images["c"]["mean"].shape == (3, 1, 1) and images["c"]["count"].tolist() == [4]
