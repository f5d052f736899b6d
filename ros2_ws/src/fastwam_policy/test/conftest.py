"""pytest set-up of fastwam_policy's tests: the helper modules beside them import by name.

The suite runs in pytest's importlib mode (pyproject.toml: --import-mode=importlib), which leaves
sys.path alone, so helper modules in a test folder are not importable (docs.pytest.org,
explanation/pythonpath.html, "importlib" mode's drawbacks). This folder goes on sys.path here, once,
before its test modules are collected, for `policy_node_harness`, `model_reference`,
`authors_fixture`, `recorder_publishers` and `test_bag`'s recording helpers.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
