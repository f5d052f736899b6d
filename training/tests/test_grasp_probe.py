"""The open-loop grasp probe: its statistics, and a run over a real (random) checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastwam_training.grasp_probe import main, probe_stats

SIM_CONFIG = Path(__file__).resolve().parents[2] / "ros2_ws/src/fastwam_policy/config/r1_lite_sim.yaml"


def _targets(n=12, seed=0):
    rng = np.random.default_rng(seed)
    base = np.array([[0.40, 0.18], [0.40, -0.18]])  # left, right
    return base + rng.normal(0, 0.03, (n, 2, 2))


def test_a_policy_that_tracks_the_towel_has_slope_one_and_no_error():
    t = _targets()
    s = probe_stats(t.copy(), t)
    assert s.tip_error_mean == pytest.approx(0.0, abs=1e-9)
    assert s.slope == pytest.approx((1.0, 1.0)) and s.correlation == pytest.approx((1.0, 1.0))
    assert s.within_3cm == 1.0


def test_an_average_pose_policy_has_slope_zero_and_the_average_pose_error():
    t = _targets()
    s = probe_stats(np.broadcast_to(t.mean(0), t.shape), t)
    assert s.slope == pytest.approx((0.0, 0.0), abs=1e-12)
    assert s.tip_error_mean == pytest.approx(s.average_pose_error)


def test_shrinkage_toward_the_average_shows_as_the_slope():
    t = _targets()
    shrunk = t.mean(0) + 0.25 * (t - t.mean(0)) + 0.01  # a quarter of the offset, 1 cm bias
    s = probe_stats(shrunk, t)
    assert s.slope == pytest.approx((0.25, 0.25)) and s.correlation == pytest.approx((1.0, 1.0))
    assert s.tip_error_mean > 1.0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="n, 2, 2"):
        probe_stats(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="two poses"):
        probe_stats(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))


def test_probe_runs_a_checkpoint_in_the_simulator(tmp_path, capsys):
    from fastwam.checkpoint import create_random_checkpoint
    from fastwam.robot_config import load_robot_config

    config = load_robot_config(SIM_CONFIG)
    path = tmp_path / "ckpt"
    create_random_checkpoint(path, "tiny", config.cameras, config.robot, seed=0, action_horizon=32)
    main([str(path), "--train-seeds", "0:2", "--held-seeds", "100000:100002", "--image-size", "96x128"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["training poses", "held-out poses"]
    assert all("slope x" in line and "nan" not in line for line in lines)
