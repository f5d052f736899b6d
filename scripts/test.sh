#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, then the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k camera -x
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
# shellcheck source=/dev/null
source "$ROOT/scripts/env.sh"
cd "$ROOT"

echo "== ruff (lint + format check, Python 3.10 target)"
ruff check .
ruff format --check .

echo "== pytest"
# CPU threads: tests use tiny models; more threads only add contention on small machines.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
set +e
python -m pytest "$@"
status=$?
set -e
if [[ $status == 5 ]]; then
  echo "pytest collected no tests: the suite is missing" >&2
  exit 1
fi
exit $status
