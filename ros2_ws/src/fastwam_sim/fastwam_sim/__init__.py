"""A simulated Galaxea R1 Lite folding a towel: ROS-free, numpy/OpenCV only, deterministic per seed.

`TowelFoldEnv` holds the scene (two arms, a towel with a randomized start pose), follows joint
position commands the way the robot's /motion_target topics do, renders the three camera views
and reports task success. `ScriptedFolder` is a scripted teleoperator that performs the fold.
The ROS node (fastwam_sim.nodes.sim_robot) and offline evaluation both drive this one class.
"""

from __future__ import annotations

from fastwam_sim.env import SimParams, TowelFoldEnv
from fastwam_sim.kinematics import ArmKinematics
from fastwam_sim.teleop import ScriptedFolder
from fastwam_sim.towel import Towel, TowelPose

__all__ = ["ArmKinematics", "ScriptedFolder", "SimParams", "Towel", "TowelFoldEnv", "TowelPose"]
