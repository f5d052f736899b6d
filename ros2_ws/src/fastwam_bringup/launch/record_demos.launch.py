"""Record teleoperated demonstrations: the recorder and the keyboard helper (+ a scripted sim).

    ros2 launch fastwam_bringup record_demos.launch.py                       # real robot, human teleop
    ros2 launch fastwam_bringup record_demos.launch.py use_sim:=true episodes:=30   # scripted demos

With use_sim:=true the simulated R1 Lite's scripted teleoperator performs the fold and drives the
recorder's services itself (one labelled episode per towel start pose, seeds seed, seed + 1, ...).

The keyboard helper (teleop_keys: s start, y/n save, d d discard, i instruction, q quit) reads
keys from a terminal, which launch does not give its processes. keyboard:=auto (default) opens
it in an xterm where there is a display and xterm; otherwise (an SSH session) the launch says to
run it in a second terminal, where it works over SSH too:
    ros2 run fastwam_policy teleop_keys --ros-args -p instruction:="fold the towel"
keyboard:=xterm insists on the xterm (the launch fails, starting nothing, without xterm or a
display); keyboard:=none never starts it. When the recorder, the simulated robot or the xterm
helper exits (q), the whole launch shuts down.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    LogInfo,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch_ros.actions import Node

from fastwam.shipped_configs import default_robot_config
from fastwam_bringup.launch_actions import flag, required
from fastwam_bringup.launch_requirements import SECOND_TERMINAL, check_launch_requirements, keyboard_mode

ARGUMENTS = {
    "robot_config": ("", "robot config YAML (default: the shipped r1_lite.yaml, fastwam_policy/config)"),
    "output_dir": ("~/fastwam_episodes", "where episode bags are written"),
    "instruction": ("fold the towel", "instruction stored with each episode"),
    "convert_dataset": ("", "also convert each saved episode into this LeRobot dataset directory"),
    "use_sim": ("false", "simulated R1 Lite with its scripted teleoperator instead of the robot"),
    "episodes": ("20", "scripted episodes to record (use_sim:=true)"),
    "seed": ("0", "first towel start pose seed (use_sim:=true)"),
    "keyboard": (
        "auto",
        "keyboard helper (teleop_keys): auto (an xterm where there is a display, else a second terminal), "
        "xterm, or none",
    ),
}


def launch_setup(context, *args, **kwargs):
    """The actions for the given argument values. Raises LaunchRequirementError, before any action
    exists, when the keyboard helper cannot run as asked."""
    keyboard = keyboard_mode(context.launch_configurations["keyboard"])
    check_launch_requirements(keyboard=keyboard)
    share = get_package_share_directory("fastwam_bringup")
    config_path = context.launch_configurations["robot_config"] or default_robot_config()
    dds_profile = os.path.join(share, "config", "fastdds_shm.xml")
    instruction = context.launch_configurations["instruction"]
    actions = [
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", dds_profile),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", dds_profile),
        *required(
            Node(
                package="fastwam_policy",
                executable="recorder_node",
                name="recorder",
                output="screen",
                parameters=[
                    {
                        "robot_config": config_path,
                        "output_dir": context.launch_configurations["output_dir"],
                        "default_instruction": instruction,
                        "convert_dataset": context.launch_configurations["convert_dataset"],
                    }
                ],
            )
        ),
    ]
    if flag(context, "use_sim"):
        actions += required(
            Node(
                package="fastwam_sim",
                executable="sim_robot_node",
                name="sim_robot",
                output="screen",
                parameters=[
                    {"robot_config": config_path, "seed": int(context.launch_configurations["seed"])}
                ],
            )
        )
        # The operator: the scripted teleoperator, recording each episode through the recorder.
        actions += required(
            Node(
                package="fastwam_sim",
                executable="scripted_teleop_node",
                name="scripted_teleop",
                output="screen",
                parameters=[
                    {
                        "robot_config": config_path,
                        "episodes": int(context.launch_configurations["episodes"]),
                        "seed": int(context.launch_configurations["seed"]),
                        "recorder": "/recorder",
                        "instruction": instruction,
                    }
                ],
            )
        )
    if keyboard == "xterm":
        actions += required(
            Node(
                package="fastwam_policy",
                executable="teleop_keys",
                name="teleop_keys",
                output="screen",
                emulate_tty=True,
                prefix="xterm -e",  # it reads keys from a terminal; launch gives nodes none
                parameters=[{"instruction": instruction, "recorder": "/recorder"}],
            )
        )
    elif not flag(context, "use_sim"):  # a human operator needs the keys somewhere
        actions.append(LogInfo(msg=f"no keyboard helper in this launch: {SECOND_TERMINAL}"))
    return actions


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=launch_setup)])
