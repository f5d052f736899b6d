"""The simulated R1 Lite (fastwam_sim): tracking, the scripted fold, success, rendering."""

from __future__ import annotations

import numpy as np
import pytest

from fastwam.robot_config import load_robot_config
from fastwam.shipped_configs import shipped_config
from fastwam_sim import ScriptedFolder, SimParams, TowelFoldEnv

CONFIG = shipped_config("r1_lite.yaml")
RATE_HZ = 15.0


@pytest.fixture(scope="module")
def config():
    return load_robot_config(CONFIG)


@pytest.fixture
def env(config):
    return TowelFoldEnv(config.robot, config.cameras.keys)


def run(env, act, duration: float) -> bool:
    """Command act(time) at 15 Hz for `duration` s; True if the task was ever in the success state."""
    succeeded = False
    for i in range(int(round(duration * RATE_HZ))):
        env.command_action(act(i / RATE_HZ))
        env.step(1.0 / RATE_HZ)
        succeeded = succeeded or env.success
    return succeeded


def test_inverse_kinematics_round_trips_and_respects_joint_limits(env, config):
    group = config.robot.group("arm_left")
    for arm in ("left", "right"):
        kin = env.kinematics[arm]
        for tip in ([0.25, 0.3, 0.02], [0.62, 0.05, 0.1], [0.3, -0.3, 0.2]):
            q = kin.inverse(np.array(tip))
            np.testing.assert_allclose(kin.tip(q), tip, atol=1e-9)
            assert np.all(q >= np.array(group.lower)) and np.all(q <= np.array(group.upper))
    with pytest.raises(ValueError, match="out of the arm's reach"):
        env.kinematics["left"].inverse(np.array([1.5, 0.0, 0.0]))


def test_commands_move_joints_toward_targets_within_limits_and_velocity_caps(env, config):
    group = config.robot.group("arm_left")
    lower, upper = np.array(group.lower), np.array(group.upper)
    caps = np.array([0.2, 0.5, 0.3, 0.4, 0.6, 0.7])  # below the config's maxima
    target = upper + 1.0  # every joint beyond its upper limit
    env.command("arm_left", target, caps)
    previous = env.positions("arm_left")
    dt = 1.0 / 60.0
    for _ in range(1200):  # 20 s: the slowest joint (0.2 rad/s) covers its 2.7 rad
        env.step(dt)
        now = env.positions("arm_left")
        assert np.all(now >= lower - 1e-12) and np.all(now <= upper + 1e-12)
        assert np.all(np.abs(now - previous) <= caps * dt + 1e-9)
        previous = now
    np.testing.assert_allclose(env.positions("arm_left"), upper, atol=1e-3)
    assert env.trackers["arm_left"].clipped_commands == 1

    env.command("gripper_left", [0.0])
    env.step(0.25)
    # The gripper closes at its configured cap, 0.1 m/s: 0.025 m in 0.25 s.
    assert env.positions("gripper_left")[0] == pytest.approx(0.025, abs=1e-6)


def test_malformed_commands_are_rejected_and_keep_the_old_targets(env):
    env.command("arm_right", env.home["right"] + 0.1)
    before = env.trackers["arm_right"].target.copy()
    for bad in ([np.nan] * 6, [0.0] * 5):
        with pytest.raises(ValueError, match="arm_right"):
            env.command("arm_right", bad)
    with pytest.raises(ValueError, match="velocity caps"):
        env.command("arm_right", before, [1.0, 1.0])
    with pytest.raises(ValueError, match="no commandable joint group 'torso'"):
        env.command("torso", [0.0])
    np.testing.assert_array_equal(env.trackers["arm_right"].target, before)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_scripted_fold_reaches_success(env, seed):
    env.reset(seed)
    folder = ScriptedFolder(env)
    assert 5.0 <= folder.duration <= 10.0
    reached = None
    for i in range(int(folder.duration * RATE_HZ) + 8):
        env.command_action(folder.action(i / RATE_HZ))
        env.step(1.0 / RATE_HZ)
        if env.success and reached is None:
            reached = env.time
    assert reached is not None and env.success, env.towel.fold_error()
    assert env.progress > 0.85
    # Commands stay within the configured velocity caps (what a teleoperator's rig enforces too).
    actions = np.array([folder.action(t) for t in np.arange(0, folder.duration, 1 / RATE_HZ)])
    speed = np.abs(np.diff(actions, axis=0)).max(axis=0) * RATE_HZ
    assert np.all(speed <= env.spec.action_max_velocity * 1.15)


def test_idle_robot_never_succeeds(env):
    for seed in range(5):
        env.reset(seed)
        hold = env.state()
        assert not run(env, lambda t, hold=hold: hold, 12.0)
        assert env.progress == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_random_joint_space_motion_never_succeeds(env, config):
    spec = config.robot
    lower, upper = spec.action_lower, spec.action_upper
    best = 0.0
    for seed in range(20):
        env.reset(seed)
        rng = np.random.default_rng(1000 + seed)
        # A new random target every 0.5 s, anywhere within the joint limits, grippers included.
        targets = rng.uniform(lower, upper, size=(40, spec.action_dim))
        assert not run(env, lambda t, targets=targets: targets[int(t / 0.5)], 15.0)
        best = max(best, env.progress)
    assert best < 0.5


def test_a_half_done_fold_is_not_success(env):
    """Carrying the corners over but never letting go is not a fold."""
    env.reset(0)
    folder = ScriptedFolder(env)
    lower_done = folder.timing.lower
    assert not run(env, lambda t: folder.action(min(t, lower_done)), lower_done + 2.0)
    assert env.progress > 0.85  # folded geometry, but the grippers still hold the corners


def test_rendering_is_deterministic_and_shows_start_pose_arms_and_grippers(env, config):
    env.reset(7)
    first = env.render()
    assert set(first) == set(config.cameras.keys)
    for image in first.values():
        assert image.shape == (480, 640, 3) and image.dtype == np.uint8
    env.reset(7)
    again = env.render()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])

    env.reset(8)
    other = env.render()
    changed = np.any(first["head"] != other["head"], axis=-1).mean()
    assert changed > 0.01  # the towel's start pose is visible in the head camera

    env.reset(7)
    env.command("arm_left", env.home["left"] + np.array([0.3, 0.2, 0.0, 0, 0, 0]))
    env.command("gripper_right", [0.0])
    env.step(1.0)
    moved = env.render()
    assert np.any(moved["head"] != first["head"], axis=-1).mean() > 0.005  # arm pose visible
    assert np.any(moved["wrist_right"] != first["wrist_right"], axis=-1).mean() > 0.005  # gripper


def test_start_poses_are_seeded_and_varied(env):
    poses = []
    for seed in range(30):
        env.reset(seed)
        poses.append((env.towel.pose.x, env.towel.pose.y, env.towel.pose.yaw))
    poses = np.array(poses)
    env.reset(3)
    assert (env.towel.pose.x, env.towel.pose.y, env.towel.pose.yaw) == tuple(poses[3])
    assert np.all(poses.std(axis=0) > [0.015, 0.02, 0.1])


@pytest.mark.slow
def test_scripted_demos_write_a_lerobot_dataset_the_reader_loads(tmp_path, config):
    from fastwam.data.lerobot import LeRobotDataset
    from fastwam_sim.demos import CAMERA_FEATURE, scripted_demo, write_dataset

    small = SimParams(image_height=96, image_width=128)  # same scene, cheap to encode
    env = TowelFoldEnv(config.robot, config.cameras.keys, small)
    demo = scripted_demo(env, seed=11)
    assert demo.success and 5.0 < demo.completion_s < 10.0
    steps = len(demo.timestamps)
    assert demo.state.shape == (steps, config.robot.state_dim)
    assert demo.action.shape == (steps, config.robot.action_dim)
    assert demo.frames["head"].shape == (steps, 96, 128, 3)
    # Frame 0 shows the robot at rest: the first command is where it stands.
    np.testing.assert_allclose(demo.action[0], demo.state[0], atol=1e-9)

    written = write_dataset(tmp_path / "ds", config, episodes=1, seed=3, params=small)
    assert [d.seed for d in written] == [3]
    dataset = LeRobotDataset(tmp_path / "ds")
    assert dataset.episode_indices == [0]
    assert dataset.total_frames == len(written[0].timestamps)
    assert set(dataset.video_keys) == {CAMERA_FEATURE.format(key=k) for k in config.cameras.keys}
