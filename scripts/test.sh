#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, then the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k camera -x
#
# Fast lane: scripts/test.sh -m "not slow"
#   The same lint, then every test not marked `slow`. Slow is what takes more than ~3 s on 2 cores:
#   a ROS node or a training run started in its own process, the experiment pipeline, a pip install.
#   Every test module is still collected (imported) and every module of the code keeps cheap tests
#   (the nodes: in-process parameter, refusal and topic tests). On a shared 2-core machine pytest
#   took 74 s at load 5 and 114 s at load 6-9 (the whole suite: 8-10 min); run the whole suite (no
#   arguments) before merging.
#   Mark a test with @pytest.mark.slow, or a whole module (`pytestmark = [..., pytest.mark.slow]`)
#   when its cost is a module fixture (a node process) that every test of it shares.
set -euo pipefail
# shellcheck source=scripts/prepare.sh
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"

echo "== ruff (lint + format check, Python 3.10 target)"
ruff check .
ruff format --check .

echo "== pytest"
# CPU threads: tests use tiny models; more threads only add contention on small machines. One
# thread: on 2 cores under load 6-9 the fast lane took 114 s with 1 and 303 s with 2 (OpenMP's
# spinning workers fight the other processes); the whole suite passes with 1.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
set +e
python -m pytest "$@"
status=$?
set -e
if [[ $status == 5 ]]; then
  echo "pytest collected no tests: the suite is missing" >&2
  exit 1
fi
exit $status
