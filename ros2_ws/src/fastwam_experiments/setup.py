"""fastwam_experiments: the simulation experiment (record, convert, train, evaluate, report) and the
runner's first use, which runs that experiment's Fast-WAM (produced on first use)."""

from setuptools import find_packages, setup

PACKAGE = "fastwam_experiments"

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
    description="Fast-WAM experiments: towel folding in the simulated R1 Lite, end to end.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "fastwam_run = fastwam_experiments.run:main",
            "sim_towel_fold = fastwam_experiments.sim_towel_fold:main",
        ],
    },
)
