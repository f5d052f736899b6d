#!/usr/bin/env bash
# The simulation experiment end to end: record scripted demos in the simulated R1 Lite, convert,
# train Fast-WAM and its ablation, evaluate closed-loop against a random-init model, report
# (runs/sim_towel_fold/report.md). Set up first (idempotent). Extra arguments go to the module
# (python -m fastwam_experiments.sim_towel_fold --help).
set -euo pipefail
# shellcheck source=scripts/prepare.sh
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
exec python -m fastwam_experiments.sim_towel_fold "$@"
