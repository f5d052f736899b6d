"""Chunk execution: alignment to the present, blending, joint and per-step limits, NaN chunks."""

from __future__ import annotations

import numpy as np
import pytest

from fastwam.execution import ChunkExecutor, JointLimits, blend, check_chunk, limit_plan, steps_elapsed
from fastwam.robot import JointGroup, RobotSpec

RATE = 10.0


def limits(dim: int = 2, max_step: float = 0.5) -> JointLimits:
    return JointLimits(np.full(dim, -1.0), np.full(dim, 1.0), np.full(dim, max_step))


def executor(blend_steps: int = 0, replan: int = 3, max_step: float = 0.5) -> ChunkExecutor:
    ex = ChunkExecutor(limits(max_step=max_step), RATE, blend_steps=blend_steps, replan_steps_left=replan)
    ex.reset(np.zeros(2))
    return ex


def ramp(n: int, start: float = 0.0, slope: float = 0.01) -> np.ndarray:
    """[n, 2] chunk moving both joints linearly."""
    return np.repeat((start + slope * np.arange(n))[:, None], 2, axis=1)


def test_limits_from_robot_spec_divide_velocity_by_rate():
    group = JointGroup("arm", ("a", "b"), (-1.0, -2.0), (1.0, 2.0), (0.5, 3.0))
    robot = RobotSpec("r", (group,), ("arm",), ("arm",))
    lim = JointLimits.from_robot(robot, 15.0)
    np.testing.assert_allclose(lim.max_step, [0.5 / 15, 3.0 / 15])
    np.testing.assert_allclose(lim.lower, [-1, -2])


@pytest.mark.parametrize(("elapsed", "expected"), [(-0.3, 0), (0.0, 0), (0.04, 0), (0.06, 1), (0.31, 3)])
def test_steps_elapsed_rounds_to_nearest_step(elapsed, expected):
    assert steps_elapsed(100.0, 100.0 + elapsed, RATE) == expected


def test_check_chunk_reasons():
    assert check_chunk(np.zeros((4, 2)), 2) is None
    assert "shape" in check_chunk(np.zeros((4, 3)), 2)
    assert "shape" in check_chunk(np.zeros((0, 2)), 2)
    bad = np.zeros((4, 2))
    bad[2, 1] = np.nan
    assert "step 2 dim 1" in check_chunk(bad, 2)
    bad[2, 1] = np.inf
    assert "non-finite" in check_chunk(bad, 2)


def test_blend_weights_cross_fade_and_hold_short_old_plan():
    old = np.zeros((1, 1))
    new = np.ones((5, 1))
    out = blend(old, new, blend_steps=3)
    np.testing.assert_allclose(out[:, 0], [0.25, 0.5, 0.75, 1.0, 1.0])
    np.testing.assert_allclose(blend(old, new, 0), new)


def test_limit_plan_bounds_step_and_position():
    lim = limits(dim=1, max_step=0.2)
    plan = np.array([[0.9], [5.0], [-5.0]])
    out = limit_plan(plan, np.array([0.0]), lim)
    np.testing.assert_allclose(out[:, 0], [0.2, 0.4, 0.2])
    # Starting outside the limits: the command is clamped inside even if that is a larger step.
    out = limit_plan(np.array([[2.0]]), np.array([1.5]), lim)
    assert out[0, 0] == 1.0


def test_chunk_is_aligned_to_the_present_and_stepped():
    ex = executor()
    result = ex.merge(ramp(10), stamp=50.0, now=50.32)  # 3 steps at 10 Hz elapsed during inference
    assert result.accepted and result.steps_skipped == 3
    np.testing.assert_allclose(ex.step(), [0.03, 0.03])
    np.testing.assert_allclose(ex.step(), [0.04, 0.04])
    assert ex.steps_left == 5 and not ex.needs_chunk
    ex.step(), ex.step()
    assert ex.needs_chunk  # 3 steps left = replan_steps_left
    for _ in range(3):
        assert ex.step() is not None
    assert ex.step() is None  # plan exhausted: hold, last command stays
    np.testing.assert_allclose(ex.last_command, [0.09, 0.09])


def test_chunk_boundary_is_continuous_without_pause():
    ex = executor(blend_steps=3, max_step=0.05)
    ex.merge(ramp(12, start=0.01), stamp=0.0, now=0.0)
    commands = [ex.step() for _ in range(8)]
    # The next chunk was predicted at t=0.5 s, lands at 0.8 s, and is offset by +0.2 (a model that
    # changed its mind): no jump, no repeated step.
    ex.merge(ramp(12, start=0.2 + 0.05, slope=0.01), stamp=0.5, now=0.8)
    commands += [ex.step() for _ in range(8)]
    steps = np.abs(np.diff(np.array(commands)[:, 0]))
    assert steps.max() <= 0.05 + 1e-12
    assert steps.min() > 0.0  # still moving across the boundary: no pause
    np.testing.assert_allclose(commands[-1], [0.2 + 0.05 + 0.01 * 10] * 2, atol=1e-9)


def test_blend_starts_from_the_old_plan_step_due_now():
    ex = executor(blend_steps=1)
    ex.merge(np.full((6, 2), 0.4), stamp=0.0, now=0.0)  # rate limit 0.5: reached at once
    ex.step()
    ex.merge(np.full((6, 2), 0.8), stamp=0.1, now=0.1)
    np.testing.assert_allclose(ex.step(), [0.6, 0.6])  # half old (0.4), half new (0.8)
    np.testing.assert_allclose(ex.step(), [0.8, 0.8])


def test_targets_outside_limits_are_clamped():
    ex = executor(max_step=10.0)
    ex.merge(np.array([[3.0, -3.0], [0.5, 0.5]]), stamp=0.0, now=0.0)
    np.testing.assert_allclose(ex.step(), [1.0, -1.0])


def test_nan_chunk_is_discarded_and_the_robot_holds():
    ex = executor()
    ex.merge(ramp(10), stamp=0.0, now=0.0)
    ex.step()
    bad = ramp(10)
    bad[4, 0] = np.nan
    result = ex.merge(bad, stamp=0.1, now=0.1)
    assert not result.accepted and "non-finite" in result.reason
    assert ex.step() is None and ex.plan is None
    np.testing.assert_allclose(ex.last_command, [0.0, 0.0])


def test_chunk_entirely_in_the_past_is_discarded():
    ex = executor()
    result = ex.merge(ramp(4), stamp=0.0, now=0.41)
    assert not result.accepted and result.steps_skipped == 4 and "past its last step" in result.reason


def test_merge_needs_a_starting_position_and_reset_validates_it():
    ex = ChunkExecutor(limits(), RATE, blend_steps=0, replan_steps_left=1)
    with pytest.raises(RuntimeError, match="reset"):
        ex.merge(ramp(3), 0.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        ex.reset(np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        ex.reset(np.array([0.0, np.nan]))


def test_monitoring_record_of_executed_steps():
    ex = executor()
    ex.merge(ramp(10), stamp=0.0, now=0.2)
    ex.step(), ex.step()
    assert ex.chunk_offset == 2 and len(ex.executed) == 2
    np.testing.assert_allclose(ex.chunk, ramp(10))
