#!/usr/bin/env bash
# Idempotent set-up for a machine without a system ROS install: a virtual environment with
# pinned dependencies (ROS 2 Jazzy from PyPI wheels, the CPU build of torch unless a CUDA torch is
# already installed), then a colcon build of ros2_ws. Each stage is skipped when the inputs it
# depends on have not changed since it last succeeded, so a repeated run takes seconds.
#
# Used by scripts/run.sh and scripts/test.sh; run it alone to set up without running anything.
# Environment knobs:
#   PYTHON                 interpreter for the venv (default python3; 3.10 to 3.12)
#   FASTWAM_VENV           venv location (default <repo>/.venv)
#   FASTWAM_TORCH_INDEX    extra pip index for the torch CPU build where the default index would
#                          give a CUDA build (e.g. https://download.pytorch.org/whl/cpu)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FASTWAM_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
STAMPS="$VENV/.fastwam-stamps"

log() { printf '[bootstrap] %s\n' "$*" >&2; }
# pip warns once per package about configured local index mirrors that lack it; keep real errors.
quiet_pip() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
fingerprint() { cat "$@" | sha256sum | cut -d' ' -f1; }
stage_done() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
mark_done() { mkdir -p "$STAMPS"; printf '%s' "$2" >"$STAMPS/$1"; }

"$PYTHON" - <<'PY' || { log "Python 3.10 to 3.12 is required (set PYTHON=...)"; exit 1; }
import sys
sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)
PY

# A CUDA build of torch already installed for $PYTHON is used as is (the venv sees it through
# --system-site-packages); otherwise the venv gets the pinned CPU build.
system_cuda_torch=0
if "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
  system_cuda_torch=1
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV"
  if [[ $system_cuda_torch == 1 ]]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

key="$(fingerprint "$ROOT/requirements/"*.txt "$ROOT/scripts/bootstrap.sh")"
if ! stage_done pip "$key"; then
  log "installing pinned dependencies"
  quiet_pip install -q --upgrade "pip>=24" "setuptools<80" wheel
  if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    torch_args=()
    [[ -n "${FASTWAM_TORCH_INDEX:-}" ]] && torch_args=(--extra-index-url "$FASTWAM_TORCH_INDEX")
    quiet_pip install -q "torch==$TORCH_VERSION" "${torch_args[@]}"
  fi
  quiet_pip install -q -r "$ROOT/requirements/ros-jazzy.txt" -r "$ROOT/requirements/python.txt" \
    -r "$ROOT/requirements/dev.txt"
  mark_done pip "$key"
fi

# The message wheels' CMake export files name the wheel builder's Python and numpy include
# directories; an interface package built here must compile against the local ones instead.
"$VENV/bin/python" "$ROOT/scripts/fix_ros_cmake_exports.py" "$VENV"

key="$(cd "$ROOT" && find ros2_ws/src -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if ! stage_done colcon "$key" || [[ ! -f "$ROOT/ros2_ws/install/setup.bash" ]]; then
  log "colcon build"
  mkdir -p "$ROOT/ros2_ws/log"
  (
    # shellcheck source=/dev/null
    source "$VENV/bin/activate"
    export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
    export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    cd "$ROOT/ros2_ws"
    colcon --log-base log build --symlink-install --event-handlers console_direct- \
      --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
      >"$ROOT/ros2_ws/log/last_build.txt" 2>&1 || {
        tail -n 60 "$ROOT/ros2_ws/log/last_build.txt" >&2
        log "colcon build failed; full log: ros2_ws/log/last_build.txt"
        exit 1
      }
  )
  mark_done colcon "$key"
fi
log "ready"
