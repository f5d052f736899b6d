"""ROS-free closed-loop rollouts: the scripted fold succeeds through the loop, a random model runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fastwam.robot_config import load_robot_config
from fastwam_sim.env import SimParams, TowelFoldEnv
from fastwam_sim.teleop import ScriptedFolder
from fastwam_training.sim_rollout import Rollout, main, rollout, summary

SIM_CONFIG = Path(__file__).resolve().parents[2] / "ros2_ws/src/fastwam_policy/config/r1_lite_sim.yaml"


class ScriptedPolicy:
    """The scripted teleoperator behind the policy interface: chunk step i is the script's target
    i / fps seconds after the observation (the recorded actions' timing)."""

    device = "cpu"
    action_horizon = 32

    def __init__(self, env: TowelFoldEnv, fps: float):
        self.env, self.fps = env, fps
        self.script = None

    def predict(self, images, state, instruction, generator=None):
        assert set(images) == {"head", "wrist_left", "wrist_right"} and state.shape == (14,)
        if self.env.time == 0.0:
            self.script = ScriptedFolder(self.env)  # a new episode: plan from the start pose
        times = self.env.time + np.arange(self.action_horizon) / self.fps
        return SimpleNamespace(actions=np.stack([self.script.action(t) for t in times]))


@pytest.fixture(scope="module")
def sim():
    config = load_robot_config(SIM_CONFIG)
    env = TowelFoldEnv(
        config.robot, ("head", "wrist_left", "wrist_right"), SimParams(image_height=48, image_width=64)
    )
    return config, env


@pytest.mark.parametrize("replan", [8, 32])
def test_the_scripted_fold_succeeds_through_the_rollout_loop(sim, replan):
    config, env = sim
    policy = ScriptedPolicy(env, config.control.rate_hz)
    results = [rollout(policy, env, seed, replan=replan) for seed in (100000, 100001)]
    for r in results:
        assert r.success and 5.5 < r.completion_s < 8.0 and r.progress > 0.85
        assert r.chunks == int(np.ceil(r.completion_s * config.control.rate_hz / replan - 1e-6))
    assert summary(results).startswith("success 2/2 (100 %)")


def test_an_idle_policy_never_succeeds_and_stops_at_the_timeout(sim):
    config, env = sim
    policy = ScriptedPolicy(env, config.control.rate_hz)
    home = env.spec.join({g: env.positions(g) for g in env.spec.action_groups}, env.spec.action_groups)
    policy.predict = lambda *a, **k: SimpleNamespace(actions=np.tile(home, (32, 1)))
    r = rollout(policy, env, 100002, replan=16, timeout_s=2.0)
    assert r == Rollout(100002, False, None, pytest.approx(0.0, abs=1e-9), 2)  # 30 steps, a chunk per 16
    assert env.time == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="replan"):
        rollout(policy, env, 0, replan=33)


@pytest.mark.slow
def test_a_checkpoint_rolls_out_in_worker_processes(tmp_path, capsys):
    from fastwam.checkpoint import create_random_checkpoint

    config = load_robot_config(SIM_CONFIG)
    path = tmp_path / "ckpt"
    create_random_checkpoint(path, "tiny", config.cameras, config.robot, seed=0, action_horizon=32)
    args = [str(path), "--episodes", "2", "--timeout", "0.5", "--image-size", "48x64", "--replan", "8"]
    serial = main(args)
    parallel = main([*args, "--workers", "2"])
    assert serial == parallel  # seeded noise: the same rollouts in any process
    assert [r.seed for r in serial] == [100000, 100001] and all(r.chunks == 1 for r in serial)
    out = capsys.readouterr().out
    assert "pose 100000:" in out and "success 0/2" in out
