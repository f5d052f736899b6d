#!/usr/bin/env bash
# The README's run command: set up (idempotent), then run the towel-folding pipeline in one process
# against the simulated R1 Lite and print what happened. Extra arguments go to the runner
# (python -m fastwam_experiments.run --help).
set -euo pipefail
# shellcheck source=scripts/prepare.sh
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
exec python -m fastwam_experiments.run "$@"
