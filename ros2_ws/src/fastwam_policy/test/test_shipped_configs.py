"""The one robot-config lookup (fastwam.shipped_configs): where the shipped configs are found, what
a missing one says, and that nothing else in our Python looks them up on its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fastwam.robot_config import load_robot_config
from fastwam.shipped_configs import (
    ROBOT_CONFIG,
    SIM_CONFIG,
    default_robot_config,
    shipped_config,
    shipped_config_dirs,
)

SRC = Path(__file__).resolve().parents[2]  # ros2_ws/src
REPO = SRC.parents[1]


def test_the_shipped_configs_are_found_and_load():
    assert shipped_config_dirs(), "no config directory found"
    for name in (ROBOT_CONFIG, SIM_CONFIG):
        path = shipped_config(name)
        assert path.is_file() and path.parent.name == "config"
        assert load_robot_config(path).robot.name
    assert default_robot_config() == str(shipped_config(ROBOT_CONFIG))


def test_a_missing_config_names_itself_and_where_it_was_looked_for():
    with pytest.raises(FileNotFoundError, match=r"'no_such_robot\.yaml' not found \(searched: .*config"):
        shipped_config("no_such_robot.yaml")


def _our_python() -> list[Path]:
    files = []
    for root in (SRC, REPO / "training", REPO / "benchmarks"):
        # Not the tests: they name the source tree's files on purpose.
        files += [p for p in root.rglob("*.py") if not {"build", "install", "test", "tests"} & set(p.parts)]
    return files


def test_nothing_else_looks_up_a_package_share_config_directory():
    """Nodes, launch files and tools take their default robot config from the one lookup: no
    get_package_share_directory(...) joined with 'config' and a .yaml elsewhere (the DDS profile,
    an .xml in bringup's share, is not a robot config)."""
    offenders = []
    for path in _our_python():
        if path.name == "shipped_configs.py":
            continue
        text = path.read_text()
        if "get_package_share_directory" not in text:
            continue
        for node in ast.walk(ast.parse(text, str(path))):
            literals = [
                n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            ]
            if (
                isinstance(node, ast.Call)
                and any(s.endswith(".yaml") for s in literals)
                and "config" in literals
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_every_node_defaults_its_robot_config_through_the_lookup():
    nodes = [
        SRC / "fastwam_policy" / "fastwam_policy" / "policy_node.py",
        SRC / "fastwam_policy" / "fastwam_policy" / "recorder_node.py",
        SRC / "fastwam_sim" / "fastwam_sim" / "nodes" / "sim_robot.py",
        SRC / "fastwam_sim" / "fastwam_sim" / "nodes" / "scripted_teleop.py",
    ]
    for path in nodes:
        text = path.read_text()
        assert "from fastwam.shipped_configs import default_robot_config" in text, path.name
        assert "fastwam_bringup" not in text, f"{path.name} reaches up into fastwam_bringup"
