"""fastwam_sim: the simulated Galaxea R1 Lite, ROS-free (`fastwam_sim`) and as ROS 2 nodes (`fastwam_sim.nodes`).

Installs the standard ROS way (colcon, ament_python) and also with pip alone, for training
clusters without ROS (the training side's closed-loop rollouts use the ROS-free simulator):
`pip install ros2_ws/src/fastwam_sim`. Only `fastwam_sim.nodes` imports rclpy.
"""

from setuptools import find_packages, setup

PACKAGE = "fastwam_sim"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    python_requires=">=3.10",
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="Fast-WAM developers",
    maintainer_email="dev@fastwam.local",
    description="Simulated Galaxea R1 Lite folding a towel: the ROS-free simulator, the simulated-robot node.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sim_robot_node = fastwam_sim.nodes.sim_robot:main",
            "scripted_teleop_node = fastwam_sim.nodes.scripted_teleop:main",
        ],
    },
)
