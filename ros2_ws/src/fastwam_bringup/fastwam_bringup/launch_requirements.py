"""What the launch files' optional parts need, checked before anything is started.

A launch that starts the policy node and then fails on a missing package (launch_ros resolves a
Node's package only when it executes it) leaves the nodes it started running without a parent
that Ctrl-C reaches; with motion enabled nothing would stop the robot. So every launch file asks
`check_launch_requirements` first, with the arguments' values, and fails with one message naming
each missing package and the launch argument that needs it, before any process exists.

Plain Python (ament_index_python and shutil only): importable and tested without launch installed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

# Keyboard helper modes of record_demos.launch.py (argument `keyboard`).
KEYBOARD_MODES = ("auto", "xterm", "none")
SECOND_TERMINAL = (
    "run the keyboard helper in a second terminal (also over SSH): "
    "ros2 run fastwam_policy teleop_keys --ros-args -p instruction:='fold the towel'"
)


@dataclass(frozen=True)
class Requirement:
    argument: str  # the launch argument that needs it, as the user typed it (e.g. "rviz:=true")
    kind: str  # "package" (ament index) | "executable" (PATH) | "environment" (a variable set)
    name: str
    hint: str  # how to get it

    def describe(self) -> str:
        what = {"package": "the ROS package", "executable": "the program", "environment": "the variable"}[
            self.kind
        ]
        return f"{self.argument} needs {what} {self.name!r}, which is not available: {self.hint}"


def _distro() -> str:
    return os.environ.get("ROS_DISTRO", "<distro>")


def package_installed(name: str) -> bool:
    """Whether the ament index of this environment has the package."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:  # no ROS at all: nothing optional can run
        return False
    try:
        get_package_prefix(name)
    except PackageNotFoundError:
        return False
    return True


def requirements(rviz: bool = False, record: bool = False, keyboard: str = "none") -> list[Requirement]:
    """Everything the chosen optional parts need."""
    apt = f"apt install ros-{_distro()}-"
    out: list[Requirement] = []
    if rviz:
        out += [
            Requirement("rviz:=true", "package", "rviz2", f"{apt}rviz2, or rviz:=false"),
            Requirement(
                "rviz:=true",
                "package",
                "rviz_2d_overlay_plugins",
                f"{apt}rviz-2d-overlay-plugins, or rviz:=false",
            ),
        ]
    if record:
        out += [
            Requirement(
                "record:=true",
                "executable",
                "ros2",
                "source a full ROS 2 install (ros2cli), or record:=false",
            ),
            Requirement(
                "record:=true", "package", "ros2bag", f"{apt}ros2bag (the `ros2 bag` verb), or record:=false"
            ),
            Requirement(
                "record:=true",
                "package",
                "rosbag2_storage_mcap",
                f"{apt}rosbag2-storage-mcap, or record:=false",
            ),
        ]
    if keyboard == "xterm":
        out += [
            Requirement(
                "keyboard:=xterm",
                "executable",
                "xterm",
                f"apt install xterm, or keyboard:=none and {SECOND_TERMINAL}",
            ),
            Requirement(
                "keyboard:=xterm",
                "environment",
                "DISPLAY",
                f"no display (an SSH session?): keyboard:=none and {SECOND_TERMINAL}",
            ),
        ]
    return out


def missing(
    needed: list[Requirement],
    has_package: Callable[[str], bool] = package_installed,
    which: Callable[[str], str | None] = shutil.which,
) -> list[Requirement]:
    checks = {
        "package": has_package,
        "executable": lambda name: which(name) is not None,
        "environment": lambda name: bool(os.environ.get(name)),
    }
    return [r for r in needed if not checks[r.kind](r.name)]


class LaunchRequirementError(RuntimeError):
    """The launch cannot start what its arguments ask for; nothing has been started."""


def check_launch_requirements(rviz: bool = False, record: bool = False, keyboard: str = "none") -> None:
    """Raise LaunchRequirementError naming every missing package and the argument that needs it."""
    absent = missing(requirements(rviz=rviz, record=record, keyboard=keyboard))
    if absent:
        lines = "\n  ".join(r.describe() for r in absent)
        raise LaunchRequirementError(f"nothing was started:\n  {lines}")


def keyboard_mode(value: str) -> str:
    """The keyboard helper's mode: `auto` is xterm where there is a display and xterm, else none
    (the operator runs the helper in a second terminal); true/false as xterm/none (older
    command lines)."""
    value = value.strip().lower()
    value = {"true": "auto", "1": "auto", "false": "none", "0": "none"}.get(value, value)
    if value not in KEYBOARD_MODES:
        raise LaunchRequirementError(
            f"launch argument keyboard must be one of {list(KEYBOARD_MODES)}, got {value!r}"
        )
    if value == "auto":
        return "xterm" if os.environ.get("DISPLAY") and shutil.which("xterm") else "none"
    return value
