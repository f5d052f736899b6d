"""fastwam_policy: the ROS-free `fastwam` core plus the `fastwam_policy` ROS 2 nodes.

Installs the standard ROS way (colcon, ament_python) and also with pip alone, for training
clusters without ROS: `pip install ros2_ws/src/fastwam_policy` gives the `fastwam` package; the
node modules import rclpy only when they run.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "fastwam_policy"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # The robot configs (fastwam.shipped_configs finds them here, under the ament or pip prefix).
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="Fast-WAM developers",
    maintainer_email="dev@fastwam.local",
    description="Fast-WAM world action model and its ROS 2 policy and recorder nodes.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "policy_node = fastwam_policy.policy_node:main",
            "recorder_node = fastwam_policy.recorder_node:main",
            "teleop_keys = fastwam_policy.teleop_keys:main",
            "bag_to_lerobot = fastwam.data.bag:main",
        ],
    },
)
