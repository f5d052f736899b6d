"""Scripted recording faster than real time: the same frames, stamps and actions as at 1x."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("fastwam_msgs.srv", reason="fastwam_msgs is not built (scripts/bootstrap.sh)")
pytest.importorskip("fastwam_policy.recorder_node", reason="the recorder node has not landed")

import rclpy
from rclpy.parameter import Parameter

from fastwam.data.bag import align_episode, find_bags, read_episode_streams
from fastwam.robot_config import load_robot_config
from fastwam_bringup.run import parse_args, record_scripted_episodes

pytestmark = pytest.mark.ros
CONFIG = Path(__file__).resolve().parents[1] / "config" / "r1_lite_sim.yaml"
SEED = 7
FPS = 15.0


def _record(out: Path, time_scale: float):
    started = time.monotonic()
    results = record_scripted_episodes(CONFIG, out, seed=SEED, episodes=1, time_scale=time_scale)
    wall = time.monotonic() - started
    (bag,) = find_bags([out])
    config = load_robot_config(CONFIG)
    aligned = align_episode(read_episode_streams(bag, config, "header"), config, FPS)
    return results[0], aligned, wall


def test_time_scale_3_records_what_real_time_records(tmp_path):
    real, real_aligned, _ = _record(tmp_path / "x1", 1.0)
    fast, fast_aligned, wall = _record(tmp_path / "x3", 3.0)
    assert real.success and fast.success and real.recorded and fast.recorded
    # Simulated episode time is the same; the wall time is about a third of it (timers fire 3x as
    # often; the recorder's stop/start round trips add a little).
    assert fast.duration_s == pytest.approx(real.duration_s, abs=0.3)
    assert fast.duration_s / 6 < wall < fast.duration_s / 2, (wall, fast.duration_s)

    # Frames per episode and stamps as at 1x: 15 Hz in simulated time (the timers' phase may move
    # the span's ends by a frame).
    n_real, n_fast = len(real_aligned.timestamps), len(fast_aligned.timestamps)
    assert abs(n_fast - n_real) <= 1, (n_fast, n_real)
    assert n_fast == pytest.approx(fast.duration_s * FPS, abs=FPS * 1.5)
    spacing = np.diff(fast_aligned.timestamps)
    assert np.median(spacing) == pytest.approx(1 / FPS, abs=1e-3)
    assert fast_aligned.timestamps[-1] == pytest.approx((n_fast - 1) / FPS, abs=2 / FPS)
    assert fast_aligned.info["subsample_step"] == 1
    assert fast_aligned.info["reference_rate_hz"] == pytest.approx(FPS, rel=0.05)

    # The scripted actions at each frame match the real-time recording's up to the frame alignment:
    # at the best shift of a frame or two, within one frame's worth of motion.
    a, b = real_aligned.action, fast_aligned.action
    step = np.abs(np.diff(a, axis=0)).max(axis=0)  # [D] largest per-frame change per joint
    errors = []
    for k in range(-2, 3):  # b[i + k] against a[i]
        n = min(len(a), len(b)) - abs(k)
        errors.append(np.abs(a[max(0, -k) :][:n] - b[max(0, k) :][:n]).max(axis=0))  # [D]
    best = min(errors, key=lambda e: float((e / np.maximum(step, 1e-9)).max()))
    assert np.all(best <= step + 1e-6), (best, step)


def _sim_node(**params):
    from fastwam_policy.sim_robot_node import SimRobotNode

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        overrides = [Parameter("robot_config", value=str(CONFIG))]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        SimRobotNode(context=context, parameter_overrides=overrides).destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_non_positive_time_scale_is_refused(scale):
    with pytest.raises(ValueError, match="time_scale must be positive"):
        _sim_node(scripted_teleop=True, time_scale=scale)
    with pytest.raises(ValueError, match="time_scale must be positive"):
        record_scripted_episodes(CONFIG, "/nonexistent", seed=0, episodes=1, time_scale=scale)
    with pytest.raises(SystemExit):
        parse_args(["--robot-config", str(CONFIG), "--scripted-teleop", "--time-scale", str(scale)])


def test_time_scale_without_scripted_teleop_is_refused(capsys):
    with pytest.raises(ValueError, match="time_scale=2 needs scripted_teleop"):
        _sim_node(scripted_teleop=False, time_scale=2.0)
    with pytest.raises(SystemExit):
        parse_args(["--robot-config", str(CONFIG), "--time-scale", "2"])
    assert "--time-scale needs --scripted-teleop" in capsys.readouterr().err
    _sim_node(scripted_teleop=False, time_scale=1.0)  # real time stays allowed


def test_experiment_record_time_scale_and_eval_timeout(tmp_path):
    from fastwam_bringup import sim_experiment

    base = ["--out", str(tmp_path / "x"), "--robot-config", str(CONFIG)]
    settings = sim_experiment.parse_args(base)
    assert settings.eval_timeout_s == 12.0
    assert settings.record_time_scale == sim_experiment.RECORD_TIME_SCALE
    settings.check()  # the defaults are valid (the training config is found in the repository)
    settings = sim_experiment.parse_args([*base, "--record-time-scale", "0"])
    with pytest.raises(ValueError, match="--record-time-scale must be positive, got 0"):
        settings.check()
    assert not (tmp_path / "x").exists()
