"""Chunk plot: panel grid, predicted and executed lines drawn where they belong."""

from __future__ import annotations

import numpy as np

from fastwam_policy.chunk_plot import _EXECUTED, _PREDICTED, render_chunk_plot


def _has_colour(region: np.ndarray, colour) -> bool:
    """Some pixel close to `colour` (lines are anti-aliased, so exact matches are rare)."""
    distance = np.abs(region.astype(int) - np.array(colour)).sum(axis=-1)
    return bool((distance < 40).any())


def test_panels_and_lines():
    horizon, dim = 32, 3
    chunk = np.linspace(-0.5, 0.5, horizon)[:, None].repeat(dim, axis=1)
    executed = chunk[4:10] + 0.1
    image = render_chunk_plot(
        chunk,
        executed,
        offset=4,
        joint_names=["a", "b", "c"],
        lower=np.full(dim, -1.0),
        upper=np.full(dim, 1.0),
        columns=2,
        panel_size=(70, 300),
    )
    assert image.dtype == np.uint8 and image.shape == (140, 600, 3)
    for j in range(dim):
        panel = image[(j // 2) * 70 : (j // 2 + 1) * 70, (j % 2) * 300 : (j % 2 + 1) * 300]
        assert _has_colour(panel, _PREDICTED) and _has_colour(panel, _EXECUTED)
        # Executed steps 4..9 of 32: the thick line stays in the left third of the panel.
        assert not _has_colour(panel[:, 110:], _EXECUTED)
    empty = image[70:, 300:]  # the fourth panel slot has no joint
    assert not _has_colour(empty, _PREDICTED)


def test_nothing_executed_yet_and_out_of_range_values():
    chunk = np.array([[5.0], [-5.0], [0.0]])  # outside the limits: drawn clipped, no error
    image = render_chunk_plot(chunk, np.zeros((0, 1)), 0, ["j"], np.array([-1.0]), np.array([1.0]), columns=1)
    assert image.shape == (70, 300, 3) and not _has_colour(image, _EXECUTED)
