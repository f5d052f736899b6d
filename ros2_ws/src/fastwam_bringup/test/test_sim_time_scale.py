"""Scripted recording faster than real time: the same frames, stamps and actions as at 1x."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("fastwam_msgs.srv", reason="fastwam_msgs is not built (scripts/bootstrap.sh)")

import rclpy
from rclpy.parameter import Parameter

from fastwam.data.bag import align_episode, find_bags, read_episode_streams
from fastwam.robot_config import load_robot_config
from fastwam_bringup.run import parse_args
from fastwam_bringup.sim_episodes import record_scripted_episodes
from fastwam_sim import ScriptedFolder, TowelFoldEnv

pytestmark = pytest.mark.ros
CONFIG = Path(__file__).resolve().parents[2] / "fastwam_policy" / "config" / "r1_lite_sim.yaml"
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


@pytest.mark.slow
def test_time_scale_3_records_what_real_time_records(tmp_path):
    """At 3x: every camera frame on the 15 Hz grid of simulated time (none missing or late), the
    frames of a real-time recording (~163 for a ~10.9 s episode: 1x gives 162-163), and at each
    frame the scripted operator's action for that simulated time, within the frame alignment."""
    result, aligned, wall = _record(tmp_path, 3.0)
    assert result.success and result.recorded
    # The simulated clock never runs ahead of time_scale x the wall clock (it only waits: a busy
    # machine makes the episode take longer, never its data differ), so the recording cannot take
    # less than a third of the episode. How much longer it takes depends on the load: not asserted
    # (benchmarks/sim_time_scale.py measures it).
    assert wall >= result.duration_s / 3.0, (wall, result.duration_s)

    n = len(aligned.timestamps)
    assert aligned.info["subsample_step"] == 1
    np.testing.assert_allclose(np.diff(aligned.timestamps), 1 / FPS, atol=1e-6)  # none missing
    assert abs(n - result.duration_s * FPS) <= 3, (n, result.duration_s)

    # The commands were the scripted fold's at the simulated time: one offset (the operator's start
    # delay and the first frame's phase) maps frame times onto the fold within one frame's motion.
    config = load_robot_config(CONFIG)
    env = TowelFoldEnv(config.robot, config.cameras.keys)
    env.reset(SEED)
    folder = ScriptedFolder(env)
    step = np.abs(np.diff(aligned.action, axis=0)).max(axis=0)  # [D] largest change per frame

    def error(offset: float) -> np.ndarray:  # [D]
        fold = np.stack([folder.action(max(t - offset, 0.0)) for t in aligned.timestamps])
        return np.abs(fold - aligned.action).max(axis=0)

    offsets = np.arange(0.0, 2.0, 0.005)
    best = min(offsets, key=lambda o: float((error(o) / np.maximum(step, 1e-9)).max()))
    assert np.all(error(best) <= step + 1e-6), (best, error(best), step)
    assert 0.5 < best < 1.5, best  # the operator starts 1 s (teleop_start_delay_s) into the episode


def _sim_node(**params):
    from fastwam_sim.nodes.sim_robot import SimRobotNode

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
        _sim_node(time_scale=scale)
    with pytest.raises(ValueError, match="time_scale must be positive"):
        record_scripted_episodes(CONFIG, "/nonexistent", seed=0, episodes=1, time_scale=scale)
    with pytest.raises(SystemExit):
        parse_args(["--robot-config", str(CONFIG), "--scripted-teleop", "--time-scale", str(scale)])


def test_time_scale_without_scripted_teleop_is_refused(capsys):
    """The runner refuses a faster-than-real-time policy run (inference latency is wall-clock
    time). The simulated robot node itself runs at any positive scale: it does not know who
    operates it, and the scripted operator follows its /clock."""
    with pytest.raises(SystemExit):
        parse_args(["--robot-config", str(CONFIG), "--time-scale", "2"])
    assert "--time-scale needs --scripted-teleop" in capsys.readouterr().err
    _sim_node(time_scale=2.0)
    _sim_node(time_scale=1.0)
