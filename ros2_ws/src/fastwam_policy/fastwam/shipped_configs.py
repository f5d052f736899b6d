"""The robot configs shipped with the project, and the one lookup every node and tool uses for them.

The configs (`r1_lite.yaml`, the robot; `r1_lite_sim.yaml`, the simulation experiment's smaller
composite) live in the `fastwam_policy` package, the one every node and the ROS-free core already
depend on, so that no package below `fastwam_bringup` has to reach up into it for a default. They
are found, in this order:

- installed by colcon / a ROS install: `<prefix>/share/fastwam_policy/config` (ament index);
- installed by pip alone (setup.py's data_files): `<sys.prefix>/share/fastwam_policy/config`;
- a source checkout: `ros2_ws/src/fastwam_policy/config` beside this package.

The ament index is only consulted when `ament_index_python` is importable: the core stays ROS-free.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

CONFIG_PACKAGE = "fastwam_policy"  # the ROS package whose share directory holds config/
ROBOT_CONFIG = "r1_lite.yaml"  # the robot's: every node's default
SIM_CONFIG = "r1_lite_sim.yaml"  # the simulation experiment's (192x160 composite)
# <checkout>/ros2_ws/src/fastwam_policy/fastwam/shipped_configs.py -> <checkout>/ros2_ws/src/fastwam_policy/config
_SOURCE_DIR = Path(__file__).resolve().parents[1] / "config"


def shipped_config_dirs() -> list[Path]:
    """The directories that hold the shipped configs, installed ones first; only those that exist."""
    dirs = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:  # a pip-only install: no ament index
        pass
    else:
        with contextlib.suppress(PackageNotFoundError):
            dirs.append(Path(get_package_share_directory(CONFIG_PACKAGE)) / "config")
    dirs.append(Path(sys.prefix) / "share" / CONFIG_PACKAGE / "config")
    dirs.append(_SOURCE_DIR)
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def shipped_config(name: str = ROBOT_CONFIG) -> Path:
    """The path of the shipped config `name` (e.g. r1_lite.yaml); FileNotFoundError names the
    directories searched when no copy is found."""
    dirs = shipped_config_dirs()
    for directory in dirs:
        path = directory / name
        if path.is_file():
            return path
    searched = ", ".join(str(d) for d in dirs) or f"none of the {CONFIG_PACKAGE} config directories exists"
    raise FileNotFoundError(f"shipped robot config {name!r} not found (searched: {searched})")


def default_robot_config() -> str:
    """The robot's config (r1_lite.yaml), every node's `robot_config` default."""
    return str(shipped_config(ROBOT_CONFIG))
