"""One recorder client: only fastwam_policy.recorder_client calls the recorder's services.

Its behaviour is tested where it is used, against a real recorder node: the keyboard helper's
commands in test_recorder_node.py, the scripted teleoperator's recordings (a late recorder, none at
all) in fastwam_sim's test_sim_node.py, the runner's in test_runner.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]  # ros2_ws/src
OWNER = SRC / "fastwam_policy" / "fastwam_policy" / "recorder_client.py"


def _service_clients(path: Path) -> list[int]:
    """Lines where `path` creates a client of StartEpisode or StopEpisode."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "create_client"
            and node.args
            and getattr(node.args[0], "id", "") in ("StartEpisode", "StopEpisode")
        ):
            lines.append(node.lineno)
    return lines


def test_only_the_recorder_client_creates_recorder_service_clients():
    assert len(_service_clients(OWNER)) == 2  # start and stop
    others = {
        str(path.relative_to(SRC)): found
        for path in sorted(SRC.rglob("*.py"))
        if path != OWNER and "test" not in path.parts and (found := _service_clients(path))
    }
    assert not others, f"recorder service clients outside recorder_client.py: {others}"
