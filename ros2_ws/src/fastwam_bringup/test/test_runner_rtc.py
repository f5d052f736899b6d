"""The single-process runner with real-time chunking: `--execution rtc` reaches the policy node,
which predicts guided chunks from the simulated robot and commands them."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("fastwam_msgs.srv", reason="fastwam_msgs is not built (scripts/bootstrap.sh)")

from fastwam_bringup.run import parse_args, run

pytestmark = pytest.mark.ros
CONFIG = Path(__file__).resolve().parents[2] / "fastwam_policy" / "config" / "r1_lite.yaml"


@pytest.mark.slow
def test_runner_drives_the_simulated_robot_with_rtc(capsys):
    argv = ["--robot-config", str(CONFIG), "--checkpoint", "random", "--duration", "20", "--seed", "3"]
    code = run(parse_args([*argv, "--execution", "rtc"]))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "execution rtc" in out
    line = next(x for x in out.splitlines() if "[run]   policy:" in x)
    # Several chunks: every one after the first is sampled against the plan it replaces.
    assert int(line.split()[2]) >= 2, out
    assert "ERROR" not in line, out


def test_runner_refuses_an_unknown_execution_mode():
    with pytest.raises(SystemExit):
        parse_args(["--execution", "crossfade"])
