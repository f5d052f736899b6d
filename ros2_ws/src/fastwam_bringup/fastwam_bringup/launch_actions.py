"""Building blocks of the launch files (towel_fold, record_demos). It imports ``launch``, so only
launch files import it; the checks that must run without launch are in ``launch_requirements``."""

from __future__ import annotations

from launch.actions import RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit


def flag(context, name: str) -> bool:
    """A true/false launch argument (true, false, 1, 0); anything else is an error naming it."""
    value = context.launch_configurations[name].strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"launch argument {name} must be true or false, got {value!r}")
    return value in ("true", "1")


def required(action):
    """[action, the handler that shuts the whole launch down when its process exits]: nothing this
    launch started keeps running (or commanding the robot) after a required part has died."""
    return [
        action,
        RegisterEventHandler(
            OnProcessExit(
                target_action=action,
                on_exit=[
                    Shutdown(reason="a required process exited; stopping everything this launch started")
                ],
            )
        ),
    ]
