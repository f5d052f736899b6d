"""InputTracker: observation assembly and every freshness reason, with explicit times."""

from __future__ import annotations

import numpy as np
import pytest

from fastwam.observation import InputTracker, Observation, order_joint_positions
from fastwam.robot_config import FreshnessConfig

CAMERAS = ("head", "wrist_left", "wrist_right")
FRESH = FreshnessConfig(max_camera_age_s=0.25, max_camera_skew_s=0.1, max_joint_age_s=0.2)


def tracker_with(now: float = 10.0) -> InputTracker:
    tracker = InputTracker(CAMERAS, {"arm": 2, "gripper": 1}, FRESH)
    for key in CAMERAS:
        tracker.add_frame(key, now - 0.02, now, payload=f"{key}-frame")
    for t in np.arange(now - 0.5, now + 0.001, 0.02):
        tracker.add_joints("arm", float(t), np.array([t, -t]))
        tracker.add_joints("gripper", float(t), np.array([0.01]))
    return tracker


def test_fresh_inputs_give_an_observation_with_joints_nearest_the_head_frame():
    tracker = tracker_with()
    tracker.add_frame("head", 9.9, 10.0, payload="head-old-ish")  # head stamp 9.9
    obs = tracker.observation(10.0)
    assert isinstance(obs, Observation), obs
    assert obs.stamp == 9.9 and obs.frames["head"].payload == "head-old-ish"
    assert abs(obs.joint_stamps["arm"] - 9.9) < 0.011
    np.testing.assert_allclose(obs.joints["arm"], [obs.joint_stamps["arm"], -obs.joint_stamps["arm"]])


def test_missing_streams_are_named():
    tracker = InputTracker(CAMERAS, {"arm": 2}, FRESH)
    tracker.add_frame("head", 1.0, 1.0, payload=None)
    problems = tracker.observation(1.0)
    assert problems == [
        "camera 'wrist_left': no frame received",
        "camera 'wrist_right': no frame received",
        "joint state 'arm': none received",
    ]


def test_stale_camera():
    tracker = tracker_with()
    tracker.add_frame("wrist_left", 9.6, 10.0, payload=None)
    problems = tracker.problems(10.0)
    assert any(
        "camera 'wrist_left': newest frame is 0.400 s old (max_camera_age_s 0.25)" in p for p in problems
    )


def test_skewed_cameras():
    tracker = tracker_with()
    tracker.add_frame("wrist_right", 9.85, 10.0, payload=None)  # 0.15 s old: fresh, but 0.13 s apart
    problems = tracker.problems(10.0)
    assert problems == ["cameras 'wrist_right' and 'head' are 0.130 s apart (max_camera_skew_s 0.1)"]


def test_joint_state_far_from_head_frame():
    tracker = InputTracker(CAMERAS, {"arm": 2}, FRESH)
    for key in CAMERAS:
        tracker.add_frame(key, 10.0, 10.0, payload=None)
    tracker.add_joints("arm", 9.5, np.zeros(2))
    assert tracker.problems(10.0) == [
        "joint state 'arm': nearest is 0.500 s from the 'head' frame (max_joint_age_s 0.2)"
    ]


def test_bad_messages_hold_until_a_good_one_arrives():
    tracker = tracker_with()
    tracker.reject_frame("head", 10.0, "/cam: unsupported image encoding 'x'")
    tracker.reject_joints("gripper", "/grip: non-finite positions [nan]")
    problems = tracker.problems(10.0)
    assert "camera 'head': /cam: unsupported image encoding 'x'" in problems
    assert "joint state 'gripper': /grip: non-finite positions [nan]" in problems
    assert tracker.has_invalid_input()
    tracker.add_frame("head", 10.0, 10.0, payload=None)
    tracker.add_joints("gripper", 10.0, np.array([0.02]))
    assert tracker.problems(10.0) == [] and not tracker.has_invalid_input()


def test_frame_that_fails_to_decode_is_bad_only_while_newest():
    tracker = tracker_with()
    seq = tracker.observation(10.0).frames["head"].seq
    tracker.frame_failed("head", seq, "JPEG does not decode")
    assert tracker.problems(10.0) == ["camera 'head': JPEG does not decode"]
    tracker.add_frame("head", 10.01, 10.01, payload=None)
    assert tracker.problems(10.01) == []


def test_rates_ages_and_latest_joints():
    tracker = InputTracker(CAMERAS, {"arm": 2}, FRESH)
    assert tracker.latest_joints() is None
    for i in range(30):
        tracker.add_frame("head", i / 15, i / 15, payload=None)
    assert tracker.camera_rates(29 / 15)[0] == pytest.approx(15.0, abs=0.6)
    ages = tracker.camera_ages(2.0)
    assert ages[0] == pytest.approx(2.0 - 29 / 15) and np.isnan(ages[1])
    tracker.add_joints("arm", 1.0, np.array([1.0, 2.0]))
    np.testing.assert_allclose(tracker.latest_joints()["arm"], [1.0, 2.0])


def test_order_joint_positions():
    joints = ("j1", "j2", "j3")
    np.testing.assert_allclose(order_joint_positions([], [1, 2, 3], joints, "/t"), [1, 2, 3])
    np.testing.assert_allclose(order_joint_positions(["j3", "j1", "j2"], [3, 1, 2], joints, "/t"), [1, 2, 3])
    # A driver's own names: positional.
    np.testing.assert_allclose(order_joint_positions(["a", "b", "c"], [1, 2, 3], joints, "/t"), [1, 2, 3])
    with pytest.raises(ValueError, match="/t: 2 positions, expected 3"):
        order_joint_positions([], [1, 2], joints, "/t")
    with pytest.raises(ValueError, match="non-finite"):
        order_joint_positions([], [1, float("inf"), 3], joints, "/t")
    with pytest.raises(ValueError, match="2 names for 3 positions"):
        order_joint_positions(["j1", "j2"], [1, 2, 3], joints, "/t")
