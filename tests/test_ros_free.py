"""The ROS-free part (model, data, training) installs with pip alone and runs with no ROS present.

Training clusters have no ROS. This test builds and installs `fastwam_policy` (which carries the
`fastwam` core), `fastwam_sim` (the simulator; its `nodes` are ROS) and `training/` with plain pip into a scratch directory, then runs them in a fresh
interpreter whose import system refuses every ROS module, with the colcon overlay and the ROS
prefix removed from the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Top-level modules that only exist where ROS does (the PyPI ROS wheels or a system install).
ROS_MODULES = [
    "rclpy", "rcl_interfaces", "rosidl_runtime_py", "rosidl_parser", "rosidl_generator_py", "rpyutils",
    "builtin_interfaces", "std_msgs", "sensor_msgs", "trajectory_msgs", "geometry_msgs", "fastwam_msgs",
    "ament_index_python", "launch", "launch_ros", "rosbag2_py", "cv_bridge", "ros_wheels_bootstrapper",
]  # fmt: skip

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys, tempfile

    BLOCKED = set(sys.argv[1].split(","))

    class RefuseROS(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"ROS module {name!r} imported by the ROS-free core")
            return None

    sys.meta_path.insert(0, RefuseROS())
    for name in list(sys.modules):
        assert name.split(".")[0] not in BLOCKED, f"{name} was loaded at start-up"

    import fastwam, fastwam_sim, fastwam_training
    for package in (fastwam, fastwam_sim, fastwam_training):
        assert package.__file__.startswith(sys.argv[2]), package.__file__
    modules = []
    for package in (fastwam, fastwam_sim, fastwam_training):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.startswith("fastwam_sim.nodes"):  # the ROS nodes around the simulator
                continue
            importlib.import_module(info.name)
            modules.append(info.name)
    print("imported", len(modules), "modules")

    import numpy as np, torch
    from fastwam.camera import CameraLayout
    from fastwam.checkpoint import create_random_checkpoint
    from fastwam.policy import FastWAMPolicy
    from fastwam.robot import JointGroup, RobotSpec

    robot = RobotSpec("arm", (JointGroup("arm", ("a", "b"), (-1.0, -1.0), (1.0, 1.0), (1.0, 1.0)),), ("arm",), ("arm",))
    layout = CameraLayout.row(("cam",), 32, 64)
    with tempfile.TemporaryDirectory() as tmp:
        create_random_checkpoint(tmp + "/ckpt", "tiny", layout, robot, seed=0)
        policy = FastWAMPolicy.from_pretrained(tmp + "/ckpt")
        out = policy.predict({"cam": np.zeros((48, 64, 3), np.uint8)}, np.zeros(2), "fold the towel")
        assert out.actions.shape == (policy.action_horizon, 2) and np.isfinite(out.actions).all()
    print("predicted", out.actions.shape)
    bad = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
    assert not bad, bad
    print("ROS-FREE OK")
    """
)


@pytest.mark.slow
def test_core_and_training_install_with_pip_and_run_without_ros(tmp_path):
    target = tmp_path / "site"
    for source in (ROOT / "ros2_ws/src/fastwam_policy", ROOT / "ros2_ws/src/fastwam_sim", ROOT / "training"):
        # Build from a copy: setuptools writes build/ and *.egg-info into the source tree.
        package = tmp_path / "src" / source.name
        shutil.copytree(source, package, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        # --no-deps: dependencies come from requirements/python.txt, already in this venv; what is
        # tested here is that the packages themselves build and install without ROS tooling.
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--target", str(target), str(package)],
            check=True, cwd=tmp_path,
        )  # fmt: skip
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AMENT_", "COLCON_", "ROS_", "RMW_", "FASTRTPS", "FASTDDS", "CMAKE_PREFIX"))
    }
    # -S: no site-packages processing, so the ROS wheels' .pth start-up hook never runs; the venv's
    # packages stay importable through PYTHONPATH (the ROS ones are refused by the script).
    site_packages = sysconfig.get_paths()["purelib"]
    env["PYTHONPATH"] = os.pathsep.join([str(target), site_packages])
    env.pop("LD_LIBRARY_PATH", None)
    result = subprocess.run(
        [sys.executable, "-S", "-c", SCRIPT, ",".join(ROS_MODULES), str(target)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ROS-FREE OK" in result.stdout
