from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fastwam.robot_config import RobotConfig, load_robot_config

R1_LITE = Path(__file__).resolve().parents[1] / "config" / "r1_lite.yaml"


def test_r1_lite_config_matches_the_reference_facts():
    config = load_robot_config(R1_LITE)
    robot = config.robot
    assert robot.action_dim == 14 and robot.state_dim == 14
    assert (config.cameras.height, config.cameras.width) == (384, 320)
    arm = robot.group("arm_left")
    assert arm.lower == (-2.8798, 0.0, -3.3161, -1.5708, -1.5708, -2.8798)
    assert arm.upper == (2.8798, 3.1416, 0.0, 1.5708, 1.5708, 2.8798)
    assert robot.group("gripper_right").upper == (0.05,)
    assert config.topics.cameras["head"].topic == "/hdas/camera_head/left_raw/image_raw_color/compressed"
    assert config.topics.command["arm_right"] == "/motion_target/target_joint_state_arm_right"
    assert config.control.rate_hz == 15.0 and config.freshness.max_camera_age_s == 0.25


def test_strict_parsing_names_the_problem(tmp_path):
    data = yaml.safe_load(R1_LITE.read_text())
    data["control"]["rate"] = 30
    with pytest.raises(ValueError, match=r"control: missing keys \[\], unknown keys \['rate'\]"):
        RobotConfig.from_dict(data)
    data = yaml.safe_load(R1_LITE.read_text())
    del data["topics"]["cameras"]["wrist_left"]
    with pytest.raises(ValueError, match="camera topics"):
        RobotConfig.from_dict(data)
    data = yaml.safe_load(R1_LITE.read_text())
    del data["topics"]["command"]["gripper_left"]
    with pytest.raises(ValueError, match="no command topic for groups \\['gripper_left'\\]"):
        RobotConfig.from_dict(data)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_robot_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("robot: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_robot_config(bad)


def test_extends_merges_mappings_and_replaces_the_rest(tmp_path):
    sim = load_robot_config(R1_LITE.parent / "r1_lite_sim.yaml")
    base = load_robot_config(R1_LITE)
    assert (sim.cameras.height, sim.cameras.width) == (192, 160)
    assert sim.cameras.keys == base.cameras.keys
    assert sim.robot == base.robot and sim.topics == base.topics and sim.control == base.control

    (tmp_path / "base.yaml").write_text(R1_LITE.read_text())
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ncontrol: {rate_hz: 30.0}\n")
    child = load_robot_config(tmp_path / "child.yaml")
    assert child.control.rate_hz == 30.0  # merged key by key: the other control keys stay
    assert child.control.replan_steps_left == base.control.replan_steps_left

    (tmp_path / "orphan.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"missing.yaml \(extended by .*orphan.yaml\)"):
        load_robot_config(tmp_path / "orphan.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_robot_config(tmp_path / "a.yaml")
    (tmp_path / "typo.yaml").write_text("extends: base.yaml\ncontrol: {rate: 30.0}\n")
    with pytest.raises(ValueError, match=r"unknown keys \['rate'\]"):
        load_robot_config(tmp_path / "typo.yaml")
