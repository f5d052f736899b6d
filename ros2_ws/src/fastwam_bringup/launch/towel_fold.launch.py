"""Fast-WAM towel folding: the policy node, optionally the simulated R1 Lite, recorder, bag and RViz.

    ros2 launch fastwam_bringup towel_fold.launch.py checkpoint:=/ckpt use_sim:=true dry_run:=false

dry_run is true by default: the policy predicts and publishes for monitoring but commands nothing
until motion is enabled (dry_run:=false, or the ~/set_motion_enabled service).

Nothing is left behind: the optional parts' packages (rviz2 and rviz_2d_overlay_plugins for
rviz:=true; ros2 bag with its MCAP storage for record:=true) are checked before any process is
started, and the launch fails naming what is missing and the argument that needs it; when the
policy node, the simulated robot, the recorder or the bag recorder exits, the whole launch shuts
down (RViz may be closed on its own).

A checkpoint for wiring tests in seconds (random weights, nothing folds):
    python -m fastwam.random_checkpoint /tmp/fastwam_random --robot-config <this robot config>
"""

from __future__ import annotations

import os
import time

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch_ros.actions import Node

from fastwam.robot_config import load_robot_config
from fastwam.shipped_configs import default_robot_config
from fastwam_bringup.launch_actions import flag, required
from fastwam_bringup.launch_requirements import check_launch_requirements

ARGUMENTS = {
    "checkpoint": ("", "Fast-WAM checkpoint directory"),
    "instruction": ("fold the towel", "language instruction"),
    "robot_config": ("", "robot config YAML (default: the shipped r1_lite.yaml, fastwam_policy/config)"),
    "use_sim": ("false", "start the simulated R1 Lite instead of talking to the robot"),
    "dry_run": ("true", "predict and monitor only; command no motion"),
    "record": ("false", "start the demonstration recorder and a ros2 bag (MCAP) of the configured topics"),
    "rviz": ("false", "start RViz with rviz/fastwam.rviz"),
    "device": ("auto", "torch device (auto, cpu, cuda, cuda:N)"),
    "dtype": ("auto", "inference dtype (auto, float32, bfloat16, float16)"),
    "compile": ("auto", "inference graphs (auto, none, cudagraph, torch_compile)"),
    "execution": (
        "blend",
        "how a new chunk joins the executing one: blend (cross-fade) or rtc (real-time chunking)",
    ),
    "bag_dir": ("~/fastwam_bags", "where ros2 bag record writes (record:=true)"),
    "output_dir": ("~/fastwam_episodes", "where the recorder node writes its episode bags (record:=true)"),
    "seed": ("0", "towel start pose seed of the simulated robot (use_sim:=true)"),
}


def launch_setup(context, *args, **kwargs):
    """The actions for the given argument values (OpaqueFunction, so tests can call it directly).
    Raises LaunchRequirementError, before any action exists, when an optional part cannot run."""
    check_launch_requirements(rviz=flag(context, "rviz"), record=flag(context, "record"))
    share = get_package_share_directory("fastwam_bringup")
    config_path = context.launch_configurations["robot_config"] or default_robot_config()
    dds_profile = os.path.join(share, "config", "fastdds_shm.xml")
    rviz_config = os.path.join(share, "rviz", "fastwam.rviz")
    instruction = context.launch_configurations["instruction"]
    actions = [
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", dds_profile),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", dds_profile),
        *required(
            Node(
                package="fastwam_policy",
                executable="policy_node",
                name="fastwam_policy",
                output="screen",
                parameters=[
                    {
                        "checkpoint": context.launch_configurations["checkpoint"],
                        "robot_config": config_path,
                        "instruction": instruction,
                        "motion_enabled": not flag(context, "dry_run"),
                        "device": context.launch_configurations["device"],
                        "dtype": context.launch_configurations["dtype"],
                        "compile": context.launch_configurations["compile"],
                        "execution": context.launch_configurations["execution"],
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
    if flag(context, "record"):
        actions += required(
            Node(
                package="fastwam_policy",
                executable="recorder_node",
                name="recorder",
                output="screen",
                parameters=[
                    {
                        "robot_config": config_path,
                        "default_instruction": instruction,
                        "output_dir": context.launch_configurations["output_dir"],
                    }
                ],
            )
        )
        config = load_robot_config(config_path)
        topics = [c.topic for c in config.topics.cameras.values()]
        topics += list(config.topics.feedback.values()) + list(config.topics.command.values())
        topics += ["/fastwam_policy/action_chunk", "/fastwam_policy/status", "/sim_robot/episode"]
        bag = os.path.join(
            os.path.expanduser(context.launch_configurations["bag_dir"]),
            time.strftime("towel_fold_%Y%m%d_%H%M%S"),
        )
        actions += required(
            ExecuteProcess(cmd=["ros2", "bag", "record", "-s", "mcap", "-o", bag, *topics], output="screen")
        )
    if flag(context, "rviz"):
        actions += [
            Node(package="rviz2", executable="rviz2", name="rviz", arguments=["-d", rviz_config]),
            # RViz shows text only as an overlay message: convert the policy's ~/status_text.
            Node(
                package="rviz_2d_overlay_plugins",
                executable="string_to_overlay_text",
                name="status_overlay",
                parameters=[{"string_topic": "/fastwam_policy/status_text", "fg_color": "w"}],
            ),
        ]
    return actions


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=launch_setup)])
