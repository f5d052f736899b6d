"""The authors' tiny Fast-WAM fixture (shared/fixtures/authors_fastwam_tiny: a model in their
checkpoint layout and the outputs their code produced), for the tests that check against it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# shared/ lies beside the repository (as in CI); FASTWAM_AUTHORS_FIXTURE points elsewhere.
FIXTURE = Path(
    os.environ.get(
        "FASTWAM_AUTHORS_FIXTURE",
        Path(__file__).resolve().parents[5] / "shared" / "fixtures" / "authors_fastwam_tiny",
    )
)


def require_fixture() -> Path:
    """The fixture's folder. Without it the calling test module is skipped, except in CI, which
    always has shared/: there a missing fixture is a failure, not a skip."""
    if not FIXTURE.is_dir():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"the authors' fixture is missing: {FIXTURE}")
        pytest.skip(
            f"the authors' fixture is not at {FIXTURE} (shared/ beside the repo)", allow_module_level=True
        )
    return FIXTURE
