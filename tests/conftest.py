"""pytest set-up of the system tests: they share fastwam_policy's ROS test session helpers
(ros2_ws/src/fastwam_policy/test/ros_session.py), importable by name once that folder is on sys.path
(the suite runs in importlib mode, which leaves sys.path alone)."""

from __future__ import annotations

import sys
from pathlib import Path

POLICY_TESTS = str(Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "fastwam_policy" / "test")
if POLICY_TESTS not in sys.path:
    sys.path.insert(0, POLICY_TESTS)
