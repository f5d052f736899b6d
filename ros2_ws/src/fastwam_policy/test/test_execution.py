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
    ticks = iter(50.32 + np.arange(20) / RATE)
    np.testing.assert_allclose(ex.step(next(ticks)), [0.03, 0.03])
    np.testing.assert_allclose(ex.step(next(ticks)), [0.04, 0.04])
    assert ex.steps_left == 5 and not ex.needs_chunk
    ex.step(next(ticks)), ex.step(next(ticks))
    assert ex.needs_chunk  # 3 steps left = replan_steps_left
    for _ in range(3):
        assert ex.step(next(ticks)) is not None
    assert not ex.exhausted
    t_out = next(ticks)
    assert ex.step(t_out) is None  # plan exhausted: hold, last command stays
    np.testing.assert_allclose(ex.last_command, [0.09, 0.09])
    assert ex.exhausted and ex.exhausted_for(t_out + 0.5) == pytest.approx(0.5)
    assert ex.step(t_out + 0.1) is None and ex.exhausted_for(t_out + 0.5) == pytest.approx(0.5)


def test_chunk_boundary_is_continuous_without_pause():
    ex = executor(blend_steps=3, max_step=0.05)
    ex.merge(ramp(12, start=0.01), stamp=0.0, now=0.0)
    commands = [ex.step(i / RATE) for i in range(8)]
    # The next chunk was predicted at t=0.5 s, lands at 0.8 s, and is offset by +0.2 (a model that
    # changed its mind): no jump, no repeated step.
    ex.merge(ramp(12, start=0.2 + 0.05, slope=0.01), stamp=0.5, now=0.8)
    commands += [ex.step(0.8 + i / RATE) for i in range(8)]
    steps = np.abs(np.diff(np.array(commands)[:, 0]))
    assert steps.max() <= 0.05 + 1e-12
    assert steps.min() > 0.0  # still moving across the boundary: no pause
    np.testing.assert_allclose(commands[-1], [0.2 + 0.05 + 0.01 * 10] * 2, atol=1e-9)


def test_blend_starts_from_the_old_plan_step_due_now():
    ex = executor(blend_steps=1)
    ex.merge(np.full((6, 2), 0.4), stamp=0.0, now=0.0)  # rate limit 0.5: reached at once
    ex.step(0.0)
    ex.merge(np.full((6, 2), 0.8), stamp=0.1, now=0.1)
    np.testing.assert_allclose(ex.step(0.1), [0.6, 0.6])  # half old (0.4), half new (0.8)
    np.testing.assert_allclose(ex.step(0.2), [0.8, 0.8])


def test_targets_outside_limits_are_clamped():
    ex = executor(max_step=10.0)
    ex.merge(np.array([[3.0, -3.0], [0.5, 0.5]]), stamp=0.0, now=0.0)
    np.testing.assert_allclose(ex.step(0.0), [1.0, -1.0])


def test_nan_chunk_is_discarded_and_the_robot_holds():
    ex = executor()
    ex.merge(ramp(10), stamp=0.0, now=0.0)
    ex.step(0.0)
    bad = ramp(10)
    bad[4, 0] = np.nan
    result = ex.merge(bad, stamp=0.1, now=0.1)
    assert not result.accepted and "non-finite" in result.reason
    assert ex.step(0.1) is None and ex.plan is None and not ex.exhausted  # a hold, not an exhausted plan
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
    ex.step(0.2), ex.step(0.3)
    assert ex.chunk_offset == 2 and len(ex.executed) == 2
    np.testing.assert_allclose(ex.chunk, ramp(10))


def _speeds(commands: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """|delta target| / delta t [n - 1, A] of consecutive (time, command) pairs."""
    times = np.array([t for t, _ in commands])
    targets = np.array([c for _, c in commands])
    return np.abs(np.diff(targets, axis=0)) / np.diff(times)[:, None]


@pytest.mark.parametrize("blend_steps", [0, 4])
def test_commanded_speed_never_exceeds_max_velocity_when_chunks_land_between_ticks(blend_steps):
    """The black-box finding of issue 22: a chunk merged a few ms after a tick had its first step
    commanded at once, moving the target at up to 9x max_velocity. Chunks land here at random times
    between the ticks (and are commanded at once, as the node does), each a large jump from the
    plan; every pair of consecutive commands must move at most max_velocity * delta t."""
    rng = np.random.default_rng(22)
    max_step = 0.02
    max_velocity = max_step * RATE
    ex = executor(blend_steps=blend_steps, replan=3, max_step=max_step)
    ex.merge(rng.uniform(-1, 1, (12, 2)), stamp=0.0, now=0.0)
    commands = [(0.0, ex.step(0.0))]
    for tick in range(1, 301):
        next_tick = tick / RATE
        if rng.random() < 0.3:  # a chunk lands between two ticks, 0.1 to 99 ms after the last
            landed = next_tick - 1.0 / RATE + rng.uniform(1e-4, 1.0 / RATE - 1e-3)
            stamp = landed - rng.uniform(0.0, 0.4)
            if ex.merge(rng.uniform(-1, 1, (12, 2)), stamp=stamp, now=landed).accepted:
                commands.append((landed, ex.step(landed)))
        command = ex.step(next_tick)
        if command is not None:
            commands.append((next_tick, command))
    commands = [(t, c) for t, c in commands if c is not None]
    assert len(commands) > 250
    gaps = np.diff([t for t, _ in commands])
    assert (gaps < 0.5 / RATE).sum() > 30  # the case under test happened often
    assert _speeds(commands).max() <= max_velocity * (1 + 1e-9)


def test_step_soon_after_a_command_moves_by_the_elapsed_time_only():
    ex = executor(max_step=0.1)  # max_velocity 1.0 per second at 10 Hz
    ex.merge(np.full((6, 2), 1.0), stamp=0.0, now=0.0)
    np.testing.assert_allclose(ex.step(0.0), [0.1, 0.1])  # first after reset: one period's worth
    np.testing.assert_allclose(ex.step(0.01), [0.11, 0.11])  # 10 ms later: 10 ms's worth
    np.testing.assert_allclose(ex.step(0.11), [0.21, 0.21])
    np.testing.assert_allclose(ex.step(0.61), [0.31, 0.31])  # late: no catching up in one jump
    np.testing.assert_allclose(ex.step(0.5), [0.31, 0.31])  # a time before the last command: hold


def test_targets_at_samples_the_plan_at_given_times_and_ends_with_it():
    ex = executor(max_step=10.0)
    assert ex.targets_at(np.array([0.0])) is None  # no plan: nothing to continue
    ex.merge(ramp(10), stamp=1.0, now=1.3)  # plan step k (chunk step 3 + k) due at 1.3 + k / 10
    out = ex.targets_at(1.3 + np.array([-0.2, 0.0, 0.04, 0.06, 0.5, 0.6, 0.7]))
    np.testing.assert_allclose(out[:, 0], [0.03, 0.03, 0.03, 0.04, 0.08, 0.09])  # ends with the plan
    ex.step(1.3)
    np.testing.assert_allclose(ex.targets_at(np.array([1.4]))[:, 0], [0.04])  # times, not the cursor
