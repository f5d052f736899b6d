"""Every dependency is declared: ROS packages build the standard way (rosdep + colcon) and the
pip-only environment installs everything the code imports.

Each third-party import in a package's Python files must appear in that package's package.xml
(by rosdep key) or, for libraries without a rosdep key, in requirements/python.txt (pinned).
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "ros2_ws" / "src"
FIRST_PARTY = {
    "fastwam", "fastwam_policy", "fastwam_sim", "fastwam_bringup", "fastwam_experiments", "fastwam_training",
    "fastwam_msgs",
}  # fmt: skip

# import name -> rosdep key, for modules that ROS / Debian provide.
ROSDEP = {
    "rclpy": "rclpy",
    "rcl_interfaces": "rcl_interfaces",
    "builtin_interfaces": "builtin_interfaces",
    "std_msgs": "std_msgs",
    "std_srvs": "std_srvs",
    "rosgraph_msgs": "rosgraph_msgs",
    "sensor_msgs": "sensor_msgs",
    "trajectory_msgs": "trajectory_msgs",
    "geometry_msgs": "geometry_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "cv_bridge": "cv_bridge",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "ament_index_python": "ament_index_python",
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "PIL": "python3-pil",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "pytest": "python3-pytest",
}
# import name -> pip distribution, for libraries installed from requirements/python.txt.
PIP = {
    "torch": "torch",  # installed by scripts/bootstrap.sh (CPU) or the Docker image (CUDA)
    "diffusers": "diffusers",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "sentencepiece": "sentencepiece",
    "accelerate": "accelerate",
    "safetensors": "safetensors",
    "av": "av",
    "pyarrow": "pyarrow",
    "rosbags": "rosbags",
    "mcap": "mcap",
    "mcap_ros2": "mcap-ros2-support",
    "tensorboard": "tensorboard",
    "huggingface_hub": "huggingface-hub",
    "cv2": "opencv-python-headless",
    "numpy": "numpy",
    "yaml": "PyYAML",
    "PIL": "pillow",
    "tqdm": "tqdm",
    "ftfy": "ftfy",  # Wan prompt cleaning (diffusers' prompt_clean uses it when installed)
}


def third_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    local = {sibling.stem for sibling in path.parent.glob("*.py")}  # test helpers beside the file
    ignored = FIRST_PARTY | local | {"__future__"}
    return {n for n in names if n not in sys.stdlib_module_names and n not in ignored}


def declared_rosdeps(package: Path) -> set[str]:
    root = ET.parse(package / "package.xml").getroot()
    tags = ("depend", "exec_depend", "build_depend", "test_depend", "buildtool_depend")
    return {element.text.strip() for tag in tags for element in root.iter(tag)}


def pip_requirements() -> set[str]:
    names = {"torch"}
    for line in (ROOT / "requirements" / "python.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[=<>!~;\[ ]", line)[0].lower())
    return names


@pytest.mark.parametrize(
    "package", ["fastwam_policy", "fastwam_sim", "fastwam_bringup", "fastwam_experiments"]
)
def test_python_imports_are_declared(package):
    rosdeps = declared_rosdeps(PACKAGES / package)
    requirements = pip_requirements()
    problems = []
    for path in sorted((PACKAGES / package).rglob("*.py")):
        if path.name == "setup.py":  # build-time only; setuptools comes with ament_python
            continue
        for name in sorted(third_party_imports(path)):
            rosdep_ok = name in ROSDEP and ROSDEP[name] in rosdeps
            pip_ok = name in PIP and PIP[name].lower() in requirements and name not in ROSDEP
            if not (rosdep_ok or pip_ok):
                where = path.relative_to(ROOT)
                hint = ROSDEP.get(name) or PIP.get(name) or "unknown: add it to this test's tables"
                problems.append(f"{where}: import {name} is not declared ({hint})")
    assert not problems, "\n".join(problems)


def test_training_imports_are_pip_requirements():
    requirements = pip_requirements()
    problems = []
    for path in sorted((ROOT / "training").rglob("*.py")):
        for name in sorted(third_party_imports(path) - {"pytest"}):
            if PIP.get(name, "?").lower() not in requirements:
                problems.append(f"{path.relative_to(ROOT)}: import {name} is not in requirements/python.txt")
    assert not problems, "\n".join(problems)


def test_requirements_are_pinned():
    for name in ("python.txt", "ros-jazzy.txt", "dev.txt"):
        for line in (ROOT / "requirements" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert "==" in line, f"requirements/{name}: {line!r} is not pinned"
    dev = (ROOT / "requirements" / "dev.txt").read_text()
    assert re.search(r"^pytest==8\.", dev, re.M), "pytest must stay below 9 (launch_testing breaks on 9)"
