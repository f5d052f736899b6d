"""fastwam_bringup: launch files, DDS profile and RViz config, installed as data."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "fastwam_bringup"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    python_requires=">=3.10",
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="Fast-WAM developers",
    maintainer_email="dev@fastwam.local",
    description="Launch files and configuration for Fast-WAM on the Galaxea R1 Lite.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "fastwam_run = fastwam_bringup.run:main",
        ],
    },
)
