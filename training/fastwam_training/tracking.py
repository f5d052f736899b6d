"""A JSON-lines experiment tracker for accelerate: one object per logged step, appended to a file.

Readable without TensorBoard (``jq``, pandas, a script polling a run's progress, as
``fastwam_experiments.sim_towel_fold`` does for runs trained side by side). Resumed runs append.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from accelerate.tracking import GeneralTracker

METRICS_FILE = "metrics.jsonl"


class JsonlTracker(GeneralTracker):
    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self._file = None

    @property
    def tracker(self):
        return self._file

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def store_init_configuration(self, values: dict) -> None:
        pass  # the run's config.yaml holds the configuration

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        if self._file is None:
            self.start()
        row = {"step": step, "time": time.time()}
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)  # JSON has no NaN / inf: keep them readable rather than invalid
            row[key] = value
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(path: str | os.PathLike[str]) -> list[dict]:
    """The rows of a metrics file; a last line cut short by a writer still running is left out."""
    rows = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
