"""The single-process runner: simulated robot (+ policy node, + recorder) composed in one executor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("fastwam_msgs.srv", reason="fastwam_msgs is not built (scripts/bootstrap.sh)")

from fastwam_bringup.run import parse_args, run

pytestmark = pytest.mark.ros
CONFIG = Path(__file__).resolve().parents[2] / "fastwam_policy" / "config" / "r1_lite.yaml"


def _received(out: str) -> dict[str, int]:
    line = next(x for x in out.splitlines() if "commands received by the robot:" in x)
    pairs = line.split(":", 1)[1].split(",")
    return {p.split()[0]: int(p.split()[1]) for p in pairs}


@pytest.mark.slow
def test_scripted_teleop_commands_flow_through_the_composed_nodes(capsys):
    code = run(
        parse_args(["--robot-config", str(CONFIG), "--scripted-teleop", "--duration", "4", "--seed", "1"])
    )
    out = capsys.readouterr().out
    assert code == 0
    received = _received(out)
    assert set(received) == {"arm_left", "gripper_left", "arm_right", "gripper_right"}
    assert all(n >= 15 for n in received.values()), out  # ~15 Hz for the seconds after the delay
    assert "episode 0 seed 1: no success" in out  # stopped at 4 s, before the fold is done


@pytest.mark.slow
def test_policy_node_predicts_from_the_simulated_robot(capsys):
    """Sim cameras/joints reach the policy node and it predicts. Whether its chunks become commands
    depends on inference outrunning a chunk (2.1 s at 15 Hz): not asserted, machines differ."""
    argv = ["--robot-config", str(CONFIG), "--checkpoint", "random", "--duration", "20", "--seed", "2"]
    code = run(parse_args(argv))
    out = capsys.readouterr().out
    assert code == 0, out
    line = next(x for x in out.splitlines() if "[run]   policy:" in x)
    assert int(line.split()[2]) >= 1, out
    assert "commands received by the robot:" in out


@pytest.mark.slow
def test_scripted_episode_is_recorded_and_labelled(tmp_path, capsys):
    code = run(
        parse_args(
            [
                "--robot-config", str(CONFIG), "--scripted-teleop", "--episodes", "1", "--seed", "4",
                "--duration", "30", "--record", str(tmp_path), "--require-success",
            ]
        )
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "SUCCESS" in out and ", recorded " in out, out
    bags = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(bags) == 1 and list(bags[0].glob("*.mcap")), list(tmp_path.rglob("*"))


def test_a_run_takes_its_own_ros_domain_unless_the_caller_set_one(monkeypatch, capsys):
    from fastwam_bringup.composition import private_ros_domain

    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    assert private_ros_domain() == 42 and os.environ["ROS_DOMAIN_ID"] == "42"
    monkeypatch.delenv("ROS_DOMAIN_ID")
    domain = private_ros_domain()
    assert 1 <= domain <= 101 and os.environ["ROS_DOMAIN_ID"] == str(domain)
    assert f"ROS_DOMAIN_ID={domain}" in capsys.readouterr().out


@pytest.mark.slow
def test_a_policy_episode_is_recorded_and_labelled(tmp_path, capsys):
    """--record in a policy run: the runner records the episode through the recorder client and
    labels it with the simulated robot's score (a random model: not folded, saved as a failure)."""
    from fastwam.data.episode_bag import read_episode_json

    argv = ["--robot-config", str(CONFIG), "--checkpoint", "random", "--episodes", "1",
            "--episode-timeout", "3", "--record", str(tmp_path), "--seed", "2"]  # fmt: skip
    code = run(parse_args(argv))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "episode 0 seed 2: no success" in out and ", recorded " in out, out
    [bag] = [p for p in tmp_path.iterdir() if p.is_dir()]
    info = read_episode_json(bag)
    assert info["status"] == "saved" and info["task_success"] is False, info


def test_without_a_checkpoint_the_runner_takes_its_callers_default(tmp_path):
    """Bringup knows no experiment: with no --checkpoint it runs what the caller's hook gives, and
    without a hook refuses, naming the entry point that has one."""
    from fastwam.robot_config import load_robot_config
    from fastwam_bringup.run import resolve_checkpoint

    args = parse_args(["--robot-config", str(CONFIG)])
    config = load_robot_config(CONFIG)
    with pytest.raises(SystemExit, match=r"no --checkpoint given.*python -m fastwam_experiments\.run"):
        resolve_checkpoint(args, config, str(tmp_path))
    seen = []
    assert resolve_checkpoint(args, config, str(tmp_path), lambda a: seen.append(a) or "ckpt") == "ckpt"
    assert seen == [args]


def test_policy_runs_try_three_held_out_poses_unless_told_otherwise():
    args = parse_args(["--robot-config", str(CONFIG), "--checkpoint", "random"])
    assert args.episodes is None and args.episode_timeout == 12.0 and args.duration == 0.0
    for bad in (["--episodes", "0"], ["--episode-timeout", "0"]):
        with pytest.raises(SystemExit):
            parse_args(["--robot-config", str(CONFIG), *bad])


@pytest.mark.slow
def test_each_policy_episode_is_a_fresh_composition_on_the_next_pose(capsys):
    """Two episodes of a random policy: each on its own pose (seed, seed + 1), each ended by the
    episode timeout in simulated time (a random policy does not fold), both in the summary."""
    argv = [
        "--robot-config",
        str(CONFIG),
        "--checkpoint",
        "random",
        "--episodes",
        "2",
        "--episode-timeout",
        "2",
    ]
    code = run(parse_args([*argv, "--seed", "7"]))
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("[run] loading ") == 2, out  # a policy node per episode
    assert (
        "episode 1/2 (up to 2 s simulated), seed 7" in out
        and "episode 2/2 (up to 2 s simulated), seed 8" in out
    )
    assert "episode 0 seed 7: no success" in out and "episode 1 seed 8: no success" in out
    assert "success 0/2" in out
