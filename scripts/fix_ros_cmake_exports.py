"""Point the ROS message wheels' CMake export files at this machine's Python and numpy headers.

The wheels were built elsewhere, and their ``share/<pkg>/cmake/*Export.cmake`` files carry the
builder's include directories (e.g. ``/opt/python/cp311-cp311/include/python3.11``). colcon can only
build an interface package such as fastwam_msgs against them once those paths name local
directories. Idempotent: paths that already exist are left alone.

Usage: python fix_ros_cmake_exports.py <prefix>
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

PYTHON_INCLUDE = re.compile(r"[^\";]*/include/python3\.\d+")
NUMPY_INCLUDE = re.compile(r"[^\";]*/site-packages/numpy/(?:_core|core)/include")


def fix_exports(prefix: Path) -> int:
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for path in sorted(prefix.glob("share/*/cmake/*Export*.cmake")):
        text = path.read_text()

        def local(match: re.Match[str], replacement: str) -> str:
            return match.group(0) if Path(match.group(0)).is_dir() else replacement

        new = PYTHON_INCLUDE.sub(lambda m: local(m, python_include), text)
        new = NUMPY_INCLUDE.sub(lambda m: local(m, numpy_include), new)
        if new != text:
            path.write_text(new)
            changed += 1
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    count = fix_exports(Path(sys.argv[1]))
    if count:
        print(f"[bootstrap] rewrote include paths in {count} CMake export files", file=sys.stderr)
