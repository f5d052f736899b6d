"""Policy node in its own process with real-time chunking (execution:=rtc) against the fake R1 Lite,
and the status of a plan that runs out before the next chunk lands.

Inference latency is added with the node's ``added_latency_s`` (the evaluation's knob): 0.4 s keeps
every chunk inside the plan it continues, 1.5 s outlasts the 16 steps (1.07 s at 15 Hz) left when a
chunk is requested, so the plan is exhausted before each new chunk.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
from fastwam_msgs.msg import PolicyStatus

import policy_node_harness as harness

pytestmark = [pytest.mark.ros, pytest.mark.slow]  # node processes driven for seconds

START_TIMEOUT = 120.0
LOOSE = {"max_camera_age_s": 2.0, "max_camera_skew_s": 2.0, "max_joint_age_s": 2.0}
HOLDING, EXECUTING = PolicyStatus.STATE_HOLDING, PolicyStatus.STATE_EXECUTING


def _t(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@pytest.fixture(scope="module")
def node_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policy_node_rtc")
    # Ten sampler steps as the shipped configs (the tiny preset's three are coarse for guidance).
    checkpoint, config_path, config = harness.write_test_setup(tmp, freshness=LOOSE, num_inference_steps=10)
    return tmp, checkpoint, config_path, config


def _run(node_files, offset: int, **params):
    tmp, checkpoint, config_path, config = node_files
    domain = harness.domain_id(offset)
    log = tmp / f"node_{offset}.log"
    proc = harness.start_node(checkpoint, config_path, domain, log, instruction="fold", **params)
    robot = harness.FakeRobot(config, domain)
    return proc, robot, log


def _stop(proc, robot, log) -> None:
    robot.close()
    code = harness.stop_node(proc)
    print(log.read_text()[-3000:])
    assert code == 0, f"policy node exited with {code}"


def test_rtc_chunks_continue_the_plan_within_the_limits(node_files):
    _, _, _, config = node_files
    proc, robot, log = _run(
        node_files, 4, execution="rtc", motion_enabled=True, added_latency_s=0.4, rtc_schedule="exp"
    )
    try:
        robot.wait_state(EXECUTING, timeout=START_TIMEOUT)
        start = robot.now()
        robot.wait_for(lambda: len(robot.messages("chunk", start)) >= 6, 60, "six RTC chunks")
        time.sleep(0.5)
        assert "execution rtc" in log.read_text()
        spec = config.robot
        # Limits hold as in blend mode: joint limits, and max_velocity per second by the stamps.
        for group in spec.action_groups:
            joints = spec.group(group)
            msgs = robot.messages(f"command/{group}", start)
            pos = np.array([m.position for _, m in msgs])
            stamps = np.array([_t(m.header.stamp) for _, m in msgs])
            assert (pos >= np.array(joints.lower) - 1e-9).all() and (
                pos <= np.array(joints.upper) + 1e-9
            ).all()
            # Stamps are float seconds since the epoch in the node: ~0.24 us resolution, hence 1 us.
            allowed = np.array(joints.max_velocity) * (np.diff(stamps)[:, None] + 1e-6)
            assert (np.abs(np.diff(pos, axis=0)) <= allowed).all()
        # Each chunk continues the plan it replaced: its first executed step (the chunk's step
        # `steps_skipped`, frozen by the guidance) is where that plan was at the landing time.
        plans = [m for _, m in robot.messages("trajectory", start)]
        chunks = [m for _, m in robot.messages("chunk", start)]
        gaps, spreads = [], []
        for chunk in chunks:
            landed = _t(chunk.trajectory.header.stamp)
            before = [p for p in plans if _t(p.header.stamp) < landed - 1e-6]
            if not before or chunk.steps_skipped >= len(chunk.trajectory.points):
                continue
            plan = before[-1]
            k = int(round((landed - _t(plan.header.stamp)) * config.control.rate_hz))
            if k >= len(plan.points):
                continue  # that plan had run out: nothing to continue
            first = np.array(chunk.trajectory.points[chunk.steps_skipped].positions)
            gaps.append(np.abs(first - np.array(plan.points[k].positions)).max())
            last = np.array(chunk.trajectory.points[-1].positions)  # free of the guidance
            spreads.append(np.abs(last - np.array(plan.points[-1].positions)).max())
        assert len(gaps) >= 3, (len(chunks), len(plans))
        # The random model's free steps land far from the plan; the guided one on it.
        assert np.median(gaps) < 0.15 * np.median(spreads), (gaps, spreads)
    finally:
        _stop(proc, robot, log)


def test_exhausted_plan_is_a_visible_hold(node_files):
    proc, robot, log = _run(node_files, 5, execution="rtc", motion_enabled=True, added_latency_s=1.5)
    try:
        robot.wait_state(EXECUTING, timeout=START_TIMEOUT)
        start = robot.now()
        t_hold, hold = robot.wait_state(HOLDING, timeout=30, reason="plan exhausted", since=start)
        assert hold.motion_enabled and "holding the last target" in hold.reason
        assert "being predicted" in hold.reason
        t_back, _ = robot.wait_state(EXECUTING, timeout=30, since=t_hold)
        # Nothing was commanded while the status said the plan was exhausted.
        held_from, held_to = _t(hold.header.stamp), t_back
        during = [m for _, m in robot.commands(start) if held_from < _t(m.header.stamp) < held_to - 0.1]
        assert during == []
        # It comes back with every chunk, on change only: a few messages per chunk, not per tick.
        time.sleep(4.0)
        statuses = robot.messages("status", start)
        chunks = robot.messages("chunk", start)
        assert len(statuses) <= 3 * len(chunks) + (robot.now() - start) + 3, (len(statuses), len(chunks))
        assert sum("plan exhausted" in m.reason for _, m in statuses) >= 2
    finally:
        _stop(proc, robot, log)
