"""Launch files: what they name exists where colcon installed it, and their descriptions build.

launch/launch_ros are not installable from PyPI, so the launch files are parsed statically (AST)
everywhere, and the checks they make before starting anything (fastwam_bringup.launch_requirements)
are tested as plain Python; where launch and launch_ros import (a full ROS install, the Docker
image) each launch description is also built for every combination of its on/off arguments.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import os
import re
from pathlib import Path

import pytest
import yaml

PACKAGE = Path(__file__).resolve().parents[1]
SRC = PACKAGE.parent
INSTALL = SRC.parent / "install"
DOCKERFILE = SRC.parents[1] / "docker" / "Dockerfile"
LAUNCH_FILES = sorted((PACKAGE / "launch").glob("*.launch.py"))
NODE_SOURCES = {
    **{
        ("fastwam_policy", exe): SRC / "fastwam_policy" / "fastwam_policy" / f"{exe}.py"
        for exe in ("policy_node", "recorder_node", "teleop_keys")
    },
    ("fastwam_sim", "sim_robot_node"): SRC / "fastwam_sim" / "fastwam_sim" / "nodes" / "sim_robot.py",
    ("fastwam_sim", "scripted_teleop_node"): SRC
    / "fastwam_sim"
    / "fastwam_sim"
    / "nodes"
    / "scripted_teleop.py",
}


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def parse(path: Path) -> dict:
    """Nodes (package, executable, parameter keys) and package share paths a launch file names."""
    tree = ast.parse(path.read_text(), str(path))
    share_vars = {}  # variable -> package, from `x = get_package_share_directory("pkg")`
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", "") == "get_package_share_directory"
        ):
            for target in node.targets:
                share_vars[target.id] = _literal(node.value.args[0])
    nodes, shares, arguments = [], [], {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        kwargs = {k.arg: k.value for k in node.keywords}
        if name == "Node":
            params = set()
            for item in getattr(kwargs.get("parameters"), "elts", []):
                if isinstance(item, ast.Dict):
                    params |= {_literal(k) for k in item.keys}
            nodes.append((_literal(kwargs["package"]), _literal(kwargs["executable"]), params))
        elif name == "join" and node.args and getattr(node.args[0], "id", None) in share_vars:
            package = share_vars[node.args[0].id]
            shares.append((package, *[_literal(a) for a in node.args[1:]]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS":
            arguments = _literal(node.value)
    return {"nodes": nodes, "shares": shares, "arguments": arguments}


def test_there_are_the_two_launch_files():
    assert [p.name for p in LAUNCH_FILES] == ["record_demos.launch.py", "towel_fold.launch.py"]


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_named_executables_parameters_and_files_exist_in_the_install(path):
    if not INSTALL.is_dir():
        pytest.skip("ros2_ws/install is missing: run scripts/bootstrap.sh")
    parsed = parse(path)
    assert parsed["nodes"] and parsed["shares"]
    for package, executable, params in parsed["nodes"]:
        if package.startswith("fastwam"):
            installed = INSTALL / package / "lib" / package / executable
            assert installed.is_file() and os.access(installed, os.X_OK), f"{path.name}: {installed} missing"
            # Every parameter the launch file sets is one the node declares.
            source = NODE_SOURCES[(package, executable)]
            if source.is_file():
                text = source.read_text()
                for key in params:
                    assert re.search(rf'(declare_parameter|declare|p)\(\s*"{key}"', text), (
                        f"{path.name}: {executable} does not declare parameter {key!r}"
                    )
        else:  # from apt on a full ROS install: the Docker image must bring it
            apt = "ros-humble-" + package.replace("_", "-")
            assert apt in DOCKERFILE.read_text(), (
                f"{path.name} runs {package}; {apt} is not in the Dockerfile"
            )
    for package, *parts in parsed["shares"]:
        installed = INSTALL / package / "share" / package / Path(*parts)
        assert installed.is_file(), f"{path.name} names {installed}, which is not installed"


def test_towel_fold_arguments_and_safe_default():
    arguments = parse(PACKAGE / "launch" / "towel_fold.launch.py")["arguments"]
    assert {"checkpoint", "instruction", "robot_config", "use_sim", "dry_run", "record", "rviz"} <= set(
        arguments
    )
    assert arguments["dry_run"][0] == "true"  # the robot never moves unless asked
    assert arguments["use_sim"][0] == "false"
    text = (PACKAGE / "launch" / "towel_fold.launch.py").read_text()
    assert '"-s", "mcap"' in text and "FASTRTPS_DEFAULT_PROFILES_FILE" in text


def test_rviz_config_shows_policy_outputs_and_the_configured_cameras():
    from fastwam.robot_config import load_robot_config

    rviz = yaml.safe_load((PACKAGE / "rviz" / "fastwam.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}
    config = load_robot_config(PACKAGE.parent / "fastwam_policy" / "config" / "r1_lite.yaml")
    assert {c.topic for c in config.topics.cameras.values()} <= topics
    assert {"/fastwam_policy/composite_image", "/fastwam_policy/chunk_plot"} <= topics


def _launch_missing() -> str:
    """Why launch files cannot be built here ("" when they can). Importing is the test: a partial
    install (a `launch` namespace directory on the path, launch_ros without its dependencies) has
    the package names but not working modules."""
    try:
        import launch.actions
        import launch.event_handlers  # noqa: F401
        import launch_ros.actions  # noqa: F401
    except Exception as error:  # ImportError, or a dependency of theirs failing to load
        return f"launch/launch_ros do not import ({type(error).__name__}: {error}); full ROS only"
    return ""


LAUNCH_MISSING = _launch_missing()


def test_launch_detection_needs_working_modules():
    """Here a `launch` directory (ros2_ws/build/fastwam_bringup/launch) may shadow the package: a
    spec is found, yet nothing imports; the detection must say so rather than fail later."""
    has_spec = (
        importlib.util.find_spec("launch") is not None and importlib.util.find_spec("launch_ros") is not None
    )
    if not LAUNCH_MISSING:
        assert has_spec
    else:
        assert "do not import" in LAUNCH_MISSING


def test_optional_parts_are_checked_before_anything_starts(monkeypatch):
    from fastwam_bringup.launch_requirements import (
        LaunchRequirementError,
        check_launch_requirements,
        keyboard_mode,
        package_installed,
    )

    assert package_installed("fastwam_bringup") and not package_installed("no_such_package_fastwam")
    check_launch_requirements()  # nothing optional: nothing needed
    for arguments, packages in (
        ({"rviz": True}, ["rviz2", "rviz_2d_overlay_plugins"]),
        ({"record": True}, ["ros2bag", "rosbag2_storage_mcap"]),
    ):
        absent = [p for p in packages if not package_installed(p)]
        argument = f"{next(iter(arguments))}:=true"
        if not absent:
            check_launch_requirements(**arguments)
            continue
        with pytest.raises(LaunchRequirementError) as error:
            check_launch_requirements(**arguments)
        message = str(error.value)
        assert message.startswith("nothing was started")
        for package in absent:  # each missing package, with the argument that needs it
            assert f"{argument} needs the ROS package {package!r}" in message, message
    # Over SSH (no display): auto chooses the second terminal, xterm is refused naming DISPLAY.
    monkeypatch.delenv("DISPLAY", raising=False)
    assert keyboard_mode("auto") == "none" and keyboard_mode("true") == "none"
    with pytest.raises(LaunchRequirementError, match="keyboard:=xterm needs the variable 'DISPLAY'"):
        check_launch_requirements(keyboard="xterm")
    with pytest.raises(LaunchRequirementError, match="keyboard must be one of"):
        keyboard_mode("maybe")


def test_required_processes_shut_the_launch_down():
    """Statically: every node but RViz's is wrapped in required() (an OnProcessExit -> Shutdown)."""
    for path in LAUNCH_FILES:
        tree = ast.parse(path.read_text(), str(path))
        wrapped, bare = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "required":
                inner = node.args[0]
                kwargs = {k.arg: _literal(k.value) for k in getattr(inner, "keywords", [])}
                wrapped.add(kwargs.get("executable") or "ros2 bag")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Node":
                executable = _literal({k.arg: k.value for k in node.keywords}["executable"])
                if executable not in wrapped:
                    bare.add(executable)
        assert bare <= {"rviz2", "string_to_overlay_text"}, (path.name, bare)
        text = path.read_text()
        assert "from fastwam_bringup.launch_actions import flag, required" in text
        assert "check_launch_requirements(" in text.split("def launch_setup", 1)[1].split("share =", 1)[0]
    actions = (LAUNCH_FILES[0].parents[1] / "fastwam_bringup" / "launch_actions.py").read_text()
    assert "OnProcessExit(" in actions and "Shutdown(" in actions


@pytest.mark.skipif(bool(LAUNCH_MISSING), reason=LAUNCH_MISSING or "launch imports")
@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_descriptions_build_for_every_argument_combination(path):
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
    from launch_ros.actions import Node

    from fastwam_bringup.launch_requirements import LaunchRequirementError, missing, requirements

    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = {e.name: e for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert set(declared) == set(module.ARGUMENTS)
    [setup] = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    flags = [k for k, (v, _) in module.ARGUMENTS.items() if v in ("true", "false")]
    for values in itertools.product(("true", "false"), repeat=len(flags)):
        context = LaunchContext()
        context.launch_configurations.update({k: v for k, (v, _) in module.ARGUMENTS.items()})
        context.launch_configurations.update(dict(zip(flags, values)))
        chosen = dict(zip(flags, values))
        needed = requirements(rviz=chosen.get("rviz") == "true", record=chosen.get("record") == "true")
        if missing(needed):  # refused before any action exists
            with pytest.raises(LaunchRequirementError, match="nothing was started"):
                module.launch_setup(context)
            continue
        actions = module.launch_setup(context)
        executables = [a.node_executable for a in actions if isinstance(a, Node)]
        handlers = [a for a in actions if isinstance(a, RegisterEventHandler)]
        assert len(handlers) == len([e for e in executables if e not in ("rviz2", "string_to_overlay_text")])
        assert ("sim_robot_node" in executables) == (chosen.get("use_sim") == "true")
        if "rviz" in chosen:
            assert ("rviz2" in executables) == (chosen["rviz"] == "true")
        if "record" in chosen:
            assert ("recorder_node" in executables) == (chosen["record"] == "true")
    assert setup is not None
